"""``landscape escape``: from a minimum found by full-batch GD (or a checkpoint), run many
trajectories of SGD and its noise surrogates at once and measure how fast they leave it, beside
the lecture's stability theory (Figure 19, Theorems 3-4; docs/algorithms.md §2)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated

import typer

from ..errors import ConfigError
from ..escape.experiment import ESCAPE
from . import output
from .common import KV, Outputs, Stopwatch, declared_options, join, outputs, parse_kv
from .options import DeviceOpt, DtypeOpt, ProgressOpt, SeedOpt, names_option


def parse_to(items: list[str] | None) -> list[str]:
    """``["sgd,isotropic", "gd"]`` -> ``["sgd", "isotropic", "gd"]`` (checked, no repeats)."""
    from ..escape import DYNAMICS

    names: list[str] = []
    for item in items or ["sgd", "gd"]:
        for name in item.split(","):
            name = name.strip().lower()
            if not name:
                continue
            if name not in DYNAMICS:
                raise ConfigError(f"unknown --to {name!r}", f"choose from {', '.join(DYNAMICS)}")
            if name not in names:
                names.append(name)
    if not names:
        raise ConfigError("--to names no dynamics",
                          f"pass e.g. --to sgd,gd (choices: {', '.join(DYNAMICS)})")
    return names


def _fmt(x, digits: int = 4) -> str:
    if x is None:
        return "-"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, float):
        if not math.isfinite(x):
            return str(x)
        return f"{x:.{digits}g}"
    return str(x)


@output.handle_errors
@declared_options(ESCAPE)
@outputs(plot=True)
def escape(
    checkpoint: Annotated[
        Path | None,
        typer.Argument(
            help="Start from this checkpoint (landscape's format, or a state_dict with "
                 "--model/--data). Without it: --model on --data, trained by GD.",
            show_default=False,
        ),
    ] = None,
    from_: Annotated[
        str | None,
        typer.Option(
            "--from",
            help="gd: first train full-batch GD at --lr until the loss is below --tol; "
                 "checkpoint: start at the checkpoint as it is. Default: checkpoint when one is "
                 "given, else gd.",
        ),
    ] = None,
    to: names_option("--to", "Dynamics: sgd, isotropic, gd, small-noise, lb-diag-noise, "
                             "lb-full-noise (default sgd,gd)") = None,
    model: Annotated[
        str | None,
        typer.Option(
            "--model",
            help="Without a checkpoint: registry model (mlp, two-layer, ...) or FILE.py:FUNCTION "
                 "(default mlp). With a foreign state_dict: its model factory.",
        ),
    ] = None,
    model_arg: Annotated[
        KV,
        typer.Option(
            "--model-arg",
            help="Model option key=value (repeatable, JSON values; e.g. widths=[128,128]).",
        ),
    ] = None,
    data: Annotated[
        str | None,
        typer.Option(
            "--data",
            help="Without a checkpoint: registry dataset or FILE.py:FUNCTION (default digits). "
                 "With a foreign state_dict: its data factory.",
        ),
    ] = None,
    data_arg: Annotated[
        KV,
        typer.Option("--data-arg", help="Dataset option key=value (repeatable; e.g. n_train=256)."),
    ] = None,
    loss: Annotated[
        str | None,
        typer.Option(
            "--loss",
            help="cross-entropy or mse (½‖f−y‖² per sample; on one-hot labels for a "
                 "classification dataset); default from the data or checkpoint.",
        ),
    ] = None,
    samples: Annotated[
        int | None,
        typer.Option(
            "--samples",
            help="Train and escape on a seeded subset of this many training samples (default all).",
        ),
    ] = None,
    lr: Annotated[
        float | None,
        typer.Option(
            "--lr",
            help="Learning rate of GD and of every trajectory (default: the checkpoint's, else "
                 "0.1).",
        ),
    ] = None,
    settings: dict | None = None,
    seed: SeedOpt = 0,
    device: DeviceOpt = "cpu",
    dtype: DtypeOpt = "float32",
    progress: ProgressOpt = True,
    io: Outputs = None,
) -> None:
    """Escape from a GD minimum: many SGD (or noise-model) trajectories at once, measured against
    the stability theory (fraction escaped, median escape step, growth rate vs γ_0)."""
    from ..escape.experiment import EscapeSettings, build_problem, run_escape

    clock = Stopwatch()
    join(device)
    output.check_writable(io.out, io.plot)
    start = from_ or ("checkpoint" if checkpoint is not None else "gd")
    if start == "checkpoint" and checkpoint is None:
        raise ConfigError("--from checkpoint needs a checkpoint", "pass CHECKPOINT, or --from gd")
    settings = EscapeSettings.from_flags(settings, to=parse_to(to), start=start,
                                         lr=0.1 if lr is None else lr, seed=seed).check()
    if samples is not None and samples <= 0:
        raise ConfigError(f"--samples must be positive, got {samples}", "pass a positive --samples")
    problem, identity, settings.lr = build_problem(
        checkpoint, model=model, model_kwargs=parse_kv(model_arg, "--model-arg"), data=data,
        data_kwargs=parse_kv(data_arg, "--data-arg"), loss=loss, samples=samples, lr=lr, seed=seed,
        device=device, dtype=dtype)
    with output.progress(progress and not io.json) as bar:
        result = run_escape(problem, settings, progress=bar, warn=output.warn)
    report = result.report(problem, identity)
    report["seconds"] = clock()
    if io.out is not None:
        from ..io.hdf5 import write_tree

        write_tree(io.out, result.tree(), attrs={"format": "landscape-escape", "version": 1,
                                              "identity": identity,
                                              "settings": report["settings"],
                                              "seconds": report["seconds"]})
    if io.plot is not None:
        from ..io.escape_figures import save_escape_figure

        origin = "GD" if start == "gd" else "checkpoint"
        title = f"escape from {origin} minimum: lr {settings.lr:g}, B {settings.batch_size}"
        save_escape_figure(result.panels(), io.plot, title)
    if io.json:
        output.emit_json(report)
        return
    _tables(report, result.stats, result.summaries, settings.theory)
    output.written(io.out, io.plot)


def _tables(report: dict, stats: dict, summaries: dict, theory: bool) -> None:
    s = report["settings"]
    rows = []
    if report["gd"] is not None:
        g = report["gd"]
        rows.append(("GD to the start", f"{g['steps']} steps, loss {_fmt(g['loss'])}"
                     + ("" if g["converged"] else " (not converged)")))
    if theory:
        rows += [
            ("loss at start", _fmt(stats["loss"])),
            (
                "λ_max(H) vs 2/η",
                (
                    f"{_fmt(stats['lambda_max'])} vs {_fmt(stats['two_over_lr'])}: "
                    f"{'stable' if stats['gd_stable'] else 'UNSTABLE'} for GD"
                ),
            ),
            (
                "‖H‖_F",
                (f"{_fmt(stats['hessian_frobenius'])} ± "
                 f"{_fmt(stats['hessian_frobenius_stderr'], 2)}"),
            ),
            ("tr H", f"{_fmt(stats['hessian_trace'])} ± {_fmt(stats['hessian_trace_stderr'], 2)}"),
            (
                "μ (α, β)",
                (
                    f"{_fmt(stats['mu'])} ({_fmt(stats['alpha'])}, {_fmt(stats['beta'])}) on "
                    f"{_fmt(stats['align_samples'])} samples"
                ),
            ),
            (
                "non-uniformity s",
                f"{_fmt(stats['nonuniformity'])}"
                + (
                    f" on {stats['nonuniformity_samples']} samples"
                    if stats.get("nonuniformity_samples")
                    else ""
                ),
            ),
            (
                "‖H‖_F bound 1/(η√(c_B μ))",
                f"{_fmt(stats['alignment_bound'])}: "
                + (
                    "-"
                    if stats["alignment_bound_holds"] is None
                    else (
                        "holds (necessary for SGD stability, not sufficient)"
                        if stats["alignment_bound_holds"]
                        else "violated: SGD escapes (Theorem 4)"
                    )
                ),
            ),
            ("γ_0 = η²μ‖H‖_F²/B", _fmt(stats["gamma_0"])),
        ]
    output.table(
        f"Start: {s['params']} parameters, {s['samples']} samples, loss {s['loss']}, lr "
        f"{s['lr']:g}, "
        f"B {s['batch_size']}",
        ["quantity", "value"],
        rows,
    )
    cols = ["dynamics", "escaped", "median step", "growth / step", "theory", "final mean loss",
            "traj x steps / s"]
    body = []
    for name, sm in summaries.items():
        growth = (
            "-" if sm.growth_rate is None else f"{sm.growth_rate:.4g} ± {sm.growth_rate_stderr:.2g}"
        )
        body.append(
            (
                name,
                f"{sm.escaped}/{sm.trajectories} ({100 * sm.fraction_escaped:.0f}%)",
                _fmt(sm.median_step)
                if sm.median_step is not None
                else (
                    f"- (escaped: {_fmt(sm.median_step_escaped)})"
                    if sm.median_step_escaped is not None
                    else "-"
                ),
                growth,
                _fmt(sm.predicted_growth),
                _fmt(sm.final_mean_loss),
                f"{sm.trajectory_steps_per_second:.0f}",
            )
        )
    output.table(
        f"Escape: {s['trajectories']} trajectories x {s['steps']} steps, escape = loss > "
        f"{s['escape_factor']:g} x start",
        cols,
        body,
        caption="growth: per-step factor of the mean loss in its exponential phase; theory: the "
        "lecture's factor (sgd: γ_0 of Theorem 4, a lower bound, informative when > 1); "
        f"gd is computed once; {report['seconds']:.1f} s",
    )
