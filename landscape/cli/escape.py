"""``landscape escape``: from a minimum found by full-batch GD (or a checkpoint), run many
trajectories of SGD and its noise surrogates at once and measure how fast they leave it, beside
the lecture's stability theory (Figure 19, Theorems 3-4; docs/algorithms.md §2)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated

import typer

from ..errors import ConfigError
from . import output
from .common import KV, Stopwatch
from .options import DebugOpt, DeviceOpt, DtypeOpt, JsonOpt, OutOpt, PlotOpt, SeedOpt


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
        raise ConfigError("--to names no dynamics", f"pass e.g. --to sgd,gd (choices: {', '.join(DYNAMICS)})")
    return names


def _positive(flag: str, value, allow_none: bool = True) -> None:
    if value is None and allow_none:
        return
    if value is None or value <= 0 or (isinstance(value, float) and not math.isfinite(value)):
        raise ConfigError(f"{flag} must be positive, got {value}", f"pass a positive {flag}")


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
def escape(
    checkpoint: Annotated[Path | None, typer.Argument(help="Start from this checkpoint (landscape's format, or a state_dict with --model/--data). Without it: --model on --data, trained by GD.", show_default=False)] = None,
    from_: Annotated[str | None, typer.Option("--from", help="gd: first train full-batch GD at --lr until the loss is below --tol; checkpoint: start at the checkpoint as it is. Default: checkpoint when one is given, else gd.")] = None,
    to: Annotated[list[str] | None, typer.Option("--to", help="Dynamics, comma-separated or repeated: sgd, isotropic, gd, small-noise, lb-diag-noise, lb-full-noise (default sgd,gd).")] = None,
    model: Annotated[str | None, typer.Option("--model", help="Without a checkpoint: registry model (mlp, two-layer, ...) or FILE.py:FUNCTION (default mlp). With a foreign state_dict: its model factory.")] = None,
    model_arg: Annotated[KV, typer.Option("--model-arg", help="Model option key=value (repeatable, JSON values; e.g. widths=[128,128]).")] = None,
    data: Annotated[str | None, typer.Option("--data", help="Without a checkpoint: registry dataset or FILE.py:FUNCTION (default digits). With a foreign state_dict: its data factory.")] = None,
    data_arg: Annotated[KV, typer.Option("--data-arg", help="Dataset option key=value (repeatable; e.g. n_train=256).")] = None,
    loss: Annotated[str | None, typer.Option("--loss", help="cross-entropy or mse (½‖f−y‖² per sample; on one-hot labels for a classification dataset); default from the data or checkpoint.")] = None,
    samples: Annotated[int | None, typer.Option("--samples", help="Train and escape on a seeded subset of this many training samples (default all).")] = None,
    lr: Annotated[float | None, typer.Option("--lr", help="Learning rate of GD and of every trajectory (default: the checkpoint's, else 0.1).")] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", help="SGD minibatch size B (drawn without replacement); the noise of the other dynamics is matched to it.")] = 10,
    trajectories: Annotated[int, typer.Option("--trajectories", "-T", help="Trajectories per dynamics, run together.")] = 200,
    steps: Annotated[int, typer.Option("--steps", help="Steps of every trajectory.")] = 300,
    tol: Annotated[float, typer.Option("--tol", help="--from gd: stop GD once the training loss is below this.")] = 1e-3,
    max_gd_steps: Annotated[int, typer.Option("--max-gd-steps", help="--from gd: at most this many GD steps.")] = 20000,
    eval_samples: Annotated[int | None, typer.Option("--eval-samples", help="Record the loss on a fixed seeded subset of this many samples (default: all).")] = None,
    eval_every: Annotated[int, typer.Option("--eval-every", help="Record loss and distance every K steps (and at the end).")] = 1,
    escape_factor: Annotated[float, typer.Option("--escape-factor", help="A trajectory has escaped once its loss exceeds this times its start.")] = 10.0,
    noise_samples: Annotated[int | None, typer.Option("--noise-samples", help="Per-sample gradients that set each step's noise (isotropic, lb-*): default 64 (lb-full-noise: all).")] = None,
    control_scale: Annotated[float, typer.Option("--control-scale", help="small-noise: SGD's noise times this (variance times its square).")] = 0.1,
    track_eig_every: Annotated[int | None, typer.Option("--track-eig-every", help="Also record λ_max of the Hessian every K steps at a few trajectories.")] = None,
    eig_trajectories: Annotated[int, typer.Option("--eig-trajectories", help="How many trajectories --track-eig-every follows.")] = 3,
    theory: Annotated[bool, typer.Option("--theory/--no-theory", help="Measure the start: λ_max, ‖H‖_F, tr H, μ, s and the predicted growth γ_0.")] = True,
    probes: Annotated[int, typer.Option("--probes", help="Probes for ‖H‖_F and tr H at the start.")] = 30,
    align_samples: Annotated[int, typer.Option("--align-samples", help="Seeded subset for μ (exact Gram identities, cost ∝ samples²; 0: all).")] = 256,
    s_samples: Annotated[int, typer.Option("--s-samples", help="Seeded subset for the non-uniformity s (0: all; -1: skip s).")] = 128,
    chunk: Annotated[int, typer.Option("--chunk", help="(trajectory, sample) pairs per vectorised call (memory).")] = 1 << 17,
    seed: SeedOpt = 0,
    device: DeviceOpt = "cpu",
    dtype: DtypeOpt = "float32",
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="Progress bars on stderr (when it is a terminal).")] = True,
    json_: JsonOpt = False,
    out: OutOpt = None,
    plot: PlotOpt = None,
    debug: DebugOpt = False,
) -> None:
    """Escape from a GD minimum: many SGD (or noise-model) trajectories at once, measured against
    the stability theory (fraction escaped, median escape step, growth rate vs γ_0)."""
    import torch

    from ..escape import descend, eval_subset, simulate, trajectory_seeds
    from ..escape.analysis import escape_steps, minimum_stats, predicted_growth, summarize

    clock = Stopwatch()
    output.check_writable(out, plot)
    names = parse_to(to)
    start_from = from_ or ("checkpoint" if checkpoint is not None else "gd")
    if start_from not in ("gd", "checkpoint"):
        raise ConfigError(f"unknown --from {from_!r}", "choose gd or checkpoint")
    if start_from == "checkpoint" and checkpoint is None:
        raise ConfigError("--from checkpoint needs a checkpoint", "pass CHECKPOINT, or --from gd")
    for flag, v in (("--trajectories", trajectories), ("--steps", steps), ("--batch-size", batch_size),
                    ("--eval-every", eval_every), ("--tol", tol), ("--max-gd-steps", max_gd_steps),
                    ("--probes", probes), ("--chunk", chunk), ("--eig-trajectories", eig_trajectories)):
        _positive(flag, v, allow_none=False)
    _positive("--lr", lr)
    _positive("--samples", samples)
    _positive("--eval-samples", eval_samples)
    _positive("--noise-samples", noise_samples)
    _positive("--track-eig-every", track_eig_every)
    if not escape_factor > 1:
        raise ConfigError(f"--escape-factor must exceed 1, got {escape_factor}", "pass e.g. --escape-factor 10")
    if probes < 2:
        raise ConfigError(f"--probes must be at least 2, got {probes}", "pass e.g. --probes 30")

    problem, identity, lr = _build(checkpoint, model, model_arg, data, data_arg, loss, samples, lr, seed,
                                   device, dtype)
    if batch_size > problem.n:
        raise ConfigError(f"--batch-size {batch_size} exceeds the {problem.n} samples",
                          f"pass --batch-size in 1..{problem.n}")

    with output.progress(progress and not json_) as bar:
        descent = None
        if start_from == "gd":
            descent = descend(problem, problem.theta, lr, tol=tol, max_steps=max_gd_steps, chunk=chunk,
                              progress=bar(f"GD at lr {lr:g} to loss < {tol:g}", None))
            if not descent.converged:
                output.warn(f"GD stopped after {descent.steps} steps at loss "
                            f"{descent.loss:.3g} > --tol {tol:g}; raise --max-gd-steps or --tol")
            theta = descent.theta
        else:
            theta = problem.theta
            problem.loss_value()  # a NaN or infinite start is refused here, theory or not
        stats = {"loss": None}
        if theory:
            stats = minimum_stats(problem, theta, lr, batch_size, probes=probes,
                                  align_samples=align_samples or None, s_samples=s_samples or None,
                                  seed=seed, nonuniformity=s_samples >= 0)
            if not stats["gd_stable"]:
                output.warn(f"λ_max = {stats['lambda_max']:.4g} > 2/η = {2 / lr:.4g}: "
                            "the start is not linearly stable for GD, so GD leaves it too")
        ev = eval_subset(problem.n, eval_samples, seed)
        seeds = trajectory_seeds(seed, trajectories)
        runs, summaries = {}, {}
        for name in names:
            traj = simulate(problem, theta, name, lr=lr, batch_size=batch_size, steps=steps, seeds=seeds,
                            noise_samples=noise_samples, control_scale=control_scale, eval_idx=ev,
                            eval_every=eval_every, track_eig_every=track_eig_every,
                            eig_trajectories=eig_trajectories, chunk=chunk,
                            progress=bar(f"{name}: {trajectories} trajectories", steps))
            pred, how = predicted_growth(name, stats, lr, batch_size, control_scale) if theory else (None, None)
            runs[name] = traj
            summaries[name] = summarize(traj, escape_factor, pred, how)

    settings = {"from": start_from, "to": names, "lr": lr, "batch_size": batch_size, "trajectories": trajectories,
                "steps": steps, "tol": tol if start_from == "gd" else None, "eval_samples": eval_samples,
                "eval_every": eval_every, "escape_factor": escape_factor, "noise_samples": noise_samples,
                "control_scale": control_scale, "track_eig_every": track_eig_every, "seed": seed,
                "samples": problem.n, "params": problem.p, "loss": problem.loss.name, "device": str(problem.device),
                "dtype": str(problem.dtype).replace("torch.", "")}
    report = {"identity": identity, "settings": settings,
              "gd": None if descent is None else {"steps": descent.steps, "loss": descent.loss,
                                                  "converged": descent.converged, "seconds": descent.seconds},
              "start": stats,
              "runs": {k: s.to_dict() for k, s in summaries.items()},
              "seconds": clock()}

    if out is not None:
        from ..io.hdf5 import write_tree

        tree = {"start": stats, "runs": {}}
        if descent is not None:
            tree["gd"] = {"losses": descent.losses.numpy(), "steps": descent.steps, "converged": descent.converged}
        for k, traj in runs.items():
            tree["runs"][k] = {**summaries[k].to_dict(), "record_steps": traj.record_steps.numpy(),
                               "losses": traj.losses.numpy(), "distances": traj.distances.numpy(),
                               "mean_loss": traj.mean_loss.numpy(),
                               "escape_steps": escape_steps(traj, escape_factor).numpy(),
                               "seeds": torch.tensor(traj.seeds, dtype=torch.int64).numpy()}
            if traj.eig_steps.numel():
                tree["runs"][k].update(eig_steps=traj.eig_steps.numpy(), eig_values=traj.eig_values.numpy())
        write_tree(out, tree, attrs={"format": "landscape-escape", "version": 1, "identity": identity,
                                     "settings": settings, "seconds": report["seconds"]})
    if plot is not None:
        from ..io.escape_figures import save_escape_figure

        title = f"escape from {'GD' if start_from == 'gd' else 'checkpoint'} minimum: lr {lr:g}, B {batch_size}"
        save_escape_figure([(runs[k].record_steps, runs[k].losses, summaries[k].to_dict()) for k in names], plot,
                           title)

    if json_:
        output.emit_json(report)
        return
    _tables(report, stats, summaries, theory)
    for path in (out, plot):
        if path is not None:
            output.info(f"wrote {path}")


def _build(checkpoint, model, model_arg, data, data_arg, loss, samples, lr, seed, device, dtype):
    """The problem, its identity, and the learning rate (checkpoint's when not given)."""

    from ..losses import get_loss
    from ..problem import Problem
    from .common import parse_kv

    if checkpoint is not None:
        from ..io.checkpoint import Checkpoint

        if model_arg or data_arg:
            raise ConfigError("--model-arg/--data-arg build a new model; a checkpoint records its own",
                              "drop them, or leave out the checkpoint")
        ckpt = Checkpoint.load(checkpoint, model=model, data=data, loss=loss)
        problem = ckpt.problem(samples=samples, seed=seed, device=device, dtype=dtype)
        if lr is None:
            lr = ckpt.training.get("lr") if isinstance(ckpt.training.get("lr"), (int, float)) else 0.1
        return problem, ckpt.identity(), float(lr)
    from ..data import load_dataset
    from ..models import build_model, model_kwargs_for

    model, data = model or "mlp", data or "digits"
    split = load_dataset(data, **parse_kv(data_arg, "--data-arg"))
    kwargs = model_kwargs_for(model, split, **parse_kv(model_arg, "--model-arg"))
    net = build_model(model, seed=seed, **kwargs)
    loss_name = get_loss(loss or split.default_loss).name
    train = split.for_loss(loss_name).train  # mse on classes: the lecture's one-hot labels
    problem = Problem(net, loss_name, train, samples=samples, seed=seed, device=device, dtype=dtype)
    identity = {"path": None, "model": model, "model_kwargs": kwargs, "data": data,
                "data_kwargs": parse_kv(data_arg, "--data-arg"), "loss": problem.loss.name, "init_seed": seed}
    return problem, identity, float(0.1 if lr is None else lr)


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
            ("λ_max(H) vs 2/η", (f"{_fmt(stats['lambda_max'])} vs {_fmt(stats['two_over_lr'])}: "
             f"{'stable' if stats['gd_stable'] else 'UNSTABLE'} for GD")),
            ("‖H‖_F", f"{_fmt(stats['hessian_frobenius'])} ± {_fmt(stats['hessian_frobenius_stderr'], 2)}"),
            ("tr H", f"{_fmt(stats['hessian_trace'])} ± {_fmt(stats['hessian_trace_stderr'], 2)}"),
            ("μ (α, β)", (f"{_fmt(stats['mu'])} ({_fmt(stats['alpha'])}, {_fmt(stats['beta'])}) on "
             f"{_fmt(stats['align_samples'])} samples")),
            ("non-uniformity s", f"{_fmt(stats['nonuniformity'])}"
             + (f" on {stats['nonuniformity_samples']} samples" if stats.get("nonuniformity_samples") else "")),
            ("‖H‖_F bound 1/(η√(c_B μ))", f"{_fmt(stats['alignment_bound'])}: "
             + ("-" if stats["alignment_bound_holds"] is None else
                ("holds (necessary for SGD stability, not sufficient)" if stats["alignment_bound_holds"]
                 else "violated: SGD escapes (Theorem 4)"))),
            ("γ_0 = η²μ‖H‖_F²/B", _fmt(stats["gamma_0"])),
        ]
    output.table(f"Start: {s['params']} parameters, {s['samples']} samples, loss {s['loss']}, lr {s['lr']:g}, "
                 f"B {s['batch_size']}", ["quantity", "value"], rows)
    cols = ["dynamics", "escaped", "median step", "growth / step", "theory", "final mean loss",
            "traj x steps / s"]
    body = []
    for name, sm in summaries.items():
        growth = "-" if sm.growth_rate is None else f"{sm.growth_rate:.4g} ± {sm.growth_rate_stderr:.2g}"
        body.append((name, f"{sm.escaped}/{sm.trajectories} ({100 * sm.fraction_escaped:.0f}%)",
                     _fmt(sm.median_step) if sm.median_step is not None else
                     (f"- (escaped: {_fmt(sm.median_step_escaped)})" if sm.median_step_escaped is not None else "-"),
                     growth, _fmt(sm.predicted_growth), _fmt(sm.final_mean_loss),
                     f"{sm.trajectory_steps_per_second:.0f}"))
    output.table(f"Escape: {s['trajectories']} trajectories x {s['steps']} steps, escape = loss > "
                 f"{s['escape_factor']:g} x start", cols, body,
                 caption="growth: per-step factor of the mean loss in its exponential phase; theory: the "
                 "lecture's factor (sgd: γ_0 of Theorem 4, a lower bound, informative when > 1); "
                 f"gd is computed once; {report['seconds']:.1f} s")
