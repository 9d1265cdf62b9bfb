"""``landscape train``: train a registry model on a registry dataset with any optimizer of
:mod:`landscape.optim`, tracking curvature metrics every K steps, into a run directory
(``run.h5``, checkpoints, ``run.png``); ``--resume RUN`` continues it exactly."""

from __future__ import annotations

import os
import signal
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer

from ..errors import ConfigError
from ..train.tracking import TRACKERS
from . import output
from .common import KV, join, parse_kv
from .options import DebugOpt, DeviceOpt, DtypeOpt, JsonOpt, ProgressOpt

#: options that may accompany --resume (the stopping rule and output switches)
_RESUMABLE = {"resume", "epochs", "steps", "until_loss", "json_", "debug", "progress", "ctx"}

#: dedicated hyperparameter flags -> the optimizer's keyword (docs/algorithms.md §3)
_HYPER_FLAGS = {"rho": "rho", "eta_a": "eta_a", "gamma": "gamma", "eta_f": "eta_f",
                "delta": "delta", "beta": "beta", "sigma0": "prior_std",
                "small_batch": "small_batch"}


def _given(ctx: typer.Context, name: str) -> bool:
    """Whether option ``name`` was given (command line or environment), not defaulted."""
    source = ctx.get_parameter_source(name)
    return source is not None and getattr(source, "name", "") not in ("DEFAULT", "DEFAULT_MAP")


