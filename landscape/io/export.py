"""Slices for other tools (``landscape slice --export vtk|csv``), written atomically beside the
HDF5 file, from the plain dict a slice file holds (as the figures read it).

VTK, in the documented XML format that ParaView and VisIt read (no extra package):

- a 2-D slice is a structured grid ``.vts``: points ``(α, β, train loss)`` (the surface, as in
  Li et al.'s ``h52vtp``), every value of the file as point data (non-finite values replaced by
  the largest finite one, with a ``finite`` mask array beside them);
- a 1-D slice or interpolation is a poly line ``.vtp`` through ``(α, train loss, 0)``;
- the trajectories drawn on a PCA plane are poly lines ``-paths.vtp``, one cell per run, lifted
  onto the surface (the train loss bilinearly interpolated at each point) with the step index as
  point data.

CSV: ``.csv`` with one row per grid point (``alpha[,beta]`` and every value) and, with
trajectories, ``-paths.csv`` (``run, label, alpha, beta``)."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np

from ..errors import ConfigError
from .atomic import atomic_path

FORMATS = ("vtk", "csv")


def _arr(x) -> np.ndarray:
    return np.asarray(x, dtype=np.float64)


def _write_text(path: Path, text: str) -> Path:
    with atomic_path(path, suffix=path.suffix) as tmp:
        tmp.write_text(text)
    return path


def _finite(v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    ok = np.isfinite(v)
    fill = float(v[ok].max()) if ok.any() else 0.0
    return np.where(ok, v, fill), ok


def _data_array(name: str, v: np.ndarray, kind: str = "Float64", components: int = 1) -> str:
    body = " ".join(repr(float(x)) if kind == "Float64" else str(int(x)) for x in v.ravel())
    comp = f' NumberOfComponents="{components}"' if components > 1 else ""
    label = f' Name="{name}"' if name else ""
    return f'<DataArray type="{kind}"{label}{comp} format="ascii">{body}</DataArray>'


def _point_data(values: dict[str, np.ndarray]) -> str:
    arrays = []
    mask = np.ones(next(iter(values.values())).shape, dtype=bool)
    for name, v in values.items():
        filled, ok = _finite(v)
        mask &= ok
        arrays.append(_data_array(name, filled))
    arrays.append(_data_array("finite", mask.astype(np.uint8), "UInt8"))
    first = next(iter(values))
    return f'<PointData Scalars="{first}">' + "".join(arrays) + "</PointData>"


def _vtk(kind: str, body: str) -> str:
    return ('<?xml version="1.0"?>\n'
            f'<VTKFile type="{kind}" version="0.1" byte_order="LittleEndian">\n'
            f"{body}\n</VTKFile>\n")


def _polylines(points: np.ndarray, segments: list[slice], point_data: dict) -> str:
    """A PolyData piece of poly lines: ``points [N, 3]``, one line per segment of rows."""
    conn = np.concatenate([np.arange(s.start, s.stop) for s in segments])
    offsets = np.cumsum([s.stop - s.start for s in segments])
    return (f'<PolyData><Piece NumberOfPoints="{len(points)}" NumberOfVerts="0" '
            f'NumberOfLines="{len(segments)}" NumberOfStrips="0" NumberOfPolys="0">'
            + _point_data(point_data)
            + "<Points>" + _data_array("", points, components=3) + "</Points>"
            + "<Lines>" + _data_array("connectivity", conn, "Int64")
            + _data_array("offsets", offsets, "Int64") + "</Lines>"
            + "</Piece></PolyData>")


def _grid_values(data: dict) -> dict[str, np.ndarray]:
    values = {k: _arr(v) for k, v in (data.get("values") or {}).items()}
    if not values:
        raise ConfigError("the slice holds no values to export", "export a landscape slice file")
    return values


def _surface(data: dict, values: dict[str, np.ndarray]) -> np.ndarray:
    key = "train_loss" if "train_loss" in values else next(iter(values))
    return _finite(values[key])[0]


def _paths(data: dict) -> list[tuple[str, slice]]:
    from .slice_figures import paths

    coords = (data.get("trajectory") or {}).get("coords")
    if coords is None or (data.get("directions") or {}).get("kind") != "pca":
        return []
    return paths(data)


def _lift(data: dict, coords: np.ndarray, z: np.ndarray) -> np.ndarray:
    """The surface height at trajectory points (bilinear; clamped to the grid)."""
    from scipy.interpolate import RegularGridInterpolator

    a, b = _arr(data["grid"]["alpha"]), _arr(data["grid"]["beta"])
    pts = np.stack([np.clip(coords[:, 0], a[0], a[-1]), np.clip(coords[:, 1], b[0], b[-1])], 1)
    return RegularGridInterpolator((a, b), z)(pts)


def export_vtk(data: dict, base: Path) -> list[Path]:
    """``base.vts`` (2-D) or ``base.vtp`` (1-D), and ``base-paths.vtp`` for trajectories."""
    values = _grid_values(data)
    a = _arr(data["grid"]["alpha"])
    z = _surface(data, values)
    written = []
    if "beta" not in data["grid"]:
        pts = np.stack([a, z, np.zeros_like(a)], 1)
        written.append(_write_text(base.with_suffix(".vtp"), _vtk(
            "PolyData", _polylines(pts, [slice(0, len(a))], values))))
        return written
    b = _arr(data["grid"]["beta"])
    A, Bm = np.meshgrid(a, b, indexing="ij")  # values are [alpha, beta]

    def order(v: np.ndarray) -> np.ndarray:  # VTK's x (alpha) varies fastest
        return v.T.ravel()

    pts = np.stack([order(A), order(Bm), order(z)], 1)
    extent = f"0 {len(a) - 1} 0 {len(b) - 1} 0 0"
    body = (f'<StructuredGrid WholeExtent="{extent}"><Piece Extent="{extent}">'
            + _point_data({k: order(v) for k, v in values.items()})
            + "<Points>" + _data_array("", pts, components=3) + "</Points>"
            + "</Piece></StructuredGrid>")
    written.append(_write_text(base.with_suffix(".vts"), _vtk("StructuredGrid", body)))
    runs = _paths(data)
    if runs:
        c = _arr(data["trajectory"]["coords"]).reshape(-1, 2)
        pts = np.stack([c[:, 0], c[:, 1], _lift(data, c, z)], 1)
        step = np.concatenate([np.arange(r.stop - r.start) for _, r in runs]).astype(float)
        run_id = np.concatenate([np.full(r.stop - r.start, i) for i, (_, r) in enumerate(runs)])
        written.append(_write_text(base.with_name(base.name + "-paths.vtp"), _vtk(
            "PolyData", _polylines(pts, [r for _, r in runs],
                                   {"step": step, "run": run_id.astype(float)}))))
    return written


def export_csv(data: dict, base: Path) -> list[Path]:
    """``base.csv``: one row per grid point; ``base-paths.csv`` for trajectories."""
    values = _grid_values(data)
    axes = [k for k in ("alpha", "beta") if k in data["grid"]]
    grids = np.meshgrid(*[_arr(data["grid"][k]) for k in axes], indexing="ij")
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(axes + list(values))
    cols = [g.ravel() for g in grids] + [v.ravel() for v in values.values()]
    for row in zip(*cols):
        w.writerow([repr(float(x)) for x in row])
    written = [_write_text(base.with_suffix(".csv"), out.getvalue())]
    runs = _paths(data)
    if runs:
        c = _arr(data["trajectory"]["coords"]).reshape(-1, 2)
        labels = list((data.get("trajectory") or {}).get("labels") or [])
        out = io.StringIO()
        w = csv.writer(out, lineterminator="\n")
        w.writerow(["run", "label", "alpha", "beta"])
        for name, rows in runs:
            for i in range(rows.start, rows.stop):
                w.writerow([name, labels[i] if i < len(labels) else i, repr(float(c[i, 0])),
                            repr(float(c[i, 1]))])
        written.append(_write_text(base.with_name(base.name + "-paths.csv"), out.getvalue()))
    return written


def export(data: dict, base: str | Path, formats: list[str]) -> list[Path]:
    """Write ``data`` (a slice file's dict) in each of ``formats`` (vtk, csv) beside ``base``
    (its suffix replaced)."""
    base = Path(base).with_suffix("")
    for f in formats:
        if f not in FORMATS:
            raise ConfigError(f"unknown --export format {f!r}", f"choose {' or '.join(FORMATS)}")
    written = []
    for f in formats:
        written += export_vtk(data, base) if f == "vtk" else export_csv(data, base)
    return written




def check_requests(export: str | list[str] | None, animate: Path | None, out: Path | None,
                   dims: int, directions: str) -> list[str]:
    """The ``--export`` formats of a slice, checked with ``--animate`` before anything is
    computed (one ConfigError naming the fix)."""
    from ..schema import names

    formats = names(export, FORMATS, "--export format")
    if formats and out is None:
        raise ConfigError("--export writes beside the HDF5 file", "add --out SLICE.h5")
    if animate is not None:
        if dims != 2 or directions != "pca":
            raise ConfigError("--animate draws the runs' paths on a 2-D PCA plane",
                              "add --dims 2 --directions pca --trajectory RUN[,RUN...]")
        if animate.suffix.lower() not in (".gif", ".mp4"):
            raise ConfigError(f"--animate writes .gif or .mp4, not {animate.name}",
                              "name the file paths.gif or paths.mp4")
        from matplotlib import animation

        if animate.suffix.lower() == ".mp4" and not animation.writers.is_available("ffmpeg"):
            raise ConfigError("--animate .mp4 needs ffmpeg, which is not installed",
                              "install ffmpeg, or write a .gif (Pillow, always there)")
    return formats


def write_requests(data: dict, formats: list[str], animate: Path | None,
                   out: Path | None) -> list[Path]:
    """Write what :func:`check_requests` accepted: the exports beside ``out`` and the animation."""
    written = export(data, out, formats) if formats else []
    if animate is not None:
        from .slice_figures import animate_paths

        written.append(animate_paths(data, animate))
    return written


__all__ = ["FORMATS", "check_requests", "export", "export_csv", "export_vtk", "write_requests"]
