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
    from ..metrics import METRICS, Settings, parse_metrics
    from ..metrics.run import blocks_report, measure, measure_blocks

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
    from ..curvature.hessian import Hessian

    with output.progress(not io.json) as start:
        state = {"advance": lambda k: None}

        def on_start(name, total, layer=""):
            state["advance"] = start(f"{layer + ': ' if layer else ''}{name}", total)

        def on_product(k):
            state["advance"](k)

        if per_layer:
            operators, results = measure_blocks(problem, names, settings, on_start=on_start,
                                                on_product=on_product)
        else:
            operators = {"": Hessian(problem)}
            results = {"": measure(problem, names, settings, operator=lambda _pb: operators[""],
                                   on_start=on_start, on_product=on_product)}

    report = header(ckpt, problem)
    report.update(at)
    report["settings"] = settings.to_dict() | {"metrics": names, **spec.settings()}
    report["products"] = output.products_report(operators[next(iter(operators))])
    if per_layer:
        report.update(blocks_report(operators, results))
    else:
        report["metrics"] = {k: r.to_dict() for k, r in results[""].items()}
    report["seconds"] = clock()

    if io.out is not None:
        from ..io.hdf5 import write_tree

        tree = {"metrics": report["metrics"]} if not per_layer else {"layers": report["layers"]}
        eig = results.get("", {}).get("eigenvalues")
        if eig is not None and eig.vectors is not None:  # the Ritz vectors, for landscape overlap
            from ..io.eigenvectors import eigenspace_tree

            tree["eigenvectors"] = eigenspace_tree(eig, problem.layout)
        write_tree(io.out, tree, attrs={k: v for k, v in report.items() if k not in ("metrics",
                                                                                     "layers")})
    if io.plot is not None:
        from ..io.figures import blocks_density_figure, density_figure, save

        save(blocks_density_figure({layer: res["density"] for layer, res in results.items()})
             if per_layer else density_figure(results[""]["density"]), io.plot)

    if io.json:
        output.emit_json(report)
        return
    rows = []
    for layer, res in results.items():
        for name in names:
            for r in METRICS[name].rows(res[METRICS[name].key]):
                rows.append(((layer,) if per_layer else ()) + r)
    cols = (["layer"] if per_layer else []) + ["quantity", "value", "± stderr / note", "products"]
    acc = "" if at["accuracy"] is None else f", accuracy {at['accuracy']:.4g}"
    caption = (
        f"{problem.count_text()}, p = {problem.p}, {problem.loss.name} loss "
        f"{at['loss_value']:.6g}{acc}, "
        f"{str(problem.dtype).replace('torch.', '')} on {problem.device}, {report['seconds']:.2f} s"
    )
    output.table(f"Hessian of {checkpoint}", cols, rows)
    output.info(caption)
    for name, sp in (report.get("blocks") or {}).items():
        label = {"lambda_max": "λ_max", "trace": "tr(H)"}[name]
        ratio = f", ratio {sp['ratio']:.3g}" if sp["ratio"] else ""
        cv = f", coefficient of variation {sp['cv']:.3g}" if sp["cv"] is not None else ""
        output.info(f"blocks: {label} from {sp['min']:.4g} ({sp['min_block']}) to "
                    f"{sp['max']:.4g} ({sp['max_block']}){ratio}{cv}")
    output.info(output.products_line(report))
    output.written(io.out, io.plot)
