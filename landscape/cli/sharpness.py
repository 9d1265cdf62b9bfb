"""``landscape sharpness``: trace, extreme eigenvalues, Frobenius norm and spectral density of
a checkpoint's Hessian (optionally per layer, or for a parameter subset)."""

from __future__ import annotations

from typing import Annotated

import typer

from ..metrics import declared
from . import output
from .common import Outputs, ProblemSpec, Stopwatch, header, measuring
from .options import CheckpointArg, MetricOpt, PlanOpt


@measuring(declared(), plot=True)
def sharpness(
    checkpoint: CheckpointArg,
    metric: MetricOpt = None,
    settings: dict | None = None,
    per_layer: Annotated[
        bool,
        typer.Option(
            "--per-layer", help="Report every metric for each layer's block of the Hessian."
        ),
    ] = False,
    plan: PlanOpt = False,
    spec: ProblemSpec = None,
    io: Outputs = None,
) -> None:
    """Hessian trace, extreme eigenvalues, Frobenius norm and spectral density of a checkpoint."""
    from ..errors import ConfigError
    from ..metrics import Settings, parse_metrics
    from ..metrics.run import sharpness as measure

    clock = Stopwatch()
    names = parse_metrics(metric)
    settings = Settings.of(settings, seed=spec.seed).validate(names)
    if io.plot is not None and "density" not in names:
        raise ConfigError("--plot draws the spectral density", "add --metric density")
    output.check_writable(io.out, io.plot)
    ckpt, problem = spec.load(checkpoint)
    if plan:
        from . import plan as plan_cmd

        plan_cmd.show(ckpt, problem, names, settings, json_=io.json)
        return
    at = problem.point()  # a NaN checkpoint fails here
    with output.progress(not io.json) as start:
        state = {"advance": lambda k: None}

        def on_start(name: str, total: int | None, layer: str) -> None:
            state["advance"] = start(f"{layer + ': ' if layer else ''}{name}", total)

        result = measure(problem, names, settings, per_layer=per_layer, on_start=on_start,
                         on_product=lambda k: state["advance"](k))
    report = {**header(ckpt, problem), **at,
              "settings": settings.to_dict() | {"metrics": names, **spec.settings()},
              **result.report(), "seconds": clock()}
    if io.out is not None:
        from ..io.eigenvectors import eigenspace_tree
        from ..io.hdf5 import write_tree

        key = "layers" if per_layer else "metrics"
        tree = {key: report[key]}
        if result.ritz() is not None:  # the Ritz vectors, for landscape overlap
            tree["eigenvectors"] = eigenspace_tree(result.ritz(), problem.layout)
        write_tree(io.out, tree, attrs={k: v for k, v in report.items() if k != key})
    if io.plot is not None:
        result.figure(io.plot)
    if io.json:
        output.emit_json(report)
        return
    output.table(*result.table(f"Hessian of {checkpoint}"))
    acc = "" if at["accuracy"] is None else f", accuracy {at['accuracy']:.4g}"
    output.info(f"{problem.count_text()}, p = {problem.p}, {problem.loss.name} loss "
                f"{at['loss_value']:.6g}{acc}, {str(problem.dtype).replace('torch.', '')} on "
                f"{problem.device}, {report['seconds']:.2f} s")
    for line in result.spread_lines(report):
        output.info(line)
    output.info(output.products_line(report))
    output.written(io.out, io.plot)