@output.handle_errors
def train(
    ctx: typer.Context,
    model: Annotated[
        str,
        typer.Option(
            "--model", help="Model: mlp, cnn, resnet, two-layer, linear, or FILE.py:FUNCTION."
        ),
    ] = "mlp",
    model_arg: Annotated[
        KV,
        typer.Option(
            "--model-arg",
            help="Model option key=value (repeatable; JSON values, e.g. widths=[128,128]). "
                 "in_dim/out_dim/num_classes/in_channels come from the data unless given.",
        ),
    ] = None,
    data: Annotated[
        str,
        typer.Option(
            "--data",
            help="Dataset: digits, gaussian-mixture, teacher-student, parity, file, mnist, ... or "
                 "FILE.py:FUNCTION.",
        ),
    ] = "digits",
    data_arg: Annotated[
        KV,
        typer.Option(
            "--data-arg",
            help="Dataset option key=value (repeatable; e.g. image=true, n_train=512).",
        ),
    ] = None,
    loss: Annotated[
        str | None,
        typer.Option(
            "--loss",
            help="cross-entropy or mse (½‖f−y‖² per sample; on one-hot labels for a "
                 "classification dataset); default from the data: cross-entropy for "
                 "classification, mse for regression.",
        ),
    ] = None,
    optimizer: Annotated[
        str,
        typer.Option(
            "--optimizer",
            "-o",
            help="gd (full batch), sgd (minibatch), sam, asam, fsam, sgd-tracer, adam-tracer, "
                 "rsam, mfvi, vsam, lb-diag-noise, lb-full-noise.",
        ),
    ] = "sgd",
    base: Annotated[
        str | None, typer.Option("--base", help="Base optimizer: sgd (with momentum) or adam.")
    ] = None,
    lr: Annotated[
        float | None,
        typer.Option("--lr", help="Learning rate (default 0.1 for the sgd base, 1e-3 for adam)."),
    ] = None,
    momentum: Annotated[
        float | None, typer.Option("--momentum", help="SGD momentum (default 0.9; 0 for gd).")
    ] = None,
    weight_decay: Annotated[
        float,
        typer.Option("--weight-decay", help="Weight decay, applied once by the base optimizer."),
    ] = 0.0,
    rho: Annotated[
        float | None,
        typer.Option(
            "--rho",
            help="Perturbation radius (sam, asam, rsam, mfvi, vsam) or penalty weight (tracer).",
        ),
    ] = None,
    eta_a: Annotated[
        float | None, typer.Option("--eta-a", help="ASAM offset in T = |θ| + η_a.")
    ] = None,
    gamma: Annotated[float | None, typer.Option("--gamma", help="Fisher SAM radius γ.")] = None,
    eta_f: Annotated[
        float | None, typer.Option("--eta-f", help="Fisher SAM η_f (0 gives SAM).")
    ] = None,
    delta: Annotated[float | None, typer.Option("--delta", help="G-TRACER damping δ.")] = None,
    beta: Annotated[float | None, typer.Option("--beta",
                                               help="G-TRACER smoothing β of f̄.")] = None,
    sigma0: Annotated[
        float | None, typer.Option("--sigma0", help="Prior standard deviation σ₀ (mfvi, vsam).")
    ] = None,
    small_batch: Annotated[
        int | None,
        typer.Option("--small-batch", help="Covariance noise: the small batch M_S to emulate."),
    ] = None,
    opt_arg: Annotated[
        KV,
        typer.Option(
            "--opt-arg",
            help="Any other optimizer or base setting key=value (repeatable; e.g. sigma_lr=0.02, "
                 "noise_fraction=0.5, nesterov=true).",
        ),
    ] = None,
    batch_size: Annotated[
        int,
        typer.Option(
            "--batch-size", help="Minibatch size (gd always uses the whole training set)."
        ),
    ] = 128,
    epochs: Annotated[
        int | None,
        typer.Option(
            "--epochs", help="Epochs to train (gd: one step per epoch). Default 10 unless --steps."
        ),
    ] = None,
    steps: Annotated[
        int | None, typer.Option("--steps", help="Optimizer steps to train (instead of --epochs).")
    ] = None,
    until_loss: Annotated[
        float | None,
        typer.Option(
            "--until-loss",
            help="Stop earlier once the full training loss is below this (checked at each "
                 "evaluation).",
        ),
    ] = None,
    track: Annotated[
        list[str] | None,
        typer.Option(
            "--track",
            help="Metrics tracked every --every steps, comma-separated or repeated: "
                 f"{', '.join(TRACKERS)}.",
        ),
    ] = None,
    every: Annotated[
        int, typer.Option("--every", help="Track every K steps (and at the end).")
    ] = 100,
    track_samples: Annotated[
        int,
        typer.Option(
            "--track-samples", help="Seeded subset of training samples used for tracking (0: all)."
        ),
    ] = 1024,
    probes: Annotated[
        int,
        typer.Option(
            "--probes", help="Random probes per trace / Frobenius estimate when tracking."
        ),
    ] = 20,
    track_batch_size: Annotated[
        int,
        typer.Option(
            "--track-batch-size",
            help="Samples per Hessian-product batch when tracking (memory only).",
        ),
    ] = 512,
    track_arg: Annotated[
        KV,
        typer.Option(
            "--track-arg",
            help="Tracking estimator setting key=value (method=hutchpp, tol=1e-4, top_k=3, "
                 "runs=5, steps=40, noise_samples=256: a seeded subset for nonuniformity and mu).",
        ),
    ] = None,
    eval_every: Annotated[
        int | None,
        typer.Option(
            "--eval-every",
            help="Evaluate full train/test loss and accuracy every K steps (default once an "
                 "epoch, at most 500 times).",
        ),
    ] = None,
    checkpoint_every: Annotated[
        int | None,
        typer.Option("--checkpoint-every", help="Also write RUN/step-XXXXXX.pt every K steps."),
    ] = None,
    seed: Annotated[
        int,
        typer.Option(
            "--seed",
            help="Seed of the initial weights, the data order, the optimizer's draws and the "
                 "tracking probes.",
        ),
    ] = 0,
    device: DeviceOpt = "cpu",
    dtype: DtypeOpt = "float32",
    out: Annotated[
        Path | None,
        typer.Option(
            "--out", help="Run directory: run.h5, final.pt, step-*.pt, state.pt, run.png."
        ),
    ] = None,
    resume: Annotated[
        Path | None,
        typer.Option(
            "--resume",
            help="Continue the run in this directory from its latest state (with --epochs/--steps "
                 "to train a finished run longer).",
        ),
    ] = None,
    force: Annotated[
        bool,
        typer.Option(
            "--force", help="Start again in --out even if it holds a run (its files are removed)."
        ),
    ] = False,
    plot: Annotated[bool, typer.Option("--plot/--no-plot", help="Write RUN/run.png.")] = True,
    progress: ProgressOpt = True,
    json_: JsonOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Train with tracked curvature metrics into a run directory; --resume continues a run."""
    args = dict(locals())
    join(device)
    from ..train import TrainConfig
    from ..train import resume as resume_run
    from ..train import train as train_run

    if resume is not None:
        given = sorted(name for name in ctx.params if name not in _RESUMABLE and _given(ctx, name))
        if given:
            flags = ", ".join("--" + g.rstrip("_").replace("_", "-") for g in given)
            raise ConfigError(
                f"--resume continues a run with its recorded settings; {flags} cannot change",
                "only --epochs, --steps and --until-loss may be given with --resume",
            )
        run_dir = resume
        with _Progress(progress) as bar, _aborted(run_dir):
            result = resume_run(resume, epochs=epochs, steps=steps, until_loss=until_loss,
                                handle_signals=True, progress=bar)
    else:
        if out is None:
            raise ConfigError("no run directory given", "pass --out RUN_DIR (or --resume RUN_DIR)")
        output.check_writable(folder=out)  # a run that cannot be saved is refused before training
        hyper = {key: v for flag, key in _HYPER_FLAGS.items() if (v := args[flag]) is not None}
        extra = parse_kv(opt_arg, "--opt-arg")
        clash = sorted(set(extra) & set(hyper))
        if clash:
            raise ConfigError(f"{clash[0]} was given twice (a flag and --opt-arg)", "give it once")
        hyper.update(extra)
        cfg = TrainConfig(
            model=model, model_kwargs=parse_kv(model_arg, "--model-arg"), data=data,
            data_kwargs=parse_kv(data_arg, "--data-arg"), loss=loss, optimizer=optimizer,
            base=base, lr=lr, momentum=momentum, weight_decay=weight_decay, hyper=hyper,
            batch_size=batch_size, epochs=epochs, steps=steps, until_loss=until_loss, seed=seed,
            device=device, dtype=dtype, track=track or [], every=every,
            track_samples=track_samples or None, probes=probes, track_batch_size=track_batch_size,
            track_options=parse_kv(track_arg, "--track-arg"), eval_every=eval_every,
            checkpoint_every=checkpoint_every, plot=plot)
        run_dir = out
        with _Progress(progress) as bar, _aborted(run_dir):
            result = train_run(cfg, out, force=force, handle_signals=True, progress=bar)

    report = result.to_dict()
    if result.status == "already-finished":
        _line(f"{run_dir} already holds a finished run (step {result.step}): nothing to do "
              f"(--force starts it again; --resume {run_dir} --epochs N trains it longer)")
    if json_:
        output.emit_json(report)
    elif result.status != "already-finished":
        _table(result)
    if result.status == "interrupted":
        name = signal.Signals(result.signum).name if result.signum else "stop"
        _line(f"interrupted ({name}) at step {result.step} of {result.total_steps}: state saved; "
              f"resume with: landscape train --resume {run_dir}")
        raise typer.Exit(128 + (result.signum or 2))


@contextmanager
def _aborted(run_dir: Path):
    """A second Ctrl-C aborts at once: say where the last saved state is, exit 130."""
    try:
        yield
    except KeyboardInterrupt:
        _line(
            "aborted; the last saved state can be continued with: landscape train --resume "
            f"{run_dir}"
        )
        raise typer.Exit(130) from None


def _line(msg: str) -> None:
    """One unwrapped line on stderr."""
    output.stderr.print(msg, highlight=False, soft_wrap=True)


def _table(result) -> None:
    rows = []
    for k, v in result.final.items():
        if k in ("step", "epoch") or k.endswith("_seconds") or v is None:
            continue
        if k.endswith(("_stderr", "_residual")):
            continue
        se, res = result.final.get(f"{k}_stderr"), result.final.get(f"{k}_residual")
        note = (
            f"± {se:.2g}" if se is not None else (f"residual {res:.2g}" if res is not None else "")
        )
        rows.append((k, f"{v:.6g}", note))
    s = result.seconds
    caption = (
        f"{result.status} at step {result.step} (epoch {result.epoch:.4g}); train "
        f"{s.get('train', 0):.1f} s, "
        f"tracking {s.get('track', 0):.1f} s, evaluation {s.get('eval', 0):.1f} s, wall "
        f"{s.get('wall', 0):.1f} s"
    )
    output.table(f"run {result.path}", ["quantity", "final", "± stderr / note"], rows,
                 caption=caption)


class _Progress:
    """A rich progress bar on stderr with the current loss and the last tracked metric."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled and (
            output.stderr.is_terminal or bool(os.environ.get("LANDSCAPE_PROGRESS"))
        )
        self.bar = None
        self.task = None

    def __enter__(self):
        if not self.enabled:
            return None
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.bar = Progress(TextColumn("train"), BarColumn(), MofNCompleteColumn(),
                            TimeElapsedColumn(), TimeRemainingColumn(),
                            TextColumn("{task.fields[info]}"), console=output.stderr,
                            transient=True)
        self.bar.__enter__()
        return self

    def __call__(self, event: dict) -> None:
        if self.task is None:
            self.task = self.bar.add_task("train", total=event["total"],
                                          completed=event["step"] - 1, info="")
        info = f"loss {event['loss']:.4g}"
        if event.get("metric"):
            name, value = event["metric"]
            info += f"  {name} {value:.4g}"
        self.bar.update(self.task, completed=event["step"], total=event["total"], info=info)

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.__exit__(*exc)
