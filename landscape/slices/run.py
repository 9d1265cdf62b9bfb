"""One loss-surface slice from start to finish (the library behind ``landscape slice`` and the
study kind ``slice``): directions, the default axis ranges, the grid, the values at the origin,
and the HDF5 tree of the result."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..problem import Problem
from ..results import Table
from .directions import Directions, make_directions
from .grid import GridResult, Progress, axis, evaluate_grid, slice_tree, values_at


@dataclass
class SliceRun:
    """What :func:`compute_slice` computed: the ``directions``, the grid ``result``, the values at
    the ``origin`` (``{"train_loss": ...}``), the axis ``ranges`` and ``points`` per axis, and the
    ``(tree, attrs)`` of the slice file (:func:`~landscape.slices.grid.slice_tree`; ``attrs
    ["settings"]`` holds every setting)."""

    directions: Directions
    result: GridResult
    origin: dict[str, float]
    ranges: list[tuple[float, float]]
    points: int
    tree: dict
    attrs: dict

    def report(self, header: dict, seconds: float) -> dict:
        """The JSON report (``landscape slice --json``)."""
        return {**header, "kind": "slice", "settings": self.attrs["settings"],
                "directions": dict(self.directions.describe()), **self.result.to_dict(),
                "origin": self.origin, "seconds": seconds}

    def table(self, title: str, problem: Problem, seconds: float) -> Table:
        """Each value at the origin and its least and largest on the grid."""
        r, dims = self.result, self.directions.dims
        caption = (f"{self.points}^{dims} = {r.points} points, {r.points_per_second:.1f} "
                   f"points/s, {problem.count_text()}, p = {problem.p}, {seconds:.2f} s")
        return Table(title, ["quantity", "origin", "min on grid", "max on grid"],
                     value_rows(r.values, [self.origin]), caption)


def value_rows(values: dict, at: list[dict]) -> list[tuple]:
    """One row per value on a grid or line: its name, its value at each point of ``at`` (an
    origin, two end points), its least and largest finite value."""
    rows = []
    for key, arr in values.items():
        a = np.asarray(arr, dtype=float)
        fin = a[np.isfinite(a)]
        rows.append((key.replace("_", " "),
                     *("-" if p.get(key) is None else f"{p[key]:.6g}" for p in at),
                     f"{fin.min():.6g}" if fin.size else "nan",
                     f"{fin.max():.6g}" if fin.size else "nan"))
    return rows


def run_slice(problems: dict[str, Problem], s: dict, *, seed: int = 0, header: dict | None = None,
              settings: dict | None = None,
              progress: Callable[[str, int | None], Progress] | None = None) -> SliceRun:
    """A whole slice from the declared settings ``s`` of :data:`~landscape.slices.settings.SLICE`
    (``landscape slice``'s flags): :func:`~landscape.slices.directions.make_directions`, then
    :func:`compute_slice`; ``settings`` (how the problems were made) are recorded beside
    ``include_bias_bn``."""
    dirs = make_directions(s["directions"], problems["train"], s["dims"], seed=seed,
                           norm=s["norm"], include_bias_bn=s["include_bias_bn"],
                           trajectory=s["trajectory"], toward=s["toward"], tol=s["tol"])
    return compute_slice(problems, dirs, span=s["range"], points=s["points"],
                         batch_points=s["batch_points"], recompute_bn=s["recompute_bn"],
                         save_vectors=s["save_directions"], header=header,
                         settings={"include_bias_bn": s["include_bias_bn"], **(settings or {})},
                         progress=progress)


def default_ranges(kind: str, directions: Directions, dims: int) -> list[tuple[float, float]]:
    """The axis ranges when none is given: the trajectory's extent padded by 15% (``pca``, with the
    origin included), ``(-0.5, 1.5)`` (``checkpoints``: each at coordinate 1), else ``(-1, 1)``."""
    if kind == "pca" and directions.trajectory is not None:
        c = directions.trajectory.double()
        lo, hi = c.min(dim=0).values.clamp(max=0.0), c.max(dim=0).values.clamp(min=0.0)
        pad = 0.15 * (hi - lo).clamp_min(1e-12)
        return [(float(lo[i] - pad[i]), float(hi[i] + pad[i])) for i in range(dims)]
    if kind == "checkpoints":
        return [(-0.5, 1.5)] * dims
    return [(-1.0, 1.0)] * dims


def compute_slice(
    problems: dict[str, Problem],
    directions: Directions,
    *,
    span: tuple[float, float] | None = None,
    points: int | None = None,
    batch_points: int | None = None,
    recompute_bn: bool = False,
    save_vectors: bool = True,
    header: dict | None = None,
    settings: dict | None = None,
    progress: Callable[[str, int], Progress] | None = None,
) -> SliceRun:
    """Loss and accuracy of each split on the 1-D or 2-D slice through ``directions.theta``
    spanned by ``directions`` (from :func:`~landscape.slices.directions.make_directions`).

    ``problems``: ``{"train": Problem[, "test": Problem]}``. Each axis runs over ``span``
    (default: :func:`default_ranges`) with ``points`` values (default 51 in 1-D, 31 in 2-D); the
    grid is evaluated by :func:`~landscape.slices.grid.evaluate_grid` (``batch_points``,
    ``recompute_bn``) and the origin by :func:`~landscape.slices.grid.values_at`.

    ``header`` (the report's leading keys: checkpoint identity, ...) goes into the file's
    attributes; ``settings`` (how the directions and problems were made: seed, samples, ...) are
    recorded with the grid's own (range, points, recompute_bn, splits). ``progress(label,
    total)``, if given, is called once before the grid is evaluated and returns the callable
    advanced by the number of points of each pass.
    """
    dims = directions.dims
    n = points if points is not None else (51 if dims == 1 else 31)
    ranges = (
        [tuple(span)] * dims
        if span is not None
        else default_ranges(directions.kind, directions, dims)
    )
    axes = [axis(lo, hi, n) for lo, hi in ranges]
    result = evaluate_grid(problems, directions.theta, directions.vectors, axes,
                           batch_points=batch_points,
                           recompute_bn_stats=recompute_bn,
                           progress=progress("grid points",
                                             n**dims) if progress is not None else None)
    origin = values_at(problems, directions.theta, recompute_bn_stats=recompute_bn)
    recorded = {"dims": dims, "directions": directions.kind, "norm": directions.norm,
                **(settings or {}),
                "range": [list(r) for r in ranges], "points": n, "recompute_bn": recompute_bn,
                "splits": list(problems)}
    tree, attrs = slice_tree(result, kind="slice", directions=directions, header=header,
                             settings=recorded,
                             origin=origin, save_vectors=save_vectors)
    return SliceRun(directions, result, origin, ranges, n, tree, attrs)
