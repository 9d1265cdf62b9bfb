"""``landscape slice``: loss and accuracy on a 1-D or 2-D slice through a checkpoint
(Li et al. 2018): random filter-normalised, Hessian-eigenvector, trajectory-PCA or checkpoint
directions; HDF5 and figures. The slice is :func:`landscape.slices.run_slice`; this module parses
its flags and prints its table."""

from __future__ import annotations

from typing import Annotated

import typer

from ..slices.settings import SLICE, check_slice
from . import output
from .common import Outputs, ProblemSpec, Stopwatch, build_problems, emit, header, measuring
from .options import CheckpointArg, names_option, path_option


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
    from ..io.export import check_requests, write_requests
    from ..slices import run_slice
    from ..slices.grid import has_batchnorm

    clock = Stopwatch()
    s = settings
    formats = check_requests(export, animate, io.out, s["dims"], s["directions"])
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
    if s["recompute_bn"]:
        output.info("--recompute-bn: re-estimating BatchNorm statistics at each point (one pass "
                    "over the training data per point; slower)" if has_batchnorm(train) else
                    "--recompute-bn: the model has no BatchNorm layer; nothing to re-estimate")
    head = header(ckpt, train)
    with output.progress(not io.json) as start:
        run = run_slice(problems, s, seed=spec.seed, header=head, settings=spec.settings(),
                        progress=start)
    report = run.report(head, clock())
    title = f"{s['dims']}-D slice of {checkpoint} ({s['directions']} directions)"
    emit(report, run.tree, run.attrs, run.table(title, train, report["seconds"]), io=io,
         kind=kind if s["dims"] == 2 else "curve",
         also=lambda data: write_requests(data, formats, animate, io.out))
