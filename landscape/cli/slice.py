"""``landscape slice``: loss and accuracy on a 1-D or 2-D slice through a checkpoint
(Li et al. 2018): random filter-normalised, Hessian-eigenvector, trajectory-PCA or checkpoint
directions; HDF5 and figures."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer

from ..schema import names
from ..slices.settings import SLICE, check_slice
from . import output
from .common import Outputs, ProblemSpec, Stopwatch, header, measuring
from .options import CheckpointArg, names_option, path_option


def build_problems(checkpoint: Path, spec: ProblemSpec, *, test: bool, params: bool = True):
    """The checkpoint and ``{"train": Problem[, "test": Problem]}`` (test where the data have
    one)."""
    ckpt = spec.checkpoint(checkpoint)
    problems = {"train": spec.problem(ckpt, "train", params=params)}
    if test and ckpt.dataset().test is not None:
        problems["test"] = spec.problem(ckpt, "test", params=params)
    return ckpt, problems


def summary_rows(values: dict, origin: dict | None) -> list[tuple]:
    import numpy as np

    rows = []
    for key, arr in values.items():
        a = np.asarray(arr, dtype=float)
        fin = a[np.isfinite(a)]
        at0 = (origin or {}).get(key)
        rows.append((key.replace("_", " "), "-" if at0 is None else f"{at0:.6g}",
                     f"{fin.min():.6g}" if fin.size else "nan",
                     f"{fin.max():.6g}" if fin.size else "nan"))
    return rows


def emit(report: dict, tree: dict, attrs: dict, *, io: Outputs, kind: str, title: str,
         columns: list[str], rows: list[tuple], caption: str,
         also: Callable[[dict], list] | None = None) -> None:
    """Write the HDF5 file and the figure (and what ``also(data)`` writes: exports), then print
    the table or the JSON object."""
    if io.out is not None:
        from ..io.hdf5 import write_tree

        write_tree(io.out, tree, attrs=attrs)
    if io.plot is not None:
        from ..io.slice_figures import save, slice_figure

        save(slice_figure({**attrs, **tree}, kind), io.plot)
    extra = also({**attrs, **tree}) if also is not None else []
    if io.json:
        output.emit_json({**report, **({"exported": [str(p) for p in extra]} if extra else {})})
        return
    output.table(title, columns, rows, caption=caption)
    output.written(io.out, io.plot, *extra)


@measuring(SLICE, plot=True, defaults={"save_directions": True}, split=False, product_batch=1024)
def slice_(
    checkpoint: CheckpointArg,
    settings: dict | None = None,
    filter_norm: Annotated[bool, typer.Option("--filter-norm",
                                              help="Same as --norm filter (deprecated).")] = False,
    kind: Annotated[str, typer.Option("--kind",
                                      help="2-D figure: contour, heatmap or surface.")] = "contour",
    export: names_option("--export", "Also write the slice for other tools beside --out: vtk "
                                     "(ParaView: .vts/.vtp) and/or csv") = None,
    animate: path_option("--animate", "Write the runs' paths on a 2-D PCA plane as an "
                                      "animation (.gif, or .mp4 with ffmpeg).") = None,
    spec: ProblemSpec = None,
    io: Outputs = None,
) -> None:
    """Loss and accuracy on a 1-D or 2-D slice through a checkpoint (Li et al. 2018)."""

    from ..errors import ConfigError
    from ..slices import compute_slice, make_directions
    from ..slices.grid import has_batchnorm

    clock = Stopwatch()
    s = settings
    formats = check_exports(export, animate, io.out, s)
    if filter_norm:
        if s["norm"] not in (None, "filter"):
            raise ConfigError(f"--filter-norm contradicts --norm {s['norm']}", "pass one of them")
        output.info("note: --filter-norm is deprecated; use --norm filter")
        s["norm"] = "filter"
    if kind not in ("contour", "heatmap", "surface"):
        raise ConfigError(f"unknown --kind {kind!r}", "choose contour, heatmap or surface")
    for key, message in check_slice({**s, "train_mode": spec.train_mode}):
        raise ConfigError(f"--{key.replace('_', '-')}: {message}", "see landscape slice --help")
    output.check_writable(io.out, io.plot)
    ckpt, problems = build_problems(checkpoint, spec, test=s["test"])
    train = problems["train"]
    train.loss_value()  # a NaN checkpoint fails here with one clear line
    if s["recompute_bn"] and not has_batchnorm(train):
        output.info("--recompute-bn: the model has no BatchNorm layer; nothing to re-estimate")
    if s["recompute_bn"]:
        output.info("--recompute-bn: re-estimating BatchNorm statistics at each point (one pass "
                    "over the training data per point; slower)")
    head = header(ckpt, train)
    dims, directions = s["dims"], s["directions"]
    with output.progress(not io.json) as start:
        dirs = make_directions(directions, train, dims, seed=spec.seed, norm=s["norm"],
                               include_bias_bn=s["include_bias_bn"], trajectory=s["trajectory"],
                               toward=s["toward"], tol=s["tol"])
        recorded = {"include_bias_bn": s["include_bias_bn"], **spec.settings()}
        run = compute_slice(problems, dirs, span=s["range"], points=s["points"],
                            batch_points=s["batch_points"], recompute_bn=s["recompute_bn"],
                            save_vectors=s["save_directions"], header=head, settings=recorded,
                            progress=start)
    result = run.result
    report = {**head, "kind": "slice", "settings": run.attrs["settings"],
              "directions": {k: v for k, v in run.directions.describe().items()},
              **result.to_dict(), "origin": run.origin, "seconds": clock()}
    caption = (
        f"{run.points}^{dims} = {result.points} points, {result.points_per_second:.1f} points/s, "
        f"{train.count_text()}, p = {train.p}, {report['seconds']:.2f} s"
    )
    emit(report, run.tree, run.attrs, io=io, kind=kind if dims == 2 else "curve",
         title=f"{dims}-D slice of {checkpoint} ({directions} directions)",
         columns=["quantity", "origin", "min on grid", "max on grid"],
         rows=summary_rows(result.values, run.origin),
         caption=caption, also=lambda data: _extras(data, formats, animate, io.out))


def check_exports(export: list[str] | None, animate: Path | None, out: Path | None,
                  s: dict) -> list[str]:
    """The ``--export`` formats, checked with ``--animate`` before anything is computed."""
    from ..errors import ConfigError
    from ..io.export import FORMATS

    formats = names(export, FORMATS, "--export format")
    if formats and out is None:
        raise ConfigError("--export writes beside the HDF5 file", "add --out SLICE.h5")
    if animate is not None:
        if s["dims"] != 2 or s["directions"] != "pca":
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


def _extras(data: dict, formats: list[str], animate: Path | None, out: Path | None) -> list:
    written = []
    if formats:
        from ..io.export import export

        written += export(data, out, formats)
    if animate is not None:
        from ..io.slice_figures import animate_paths

        written.append(animate_paths(data, animate))
    return written
