"""``landscape slice``: loss and accuracy on a 1-D or 2-D slice through a checkpoint
(Li et al. 2018): random filter-normalised, Hessian-eigenvector, trajectory-PCA or checkpoint
directions; HDF5 and figures."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from . import output
from .common import Outputs, ProblemSpec, Stopwatch, header, outputs, problem_options
from .options import CheckpointArg

RangeOpt = Annotated[tuple[float, float] | None, typer.Option("--range",
    help="LO HI of each axis (default -1 1; pca: the trajectory's extent; checkpoints: -0.5 1.5).",
                                                              show_default=False)]
PointsOpt = Annotated[
    int | None,
    typer.Option(
        "--points", help="Grid points per axis (default 51 in 1-D, 31 in 2-D).", show_default=False
    ),
]
BatchPointsOpt = Annotated[
    int | None,
    typer.Option(
        "--batch-points",
        help="Parameter points per vmapped forward pass (memory grows with it). Default: about "
             "16384 sample-rows per pass (points x --batch-size), at most 64 points.",
        show_default=False,
    ),
]
RecomputeBnOpt = Annotated[
    bool,
    typer.Option(
        "--recompute-bn",
        help="Re-estimate BatchNorm running statistics at every grid point from the training data "
             "(one extra pass per point: slower).",
    ),
]
TestOpt = Annotated[
    bool,
    typer.Option(
        "--test/--no-test",
        help="Also evaluate the test split where the checkpoint's data have one.",
    ),
]


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
         columns: list[str],
         rows: list[tuple], caption: str) -> None:
    """Write the HDF5 file and the figure, then print the table or the JSON object."""
    if io.out is not None:
        from ..io.hdf5 import write_tree

        write_tree(io.out, tree, attrs=attrs)
    if io.plot is not None:
        from ..io.slice_figures import save, slice_figure

        save(slice_figure({**attrs, **tree}, kind), io.plot)
    if io.json:
        output.emit_json(report)
        return
    output.table(title, columns, rows, caption=caption)
    output.written(io.out, io.plot)


@output.handle_errors
@problem_options(split=False, product_batch=1024)
@outputs(plot=True)
def slice_(
    checkpoint: CheckpointArg,
    dims: Annotated[int, typer.Option("--dims", help="1 (a line) or 2 (a plane).")] = 1,
    directions: Annotated[
        str,
        typer.Option(
            "--directions",
            help="random (Gaussian, normalised), eigen (top Hessian eigenvectors), pca (of "
                 "--trajectory RUN), checkpoints (toward --toward files).",
        ),
    ] = "random",
    norm: Annotated[
        str | None,
        typer.Option(
            "--norm",
            help="Random directions: filter (Li et al.: per output unit / channel), layer (per "
                 "tensor) or none. Default filter.",
            show_default=False,
        ),
    ] = None,
    filter_norm: Annotated[
        bool,
        typer.Option(
            "--filter-norm", help="Same as --norm filter (the default for random directions)."
        ),
    ] = False,
    include_bias_bn: Annotated[
        bool,
        typer.Option(
            "--include-bias-bn",
            help="Random directions also move biases and normalisation parameters (default: zero "
                 "there).",
        ),
    ] = False,
    range_: RangeOpt = None,
    points: PointsOpt = None,
    trajectory: Annotated[
        Path | None,
        typer.Option(
            "--trajectory",
            help="Run directory (landscape train --out) whose checkpoints give the PCA plane.",
        ),
    ] = None,
    toward: Annotated[
        list[Path] | None,
        typer.Option(
            "--toward",
            help="Checkpoint(s) spanning --directions checkpoints (one per dimension; each at "
                 "coordinate 1).",
        ),
    ] = None,
    tol: Annotated[
        float, typer.Option(help="Eigen directions: Lanczos relative residual tolerance.")
    ] = 1e-6,
    kind: Annotated[
        str, typer.Option("--kind", help="2-D figure: contour, heatmap or surface.")
    ] = "contour",
    batch_points: BatchPointsOpt = None,
    recompute_bn: RecomputeBnOpt = False,
    test: TestOpt = True,
    save_directions: Annotated[
        bool,
        typer.Option(
            "--save-directions/--no-save-directions",
            help="Store the [p, k] direction vectors in --out.",
        ),
    ] = True,
    spec: ProblemSpec = None,
    io: Outputs = None,
) -> None:
    """Loss and accuracy on a 1-D or 2-D slice through a checkpoint (Li et al. 2018)."""

    from ..errors import ConfigError
    from ..slices import compute_slice, make_directions
    from ..slices.grid import has_batchnorm

    clock = Stopwatch()
    if filter_norm:
        if norm not in (None, "filter"):
            raise ConfigError(f"--filter-norm contradicts --norm {norm}", "pass one of them")
        norm = "filter"
    if kind not in ("contour", "heatmap", "surface"):
        raise ConfigError(f"unknown --kind {kind!r}", "choose contour, heatmap or surface")
    if dims not in (1, 2):
        raise ConfigError(f"--dims must be 1 or 2, got {dims}", "pass --dims 1 or --dims 2")
    if recompute_bn and spec.train_mode:
        raise ConfigError("--recompute-bn re-estimates running statistics for eval mode",
                          "drop --train-mode")
    output.check_writable(io.out, io.plot)
    seed = spec.seed
    ckpt, problems = build_problems(checkpoint, spec, test=test)
    train = problems["train"]
    train.loss_value()  # a NaN checkpoint fails here with one clear line
    if recompute_bn and not has_batchnorm(train):
        output.info("--recompute-bn: the model has no BatchNorm layer; nothing to re-estimate")
    if recompute_bn:
        output.info(
            "--recompute-bn: re-estimating BatchNorm statistics at each point (one pass over the "
            "training data per point; slower)"
        )
    head = header(ckpt, train)
    with output.progress(not io.json) as start:
        dirs = make_directions(directions, train, dims, seed=seed, norm=norm,
                               include_bias_bn=include_bias_bn,
                               trajectory=trajectory, toward=toward, tol=tol)
        settings = {"include_bias_bn": include_bias_bn, **spec.settings()}
        run = compute_slice(problems, dirs, span=range_, points=points, batch_points=batch_points,
                            recompute_bn=recompute_bn, save_vectors=save_directions, header=head,
                            settings=settings, progress=start)
    result = run.result
    report = {**head, "kind": "slice", "settings": run.attrs["settings"],
              "directions": {k: v for k, v in run.directions.describe().items()},
              **result.to_dict(), "origin": run.origin, "seconds": clock()}
    caption = (
        f"{run.points}^{dims} = {result.points} points, {result.points_per_second:.1f} points/s, "
        f"{train.n} samples, p = {train.p}, {report['seconds']:.2f} s"
    )
    emit(report, run.tree, run.attrs, io=io, kind=kind if dims == 2 else "curve",
         title=f"{dims}-D slice of {checkpoint} ({directions} directions)",
         columns=["quantity", "origin", "min on grid", "max on grid"],
         rows=summary_rows(result.values, run.origin),
         caption=caption)
