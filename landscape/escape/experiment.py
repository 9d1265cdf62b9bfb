"""The escape experiment (lecture Figure 19; docs/algorithms.md §2) as one library call: full-batch
GD to a minimum (or a checkpoint as it is), the starting point's stability statistics, then many
trajectories of each dynamics from there at the same learning rate, each summarised against the
theory's prediction. ``landscape escape`` and ``scripts/repro_escape.py`` both run it.

>>> from landscape.escape.experiment import EscapeSettings, run_escape, build_problem
>>> problem, identity, lr = build_problem(model="mlp", model_kwargs={"widths": [8]},
...                                       data_kwargs={"n_train": 32}, lr=0.5)
>>> result = run_escape(problem, EscapeSettings(lr=lr, batch_size=2, steps=10, trajectories=4,
...                                             theory=False, max_gd_steps=50, tol=1e-6))
>>> sorted(result.summaries), result.summaries["sgd"].trajectories
(['gd', 'sgd'], 4)
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..results import Table
from ..schema import Option, check, integer, positive

#: The experiment's settings as flags of ``landscape escape`` (declared once; the values of
#: ``align_samples`` and ``s_samples`` follow the flags: 0 is all samples, -1 skips s).
ESCAPE: dict[str, Option] = {
    "batch_size": integer(1, 10, "SGD minibatch size B (drawn without replacement); the noise of "
                                 "the other dynamics is matched to it."),
    "trajectories": integer(1, 200, "Trajectories per dynamics, run together.",
                            flag="--trajectories -T"),
    "steps": integer(1, 300, "Steps of every trajectory."),
    "tol": positive(1e-3, "--from gd: stop GD once the training loss is below this."),
    "max_gd_steps": integer(1, 20000, "--from gd: at most this many GD steps."),
    "eval_samples": integer(1, help="Record the loss on a fixed seeded subset of this many "
                                    "samples (default: all)."),
    "eval_every": integer(1, 1, "Record loss and distance every K steps (and at the end)."),
    "escape_factor": Option("float", 10.0, 1.0, strict=True,
                            help="A trajectory has escaped once its loss exceeds this times its "
                                 "start."),
    "noise_samples": integer(1, help="Per-sample gradients that set each step's noise (isotropic, "
                                     "lb-*): default 64 (lb-full-noise: all)."),
    "control_scale": Option("float", 0.1, 0.0, help="small-noise: SGD's noise times this "
                                                    "(variance times its square)."),
    "track_eig_every": integer(1, help="Also record λ_max of the Hessian every K steps at a few "
                                       "trajectories."),
    "eig_trajectories": integer(1, 3, "How many trajectories --track-eig-every follows."),
    "theory": Option("bool", True, help="Measure the start: λ_max, ‖H‖_F, tr H, μ, s and the "
                                        "predicted growth γ_0."),
    "probes": integer(2, 30, "Probes for ‖H‖_F and tr H at the start."),
    "align_samples": integer(0, 256, "Seeded subset for μ (exact Gram identities, cost ∝ "
                                     "samples²; 0: all)."),
    "s_samples": integer(-1, 128, "Seeded subset for the non-uniformity s (0: all; -1: skip s)."),
    "chunk": integer(1, 1 << 17, "(trajectory, sample) pairs per vectorised call (memory)."),
}

#: Where the experiment starts and on what (the other flags of ``landscape escape``).
START: dict[str, Option] = {
    "start": Option("choice", None, choices=("gd", "checkpoint"), flag="--from",
                    help="gd: first train full-batch GD at --lr until the loss is below --tol; "
                         "checkpoint: start at the checkpoint as it is. Default: checkpoint when "
                         "one is given, else gd."),
    "model": Option("str", help="Without a checkpoint: registry model (mlp, two-layer, ...) or "
                                "FILE.py:FUNCTION (default mlp). With a foreign state_dict: its "
                                "model factory."),
    "data": Option("str", help="Without a checkpoint: registry dataset or FILE.py:FUNCTION "
                               "(default digits). With a foreign state_dict: its data factory."),
    "loss": Option("str", help="cross-entropy or mse (½‖f−y‖² per sample; on one-hot labels for "
                               "a classification dataset); default from the data or checkpoint."),
    "samples": integer(1, help="Train and escape on a seeded subset of this many training "
                               "samples (default all)."),
    "lr": positive(help="Learning rate of GD and of every trajectory (default: the checkpoint's, "
                        "else 0.1)."),
}

Progress = Callable[[str, int | None], Callable[[int], None]]


@dataclass
class EscapeSettings:
    """The experiment's settings (the flags of ``landscape escape``).

    ``start``: ``gd`` (descend at ``lr`` until the loss is below ``tol``) or ``checkpoint`` (the
    point as it is); ``to``: the dynamics run from there; ``trajectories``: per dynamics, one
    number for all or ``{dynamics: T}``; ``align_samples`` / ``s_samples``: seeded subsets for μ
    and the non-uniformity s (None: all); ``trajectory_seed``: the seed of the trajectories'
    randomness (default ``seed``)."""

    to: list[str] = field(default_factory=lambda: ["sgd", "gd"])
    start: str = "gd"
    lr: float = 0.1
    batch_size: int = 10
    trajectories: int | dict[str, int] = 200
    steps: int = 300
    tol: float = 1e-3
    max_gd_steps: int = 20000
    eval_samples: int | None = None
    eval_every: int = 1
    escape_factor: float = 10.0
    noise_samples: int | None = None
    control_scale: float = 0.1
    track_eig_every: int | None = None
    eig_trajectories: int = 3
    theory: bool = True
    probes: int = 30
    align_samples: int | None = 256
    s_samples: int | None = 128
    nonuniformity: bool = True
    chunk: int = 1 << 17
    seed: int = 0
    trajectory_seed: int | None = None

    def check(self, n: int | None = None) -> EscapeSettings:
        """One clear error for a setting out of range (on a problem of ``n`` samples, if given)."""
        from . import DYNAMICS

        for name in self.to:
            if name not in DYNAMICS:
                raise ConfigError(f"unknown --to {name!r}", f"choose from {', '.join(DYNAMICS)}")
        if not self.to:
            raise ConfigError("--to names no dynamics",
                              f"pass e.g. --to sgd,gd (choices: {', '.join(DYNAMICS)})")
        if self.start not in ("gd", "checkpoint"):
            raise ConfigError(f"unknown --from {self.start!r}", "choose gd or checkpoint")
        flags = {**self.__dict__, "align_samples": self.align_samples or None,
                 "s_samples": self.s_samples if self.nonuniformity else -1}
        for key, opt in ESCAPE.items():
            values = flags[key].values() if isinstance(flags[key], dict) else [flags[key]]
            for value in values:
                check(opt, value, opt.flag_for(key))
        if not self.lr > 0 or not math.isfinite(self.lr):
            raise ConfigError(f"--lr must be positive, got {self.lr}", "pass a positive --lr")
        if n is not None and self.batch_size > n:
            raise ConfigError(f"--batch-size {self.batch_size} exceeds the {n} samples",
                              f"pass --batch-size in 1..{n}")
        return self

    @classmethod
    def from_flags(cls, flags: dict, **settings: Any) -> EscapeSettings:
        """Settings from the declared flags (:data:`ESCAPE`) and the rest (``to``, ``start``,
        ``lr``, ``seed``)."""
        flags = dict(flags)
        s_samples, align = flags.pop("s_samples"), flags.pop("align_samples")
        return cls(**flags, **settings, align_samples=align or None,
                   s_samples=s_samples if s_samples > 0 else None, nonuniformity=s_samples >= 0)

    def count(self, dynamics: str) -> int:
        return self.trajectories[dynamics] if isinstance(self.trajectories,
                                                         dict) else self.trajectories


@dataclass
class EscapeResult:
    """What :func:`run_escape` measured: GD's descent (None when started at a checkpoint), the
    starting point's statistics, and per dynamics its trajectories and summary."""

    settings: EscapeSettings
    descent: Any
    stats: dict
    runs: dict
    summaries: dict
    seconds: float

    def report(self, problem, identity: dict) -> dict:
        """The JSON report (``landscape escape --json``)."""
        s, d = self.settings, self.descent
        settings = {"from": s.start, "to": s.to, "lr": s.lr, "batch_size": s.batch_size,
                    "trajectories": s.trajectories, "steps": s.steps,
                    "tol": s.tol if s.start == "gd" else None,
                    "eval_samples": s.eval_samples, "eval_every": s.eval_every,
                    "escape_factor": s.escape_factor,
                    "noise_samples": s.noise_samples, "control_scale": s.control_scale,
                    "track_eig_every": s.track_eig_every, "seed": s.seed, "samples": problem.n,
                    "params": problem.p, "loss": problem.loss.name, "device": str(problem.device),
                    "dtype": str(problem.dtype).replace("torch.", "")}
        return {"identity": identity, "settings": settings,
                "gd": None if d is None else {"steps": d.steps, "loss": d.loss,
                                              "converged": d.converged,
                                              "seconds": d.seconds},
                "start": self.stats, "runs": {k: v.to_dict() for k, v in self.summaries.items()},
                "seconds": self.seconds}

    def tree(self) -> dict:
        """The arrays of the HDF5 file (``landscape escape --out``)."""
        import torch

        from .analysis import escape_steps

        tree: dict = {"start": self.stats, "runs": {}}
        if self.descent is not None:
            tree["gd"] = {"losses": self.descent.losses.numpy(), "steps": self.descent.steps,
                          "converged": self.descent.converged}
        for k, traj in self.runs.items():
            tree["runs"][k] = {**self.summaries[k].to_dict(),
                               "record_steps": traj.record_steps.numpy(),
                               "losses": traj.losses.numpy(), "distances": traj.distances.numpy(),
                               "mean_loss": traj.mean_loss.numpy(),
                               "escape_steps": escape_steps(traj,
                                                            self.settings.escape_factor).numpy(),
                               "seeds": torch.tensor(traj.seeds, dtype=torch.int64).numpy()}
            if traj.eig_steps.numel():
                tree["runs"][k].update(eig_steps=traj.eig_steps.numpy(),
                                       eig_values=traj.eig_values.numpy())
        return tree

    def panels(self) -> list[tuple]:
        """``(record_steps, losses, summary)`` per dynamics, for
        :func:`~landscape.io.escape_figures.escape_figure`."""
        return [(t.record_steps, t.losses, self.summaries[k].to_dict()) for k,
                t in self.runs.items()]

    def save(self, path: Path, report: dict) -> None:
        """The HDF5 file of ``landscape escape --out``: :meth:`tree`, the report's identity,
        settings and time as attributes (atomically)."""
        from ..io.hdf5 import write_tree

        write_tree(path, self.tree(), attrs={"format": "landscape-escape", "version": 1,
                                             "identity": report["identity"],
                                             "settings": report["settings"],
                                             "seconds": report["seconds"]})

    def figure(self, path: Path) -> None:
        """The loss of every trajectory per dynamics (``landscape escape --plot``)."""
        from ..io.escape_figures import save_escape_figure

        s = self.settings
        origin = "GD" if s.start == "gd" else "checkpoint"
        save_escape_figure(self.panels(), path,
                           f"escape from {origin} minimum: lr {s.lr:g}, B {s.batch_size}")

    def tables(self, report: dict) -> list[Table]:
        """The start's statistics beside the theory, and one row per dynamics."""
        return _tables(report, self.stats, self.summaries, self.settings.theory)


