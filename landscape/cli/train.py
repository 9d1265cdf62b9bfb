"""``landscape train``: train a registry model on a registry dataset with any optimizer of
:mod:`landscape.optim`, tracking curvature metrics every K steps, into a run directory
(``run.h5``, checkpoints, ``run.png``); ``--resume RUN`` continues it exactly."""

from __future__ import annotations

import signal
from functools import partial
from typing import Annotated

import typer

from ..errors import ConfigError
from ..train.settings import HYPER, TRAIN
from ..train.tracking import TRACKERS
from . import output
from .common import declared_options, join, parse_kv
from .options import (
    DataArgOpt,
    DebugOpt,
    DeviceOpt,
    DtypeOpt,
    JsonOpt,
    ModelArgOpt,
    ProgressOpt,
    kv_option,
    names_option,
    path_option,
    switch,
)

#: options that may accompany --resume (the stopping rule and output switches)
_RESUMABLE = {"resume", "epochs", "steps", "until_loss", "json_", "debug", "progress", "ctx"}


def _given(ctx: typer.Context, name: str) -> bool:
    """Whether option ``name`` was given (command line or environment), not defaulted."""
    source = ctx.get_parameter_source(name)
    return source is not None and getattr(source, "name", "") not in ("DEFAULT", "DEFAULT_MAP")


@output.handle_errors
@declared_options({**TRAIN, **HYPER})
def train(
    ctx: typer.Context,
    settings: dict | None = None,
    model_arg: ModelArgOpt = None,
    data_arg: DataArgOpt = None,
    opt_arg: kv_option("--opt-arg", "Any other optimizer or base setting, e.g. sigma_lr=0.02, "
                                    "noise_fraction=0.5, nesterov=true") = None,
    track: names_option("--track", f"Metrics tracked every --every steps: {', '.join(TRACKERS)}")
    = None,
    track_arg: kv_option("--track-arg", "Tracking estimator setting: method=hutchpp, tol=1e-4, "
                                        "top_k=3, runs=5, steps=40, noise_samples=256 (a seeded "
                                        "subset for nonuniformity and mu)") = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the initial weights, the data "
                                      "order, the optimizer's draws and the tracking probes.")] = 0,
    device: DeviceOpt = "cpu",
    dtype: DtypeOpt = "float32",
    out: path_option("--out", "Run directory: run.h5, final.pt, step-*.pt, state.pt, run.png.")
    = None,
    resume: path_option("--resume", "Continue the run in this directory from its latest state "
                                    "(with --epochs/--steps to train a finished run longer).")
    = None,
    force: switch("--force", "Start again in --out even if it holds a run (its files are "
                             "removed).") = False,
    plot: switch("--plot/--no-plot", "Write RUN/run.png.") = True,
    progress: ProgressOpt = True,
    json_: JsonOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Train with tracked curvature metrics into a run directory; --resume continues a run."""
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
        run = partial(resume_run, resume, epochs=settings["epochs"], steps=settings["steps"],
                      until_loss=settings["until_loss"])
    else:
        if out is None:
            raise ConfigError("no run directory given", "pass --out RUN_DIR (or --resume RUN_DIR)")
        output.check_writable(folder=out)  # a run that cannot be saved is refused before training
        cfg = TrainConfig.from_flags(
            settings, opt_kwargs=parse_kv(opt_arg, "--opt-arg"),
            model_kwargs=parse_kv(model_arg, "--model-arg"),
            data_kwargs=parse_kv(data_arg, "--data-arg"), seed=seed, device=device, dtype=dtype,
            track=track or [], track_options=parse_kv(track_arg, "--track-arg"), plot=plot)
        run_dir = out
        run = partial(train_run, cfg, out, force=force)
    hint = f"the last saved state can be continued with: landscape train --resume {run_dir}"
    with output.TrainProgress(progress) as bar, output.aborted(hint):
        result = run(handle_signals=True, progress=bar)

    report = result.to_dict()
    if result.status == "already-finished":
        output.line(f"{run_dir} already holds a finished run (step {result.step}): nothing to do "
                    f"(--force starts it again; --resume {run_dir} --epochs N trains it longer)")
    if json_:
        output.emit_json(report)
    elif result.status != "already-finished":
        output.table(*result.table())
    if result.status == "interrupted":
        name = signal.Signals(result.signum).name if result.signum else "stop"
        output.line(f"interrupted ({name}) at step {result.step} of {result.total_steps}: state "
                    f"saved; resume with: landscape train --resume {run_dir}")
        raise typer.Exit(128 + (result.signum or 2))
