"""``landscape plot``: the figure of any result file, re-drawn without recomputing.

:func:`detect` tells what a file holds (a slice, an interpolation, a spectral density, a training
run or escape trajectories) and :func:`render` draws it with the figure module of that kind. It
reads run directories (:mod:`landscape.train.run`), so it sits above the experiments; the figure
modules it calls sit below them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import ConfigError, LandscapeError
from .figures import plt, save
from .slice_figures import SLICE_FORMAT, slice_figure

KINDS = ("auto", "curve", "contour", "heatmap", "surface", "density", "run", "escape")


# ---------------------------------------------------------------------- trajectories (generic)
def _trajectory_sets(tree: dict, prefix: str = "") -> dict[str, np.ndarray]:
    """Every 2-D float dataset whose name mentions ``loss`` (``[trajectories, steps]``), by path."""
    out = {}
    for k, v in tree.items():
        if isinstance(v, dict):
            out.update(_trajectory_sets(v, f"{prefix}{k}/"))
        elif isinstance(v, np.ndarray) and v.ndim == 2 and v.dtype.kind == "f" and "loss" in k:
            out[f"{prefix}{k}"] = v
    return out


def trajectories_figure(tree: dict):
    """Any file of ``[trajectories, steps]`` loss arrays: every trajectory thin, the mean bold,
    log-scale loss, one panel per array (``landscape escape`` files go to
    :func:`landscape.io.escape_figures.escape_figure`)."""
    sets = _trajectory_sets(tree)
    if not sets:
        raise LandscapeError("the file holds no [trajectories, steps] loss arrays",
                             "pass an escape result file")
    n = len(sets)
    fig, axes = plt.subplots(1, n, figsize=(4.8 * n, 3.8), squeeze=False, sharey=True)
    for ax, (name, L) in zip(axes.flat, sets.items()):
        steps = np.arange(L.shape[1])
        for row in L[: min(L.shape[0], 200)]:
            ax.plot(steps, row, lw=0.4, alpha=0.3, color="steelblue")
        ax.plot(steps, np.nanmean(L, axis=0), lw=2, color="k", label="mean")
        ax.set_yscale("log")
        ax.set_title(name.rsplit("/", 1)[0] if "/" in name else name, fontsize=9)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    axes.flat[0].set_ylabel("loss")
    axes.flat[0].legend(fontsize=7)
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------- render
def _densities(tree: dict) -> dict[str, dict]:
    """Spectral densities in a sharpness file: ``metrics/density``, or per layer."""
    out = {}
    dens = (tree.get("metrics") or {}).get("density")
    if isinstance(dens, dict) and "nodes" in dens:
        out[""] = dens
    for layer, rec in (tree.get("layers") or {}).items():
        d = (rec.get("metrics") or {}).get("density") if isinstance(rec, dict) else None
        if isinstance(d, dict) and "nodes" in d:
            out[layer] = d
    return out


def detect(tree: dict) -> str:
    """What a result file holds: ``slice``, ``interpolation``, ``density``, ``run`` or
    ``escape``."""
    fmt = str(tree.get("format") or "")
    if fmt == SLICE_FORMAT or ("grid" in tree and "values" in tree):
        return "interpolation" if tree.get("kind") == "interpolation" else "slice"
    if fmt == "landscape-run" or isinstance(tree.get("series"), dict) and "step" in tree["series"]:
        return "run"
    if _densities(tree):
        return "density"
    if "escape" in fmt or _trajectory_sets(tree):
        return "escape"
    raise LandscapeError("cannot tell what this file holds (no slice grid, density, run series or "
                         "escape trajectories)",
                         "pass a file written by landscape slice, interpolate, "
                         "sharpness --out (with --metric density), train or escape")


def render(path: str | Path, kind: str = "auto", out: str | Path | None = None,
           quantity: str = "loss") -> list[Path]:
    """Re-draw the figure of any result file without recomputing; returns the files written.

    ``kind``: ``auto`` (from the content), ``curve`` (1-D slice, interpolation), ``contour`` /
    ``heatmap`` / ``surface`` (2-D slice), ``density``, ``run``, ``escape``. ``out`` defaults to
    the file's name with ``.png`` (``-KIND.png`` when a kind is named). A sharpness file with
    per-layer densities gives one figure of all blocks side by side.
    """
    from .hdf5 import read_tree

    if kind not in KINDS:
        raise ConfigError(f"unknown --kind {kind!r}", f"choose one of {', '.join(KINDS)}")
    if quantity not in ("loss", "accuracy"):
        raise ConfigError(f"unknown --value {quantity!r}", "choose loss or accuracy")
    path = Path(path)
    tree = read_tree(path)
    what = detect(tree)
    out = (
        Path(out)
        if out is not None
        else path.with_name(path.stem + ("" if kind == "auto" else f"-{kind}") + ".png")
    )
    allowed = {"slice": ("auto", "curve", "contour", "heatmap", "surface"),
               "interpolation": ("auto", "curve"),
               "density": ("auto", "density"), "run": ("auto", "run"), "escape": ("auto",
                                                                                  "escape")}[what]
    if kind not in allowed:
        raise ConfigError(f"{path} holds a {what}, which cannot be drawn as --kind {kind}",
                          f"use --kind {' or '.join(allowed)}")
    if what in ("slice", "interpolation"):
        return [save(slice_figure(tree, kind, quantity), out)]
    if what == "run":
        from ..train.run import read_run
        from .run_figures import run_figure

        rec = read_run(path)
        return [save(run_figure(rec["series"], rec["attrs"]), out)]
    if what == "escape":
        runs = tree.get("runs") if isinstance(tree.get("runs"), dict) else {}
        recorded = [
            (
                r["record_steps"],
                r["losses"],
                {k: v for k, v in r.items() if not isinstance(v, np.ndarray)},
            )
            for r in runs.values()
            if isinstance(r, dict) and "losses" in r and "record_steps" in r
        ]
        if recorded:  # landscape escape --out: the lecture's Figure 19, as escape --plot draws it
            from .escape_figures import escape_figure as lecture_figure

            return [save(lecture_figure(recorded, title=f"escape runs of {path.name}"), out)]
        return [save(trajectories_figure(tree), out)]
    from .figures import blocks_density_figure, density_figure

    found = _densities(tree)
    if "" in found:
        return [save(density_figure(found[""]), out)]
    return [save(blocks_density_figure(found), out)]


__all__ = ["KINDS", "detect", "render", "trajectories_figure"]
