"""One loss-surface slice from start to finish (the library behind ``landscape slice`` and the
study kind ``slice``): directions, the default axis ranges, the grid, the values at the origin,
and the HDF5 tree of the result."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..problem import Problem
from .directions import Directions, Kind, Norm, make_directions
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


def default_ranges(kind: str, directions: Directions, dims: int) -> list[tuple[float, float]]:
    """The axis ranges when none is given: the trajectory's extent padded by 15% (``pca``, with
    the origin included), ``(-0.5, 1.5)`` (``checkpoints``: each at coordinate 1), else ``(-1, 1)``."""
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
    directions: Kind = "random",
    dims: int = 1,
    *,
    seed: int = 0,
    norm: Norm | None = None,
    include_bias_bn: bool = False,
    trajectory: str | Path | Sequence[str | Path] | None = None,
    toward: Sequence[str | Path] | None = None,
    tol: float = 1e-6,
    span: tuple[float, float] | None = None,
    points: int | None = None,
    batch_points: int | None = None,
    recompute_bn: bool = False,
    save_vectors: bool = True,
    header: dict | None = None,
    samples: int | None = None,
    batch_size: int | None = None,
    params: str | None = None,
    train_mode: bool = False,
    progress: Callable[[str, int], Progress] | None = None,
) -> SliceRun:
    """Loss and accuracy of each split on a 1-D or 2-D slice through the ``train`` problem's θ.

    ``problems``: ``{"train": Problem[, "test": Problem]}``. The directions are
    :func:`~landscape.slices.directions.make_directions` ``(directions, problems["train"], dims,
    seed=..., norm=..., include_bias_bn=..., trajectory=..., toward=..., tol=...)``. Each axis runs
    over ``span`` (default: :func:`default_ranges`) with ``points`` values (default 51 in 1-D, 31
    in 2-D); the grid is evaluated by :func:`~landscape.slices.grid.evaluate_grid` (``batch_points``,
    ``recompute_bn``) and the origin by :func:`~landscape.slices.grid.values_at`.

    ``header`` (the report's leading keys: checkpoint identity, ...) goes into the file's
    attributes; ``samples``, ``batch_size``, ``params`` and ``train_mode`` (how the problems were
    built) are only recorded in its settings (``params`` as ``params_regex``). ``progress(label,
    total)``, if given, is called once before the grid is evaluated and returns the callable
    advanced by the number of points of each pass.
    """
    train = problems["train"]
    dirs = make_directions(directions, train, dims, seed=seed, norm=norm, include_bias_bn=include_bias_bn,
                           trajectory=trajectory, toward=toward, tol=tol)
    n = points if points is not None else (51 if dims == 1 else 31)
    ranges = [tuple(span)] * dims if span is not None else default_ranges(directions, dirs, dims)
    axes = [axis(lo, hi, n) for lo, hi in ranges]
    result = evaluate_grid(problems, dirs.theta, dirs.vectors, axes, batch_points=batch_points,
                           recompute_bn_stats=recompute_bn,
                           progress=progress("grid points", n**dims) if progress is not None else None)
    origin = values_at(problems, dirs.theta, recompute_bn_stats=recompute_bn)
    settings = {"dims": dims, "directions": directions, "norm": dirs.norm, "include_bias_bn": include_bias_bn,
                "range": [list(r) for r in ranges], "points": n, "seed": seed, "samples": samples,
                "batch_size": batch_size, "recompute_bn": recompute_bn, "params_regex": params,
                "train_mode": train_mode, "splits": list(problems)}
    tree, attrs = slice_tree(result, kind="slice", directions=dirs, header=header, settings=settings,
                             origin=origin, save_vectors=save_vectors)
    return SliceRun(dirs, result, origin, ranges, n, tree, attrs)
