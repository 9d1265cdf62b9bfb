"""``landscape sharpness``: trace, extreme eigenvalues, Frobenius norm and spectral density of
a checkpoint's Hessian (optionally per layer, or for a parameter subset)."""

from __future__ import annotations

from typing import Annotated

import typer

from ..metrics import METRICS, Settings, parse_metrics
from ..metrics.run import layer_problems, measure
from . import output
from .common import Stopwatch, header, load_problem
from .options import (
    BatchOpt,
    CheckpointArg,
    DataOpt,
    DebugOpt,
    DeviceOpt,
    DtypeOpt,
    JsonOpt,
    LossOpt,
    ModelOpt,
    OutOpt,
    ParamsOpt,
    PlotOpt,
    SamplesOpt,
    SeedOpt,
    SplitOpt,
    TrainModeOpt,
)


@output.handle_errors
def sharpness(
    checkpoint: CheckpointArg,
    metric: Annotated[list[str] | None, typer.Option("--metric", "-m", help=f"Metrics, repeated or comma-separated: {', '.join(METRICS)} (default trace,eig,frobenius).")] = None,
    probes: Annotated[int, typer.Option(help="Random probe vectors for trace and Frobenius norm.")] = 100,
    method: Annotated[str, typer.Option(help="Trace estimator: hutchinson or hutchpp.")] = "hutchinson",
    top_k: Annotated[int, typer.Option("--top-k", help="How many eigenvalues at each end.")] = 1,
    which: Annotated[str, typer.Option(help="Eigenvalues at the top, bottom or both ends of the spectrum.")] = "top",
    tol: Annotated[float, typer.Option(help="Relative residual tolerance of Lanczos (or power iteration).")] = 1e-6,
    eig_method: Annotated[str, typer.Option("--eig-method", help="lanczos, or power (PyHessian's: largest |λ|).")] = "lanczos",
    runs: Annotated[int, typer.Option(help="Spectral density: SLQ runs.")] = 10,
    steps: Annotated[int, typer.Option(help="Spectral density: Lanczos steps per run.")] = 80,
    rho: Annotated[float, typer.Option(help="perturbation: noise scale ρ of ε ~ N(0, ρ²I).")] = 0.01,
    perturbations: Annotated[int, typer.Option(help="perturbation: Monte-Carlo draws of ε.")] = 100,
    epsilon: Annotated[float, typer.Option(help="keskar: half-width ε of the box (relative to |θ|+1).")] = 1e-3,
    subspace: Annotated[int, typer.Option(help="keskar: ascent in a random subspace of this dimension (0: full space).")] = 0,
    ascent_steps: Annotated[int, typer.Option("--ascent-steps", help="keskar: projected ascent steps.")] = 20,
    per_layer: Annotated[bool, typer.Option("--per-layer", help="Report every metric for each layer's block of the Hessian.")] = False,
    model: ModelOpt = None,
    data: DataOpt = None,
    loss: LossOpt = None,
    split: SplitOpt = "train",
    samples: SamplesOpt = None,
    batch_size: BatchOpt = 256,
    params: ParamsOpt = None,
    device: DeviceOpt = "cpu",
    dtype: DtypeOpt = "float32",
    seed: SeedOpt = 0,
    train_mode: TrainModeOpt = False,
    json_: JsonOpt = False,
    out: OutOpt = None,
    plot: PlotOpt = None,
    debug: DebugOpt = False,
) -> None:
    """Hessian trace, extreme eigenvalues, Frobenius norm and spectral density of a checkpoint."""
    from ..errors import ConfigError

    clock = Stopwatch()
    names = parse_metrics(metric)
    if method not in ("hutchinson", "hutchpp"):
        raise ConfigError(f"unknown --method {method!r}", "choose hutchinson or hutchpp")
    if which not in ("top", "bottom", "both"):
        raise ConfigError(f"unknown --which {which!r}", "choose top, bottom or both")
    if eig_method not in ("lanczos", "power"):
        raise ConfigError(f"unknown --eig-method {eig_method!r}", "choose lanczos or power")
    for label, v in (("--probes", probes), ("--top-k", top_k), ("--runs", runs), ("--steps", steps)):
        if v < 1:
            raise ConfigError(f"{label} must be at least 1, got {v}", f"pass a positive {label}")
    if plot is not None and "density" not in names:
        raise ConfigError("--plot draws the spectral density", "add --metric density")
    settings = Settings(probes=probes, method=method, top_k=top_k, which=which, tol=tol,
                        eig_method=eig_method, runs=runs, steps=steps, seed=seed,
                        extra={"rho": rho, "perturbations": perturbations, "epsilon": epsilon,
                               "subspace": subspace or None, "ascent_steps": ascent_steps})
    ckpt, problem = load_problem(checkpoint, model=model, data=data, loss=loss, split=split, samples=samples,
                                 batch_size=batch_size, params=params, device=device, dtype=dtype,
                                 train_mode=train_mode, seed=seed)
    problem.loss_value()  # a NaN checkpoint fails here with one clear line
    targets = layer_problems(problem) if per_layer else {"": problem}
    results: dict[str, dict] = {}
    with output.progress(not json_) as start:
        state = {"advance": lambda k: None}

        def on_start(name, total, layer=""):
            state["advance"] = start(f"{layer + ': ' if layer else ''}{name}", total)

        for layer, pb in targets.items():
            results[layer] = measure(pb, names, settings,
                                     on_start=lambda n, t, layer=layer: on_start(n, t, layer),
                                     on_product=lambda k: state["advance"](k))

    report = header(ckpt, problem)
    report["settings"] = settings.to_dict() | {"metrics": names, "split": split, "batch_size": batch_size,
                                               "params_regex": params, "train_mode": train_mode}
    if per_layer:
        report["layers"] = {layer: {"params": pb.p, "metrics": {k: r.to_dict() for k, r in results[layer].items()}}
                            for layer, pb in targets.items()}
    else:
        report["metrics"] = {k: r.to_dict() for k, r in results[""].items()}
    report["seconds"] = clock()

    if out is not None:
        from ..io.hdf5 import write_tree

        tree = {"metrics": report["metrics"]} if not per_layer else {"layers": report["layers"]}
        write_tree(out, tree, attrs={k: v for k, v in report.items() if k not in ("metrics", "layers")})
    if plot is not None:
        from ..io.figures import density_figure, save

        for layer, res in results.items():
            path = plot if not layer else plot.with_name(f"{plot.stem}-{layer}{plot.suffix}")
            save(density_figure(res["density"], title=f"Hessian spectral density{' of ' + layer if layer else ''}"), path)

    if json_:
        output.emit_json(report)
        return
    rows = []
    for layer, res in results.items():
        for name in names:
            for r in METRICS[name].rows(res[METRICS[name].key]):
                rows.append(((layer,) if per_layer else ()) + r)
    cols = (["layer"] if per_layer else []) + ["quantity", "value", "± stderr / note", "products"]
    caption = (f"{problem.n} samples, p = {problem.p}, loss {problem.loss.name}, "
               f"{str(problem.dtype).replace('torch.', '')} on {problem.device}, {report['seconds']:.2f} s")
    output.table(f"Hessian of {checkpoint}", cols, rows)
    output.info(caption)
    for path in (out, plot):
        if path is not None:
            output.info(f"wrote {path}")