def run_escape(problem, settings: EscapeSettings, *, progress: Progress | None = None,
               warn: Callable[[str], None] | None = None) -> EscapeResult:
    """The experiment on ``problem`` from its parameters. ``progress(label, total)`` returns a
    callback advanced by steps; ``warn`` receives the notes a user should see (GD that did not
    converge, a start that is not stable for GD)."""
    from . import descend, eval_subset, simulate, trajectory_seeds
    from .analysis import minimum_stats, predicted_growth, summarize

    s = settings.check(problem.n)
    bar = progress or (lambda label, total: (lambda k: None))
    note = warn or (lambda message: None)
    t0 = time.perf_counter()
    descent = None
    if s.start == "gd":
        descent = descend(problem, problem.theta, s.lr, tol=s.tol, max_steps=s.max_gd_steps,
                          chunk=s.chunk,
                          progress=bar(f"GD at lr {s.lr:g} to loss < {s.tol:g}", None))
        if not descent.converged:
            note(
                f"GD stopped after {descent.steps} steps at loss {descent.loss:.3g} > --tol "
                f"{s.tol:g}; "
                "raise --max-gd-steps or --tol"
            )
        theta = descent.theta
    else:
        theta = problem.theta
        problem.loss_value()  # a NaN or infinite start is refused here, theory or not
    stats: dict = {"loss": None}
    if s.theory:
        stats = minimum_stats(problem, theta, s.lr, s.batch_size, probes=s.probes,
                              align_samples=s.align_samples,
                              s_samples=s.s_samples, seed=s.seed, nonuniformity=s.nonuniformity)
        if not stats["gd_stable"]:
            note(f"λ_max = {stats['lambda_max']:.4g} > 2/η = {2 / s.lr:.4g}: "
                 "the start is not linearly stable for GD, so GD leaves it too")
    ev = eval_subset(problem.n, s.eval_samples, s.seed)
    runs, summaries = {}, {}
    for name in s.to:
        count = s.count(name)
        seeds = trajectory_seeds(s.seed if s.trajectory_seed is None else s.trajectory_seed, count)
        traj = simulate(problem, theta, name, lr=s.lr, batch_size=s.batch_size, steps=s.steps,
                        seeds=seeds,
                        noise_samples=s.noise_samples, control_scale=s.control_scale, eval_idx=ev,
                        eval_every=s.eval_every, track_eig_every=s.track_eig_every,
                        eig_trajectories=s.eig_trajectories, chunk=s.chunk,
                        progress=bar(f"{name}: {count} trajectories", s.steps))
        pred, how = (predicted_growth(name, stats, s.lr, s.batch_size, s.control_scale) if s.theory
                     else (None, None))
        runs[name] = traj
        summaries[name] = summarize(traj, s.escape_factor, pred, how)
    return EscapeResult(s, descent, stats, runs, summaries, round(time.perf_counter() - t0, 4))


def prepare(checkpoint: str | Path | None, flags: dict, *, to: list[str] | None = None,
            model_kwargs: dict | None = None, data_kwargs: dict | None = None, seed: int = 0,
            device: str = "cpu", dtype: str = "float32") -> tuple[Any, dict, EscapeSettings]:
    """``(problem, identity, settings)`` from the flags of ``landscape escape`` (:data:`START`
    and :data:`ESCAPE`), checked before the problem is built."""
    flags = dict(flags)
    where = {k: flags.pop(k) for k in START}
    start = where.pop("start") or ("checkpoint" if checkpoint is not None else "gd")
    if start == "checkpoint" and checkpoint is None:
        raise ConfigError("--from checkpoint needs a checkpoint", "pass CHECKPOINT, or --from gd")
    lr = where.pop("lr")
    settings = EscapeSettings.from_flags(flags, to=["sgd", "gd"] if to is None else to,
                                         start=start, lr=0.1 if lr is None else lr,
                                         seed=seed).check()
    problem, identity, settings.lr = build_problem(
        checkpoint, **where, lr=lr, model_kwargs=model_kwargs, data_kwargs=data_kwargs, seed=seed,
        device=device, dtype=dtype)
    return problem, identity, settings


def build_problem(
    checkpoint: str | Path | None = None,
    *,
    model: str | None = None,
    model_kwargs: dict | None = None,
    data: str | None = None,
    data_kwargs: dict | None = None,
    loss: str | None = None,
    samples: int | None = None,
    lr: float | None = None,
    seed: int = 0,
    device: str = "cpu",
    dtype: str = "float32",
) -> tuple[Any, dict, float]:
    """``(problem, identity, lr)`` of an escape run: a checkpoint's (its recorded learning rate when
    ``lr`` is None), or a new ``model`` (registry name or ``FILE.py:FUNCTION``, default ``mlp``) on
    ``data`` (default ``digits``; ``mse`` on a classification set uses one-hot labels)."""
    from ..losses import get_loss
    from ..problem import Problem

    if checkpoint is not None:
        from ..io.checkpoint import Checkpoint

        if model_kwargs or data_kwargs:
            raise ConfigError(
                "--model-arg/--data-arg build a new model; a checkpoint records its own",
                "drop them, or leave out the checkpoint",
            )
        ckpt = Checkpoint.load(checkpoint, model=model, data=data, loss=loss)
        problem = ckpt.problem(samples=samples, seed=seed, device=device, dtype=dtype)
        if lr is None:
            lr = (
                ckpt.training.get("lr")
                if isinstance(ckpt.training.get("lr"), (int, float))
                else 0.1
            )
        return problem, ckpt.identity(), float(lr)
    from ..data import load_dataset
    from ..models import build_model, model_kwargs_for

    model, data, data_kwargs = model or "mlp", data or "digits", dict(data_kwargs or {})
    split = load_dataset(data, **data_kwargs)
    kwargs = model_kwargs_for(model, split, **dict(model_kwargs or {}))
    net = build_model(model, seed=seed, **kwargs)
    loss_name = get_loss(loss or split.default_loss).name
    train = split.for_loss(loss_name).train  # mse on classes: the lecture's one-hot labels
    problem = Problem(net, loss_name, train, samples=samples, seed=seed, device=device, dtype=dtype)
    identity = {"path": None, "model": model, "model_kwargs": kwargs, "data": data,
                "data_kwargs": data_kwargs,
                "loss": problem.loss.name, "init_seed": seed}
    return problem, identity, float(0.1 if lr is None else lr)


def _fmt(x: Any, digits: int = 4) -> str:
    if x is None:
        return "-"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, float):
        if not math.isfinite(x):
            return str(x)
        return f"{x:.{digits}g}"
    return str(x)


def _tables(report: dict, stats: dict, summaries: dict, theory: bool) -> list[Table]:
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
    start = Table(f"Start: {s['params']} parameters, {s['samples']} samples, loss "
                  f"{s['loss']}, lr {s['lr']:g}, B {s['batch_size']}", ["quantity", "value"], rows)
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
    runs = Table(f"Escape: {s['trajectories']} trajectories x {s['steps']} steps, escape = loss "
                 f"> {s['escape_factor']:g} x start", cols, body,
                 caption="growth: per-step factor of the mean loss in its exponential phase; "
                         "theory: the lecture's factor (sgd: γ_0 of Theorem 4, a lower bound, "
                         f"informative when > 1); gd is computed once; {report['seconds']:.1f} s")
    return [start, runs]


__all__ = ["ESCAPE", "START", "EscapeResult", "EscapeSettings", "build_problem", "prepare",
           "run_escape"]


