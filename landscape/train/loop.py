"""The training loop behind ``landscape train``: any optimizer of :data:`landscape.optim.OPTIMIZERS`
on a registry model and dataset, with evaluation, curvature tracking every K steps, checkpoints, and
exact resume.

Reproducibility: the data order comes from a ``torch.Generator`` seeded with ``seed`` (its state
and the current epoch's permutation are saved), the optimizer's ``state_dict`` holds its base's
moments and its own generator, and the loop runs inside ``torch.random.fork_rng`` with the global
generator seeded by ``seed`` (for dropout-like layers; the caller's RNG state is left alone) and
saved too. A run resumed from ``state.pt`` therefore performs, on CPU, the very same floating
point operations as one never interrupted: same parameters, same series, to the bit.

Interruption: with ``handle_signals=True`` the first SIGINT (Ctrl-C) or SIGTERM asks the loop to
stop after the current step (and its tracking); it then saves ``state.pt``, flushes ``run.h5`` and
returns a result with ``status="interrupted"`` and the signal number. A second Ctrl-C aborts at
once (the last saved state stays valid).

Data parallel (``torchrun --nproc-per-node N -m landscape train ...``): every rank draws the same
minibatch; its loss closure evaluates the shard ``batch[rank::N]``, its part of the global mean
loss (shard sum / global B), and the optimizer's reducer
(:meth:`~landscape.optim.wrapper.SharpnessAware.set_reducer`, with ``shard=slice(rank, None, N)``)
sums gradients and loss over ranks (one flat p-vector all-reduce per pass), so each step uses the
gradient of the mean over the global minibatch. Every optimizer runs so: the TRACERs add one
all-reduce for their Hessian-vector product; the covariance-noise optimizers get the GLOBAL
minibatch as ``batch=`` and compute per-sample terms on ``batch[shard]`` only, summed over ranks.
All generators (data order, noise, perturbations) are seeded alike and consumed alike on every
rank, so all ranks stay identical. Evaluation losses are sums over shards all-reduced; rank 0 alone
writes files. BatchNorm in training mode uses per-shard batch statistics (as DDP without
SyncBatchNorm), its running buffers averaged over ranks after each step.
"""

from __future__ import annotations

import copy
import inspect
import math
import signal
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .. import distributed
from ..data import batch as B
from ..errors import ConfigError, LandscapeError, NumericalError
from ..losses import get_loss
from ..results import Table
from .run import RunDir, Series, plain_state, usual_mode
from .tracking import TRACKERS, parse_track, settings_from, track

#: optimizers that take the whole training set at every step
FULL_BATCH = ("gd",)


@dataclass
class TrainConfig:
    """Everything that defines a run (the CLI flags of the same names).

    ``lr`` / ``momentum`` ``None``: the optimizer's defaults (:data:`landscape.optim.BASE_DEFAULTS`;
    momentum 0 for ``gd``). ``hyper``: the optimizer's own settings (``rho``, ``eta_a``, ...);
    ``num_data`` (mfvi, vsam), ``total_steps`` (covariance noise) and ``loss_fn`` are filled in.
    Stopping: ``steps``, else ``epochs`` (``gd``: one step per epoch; default 10 epochs), and
    earlier when the full training loss falls below ``until_loss`` (checked at evaluations).
    ``every``: tracking period in steps; ``eval_every``: evaluation period (default: once an epoch,
    at most 500 evaluations); ``checkpoint_every``: also write ``step-XXXXXX.pt`` checkpoints."""

    model: str = "mlp"
    model_kwargs: dict = field(default_factory=dict)
    data: str = "digits"
    data_kwargs: dict = field(default_factory=dict)
    loss: str | None = None
    optimizer: str = "sgd"
    base: str | None = None
    lr: float | None = None
    momentum: float | None = None
    weight_decay: float = 0.0
    hyper: dict = field(default_factory=dict)
    batch_size: int = 128
    accumulate: int = 1
    autocast: str | None = None
    epochs: int | None = None
    steps: int | None = None
    until_loss: float | None = None
    seed: int = 0
    device: str = "cpu"
    dtype: str = "float32"
    track: list = field(default_factory=list)
    every: int = 100
    track_samples: int | None = 1024
    probes: int = 20
    track_batch_size: int = 512
    track_options: dict = field(default_factory=dict)
    eval_every: int | None = None
    checkpoint_every: int | None = None
    plot: bool = True

    def to_dict(self) -> dict:
        return copy.deepcopy(asdict(self))

    @classmethod
    def from_flags(cls, flags: dict, *, opt_kwargs: dict | None = None, **rest: Any) -> TrainConfig:
        """A run from the declared flags of ``landscape train`` (:data:`~.settings.TRAIN` and
        :data:`~.settings.HYPER`, the latter into ``hyper``), further optimizer settings
        ``opt_kwargs`` (``--opt-arg``; a setting given both ways is refused) and the other fields
        ``rest``."""
        from .settings import HYPER, HYPER_KEYWORDS

        s = dict(flags)
        hyper = {HYPER_KEYWORDS.get(k, k): v for k in HYPER if (v := s.pop(k)) is not None}
        clash = sorted(set(opt_kwargs or {}) & set(hyper))
        if clash:
            raise ConfigError(f"{clash[0]} was given twice (a flag and --opt-arg)", "give it once")
        s["track_samples"] = s["track_samples"] or None  # 0: every sample
        return cls(**s, **rest, hyper={**hyper, **(opt_kwargs or {})})

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})

    def validate(self) -> None:
        self.track = parse_track(self.track)
        from ..schema import check
        from .settings import TRAIN

        for key, opt in TRAIN.items():  # the flags' declared bounds (track_samples None: all)
            check(opt, getattr(self, key), opt.flag_for(key))
        if self.epochs is not None and self.steps is not None:
            raise ConfigError("both --epochs and --steps were given", "pass only one of them")
        if self.momentum is not None and self.momentum >= 1:
            warnings.warn(
                f"--momentum {self.momentum} >= 1: heavy-ball SGD does not converge (its velocity "
                "grows without bound on a quadratic)",
                RuntimeWarning,
                stacklevel=2,
            )
        if self.dtype not in ("float32", "float64"):
            raise ConfigError(f"unknown dtype {self.dtype!r}", "choose float32 or float64")


@dataclass
class RunResult:
    """What a call of :func:`train` / :func:`resume` did. ``status``: ``finished``,
    ``interrupted`` (``signum`` set for a signal) or ``already-finished`` (nothing to do)."""

    path: Path
    status: str
    step: int
    epoch: float
    total_steps: int
    stop_reason: str | None = None
    signum: int | None = None
    final: dict = field(default_factory=dict)
    seconds: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["path"] = str(self.path)
        return d

    def table(self) -> Table:
        """The final tracked values with their standard errors (or residuals) and the times."""
        rows = []
        for k, v in self.final.items():
            if k in ("step", "epoch") or k.endswith(("_seconds", "_stderr", "_residual")) \
                    or v is None:
                continue
            se, res = self.final.get(f"{k}_stderr"), self.final.get(f"{k}_residual")
            note = f"± {se:.2g}" if se is not None else (
                f"residual {res:.2g}" if res is not None else "")
            rows.append((k, f"{v:.6g}", note))
        s = self.seconds
        caption = (f"{self.status} at step {self.step} (epoch {self.epoch:.4g}); train "
                   f"{s.get('train', 0):.1f} s, tracking {s.get('track', 0):.1f} s, evaluation "
                   f"{s.get('eval', 0):.1f} s, wall {s.get('wall', 0):.1f} s")
        return Table(f"run {self.path}", ["quantity", "final", "± stderr / note"], rows, caption)


class StopRequest:
    """Graceful stop on SIGINT / SIGTERM: the first signal sets ``signum`` (the loop stops after
    the current step), a second one raises ``KeyboardInterrupt`` at once."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.signum: int | None = None
        self._old: dict = {}

    def handler(self, signum: int, frame: Any = None) -> None:
        if self.signum is not None:
            raise KeyboardInterrupt
        self.signum = int(signum)

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for s in self.SIGNALS:
            self._old[s] = signal.signal(s, self.handler)

    def restore(self) -> None:
        for s, old in self._old.items():
            signal.signal(s, old)
        self._old = {}


# ------------------------------------------------------------------------ building blocks
def evaluate(model: nn.Module, loss, pair: tuple[torch.Tensor, torch.Tensor],
             classes: bool | None = None,
             batch_size: int = 1024) -> tuple[float, float | None]:
    """``(L, accuracy)`` on all of ``pair`` in eval mode (BatchNorm running statistics), with
    exact weights ``L = (1/n) Σ_i l_i``. Accuracy (else None) when ``classes``: the targets are
    class labels, or one-hot rows (mse on classes) compared by argmax; ``None``: integer targets."""
    x, y = pair
    if distributed.active():  # this rank's shard; the sums are all-reduced below
        shard = slice(distributed.rank(), None, distributed.world_size())
        x, y = B.rows(x, shard), y[shard]
    was = model.training
    model.eval()
    loss = replace(loss, scale=1.0)  # token losses: divided by the counted tokens below
    sums = torch.zeros(3, dtype=torch.float64, device=y.device)  # loss, correct, counted
    if classes is None:
        classes = not y.is_floating_point()
    classes = classes or loss.per_token
    labels = y.argmax(-1) if classes and y.is_floating_point() else y
    try:
        with torch.no_grad():
            for i in range(0, B.size(x), batch_size):
                out = B.call(model, B.rows(x, slice(i, i + batch_size)))
                yb, lb = y[i:i + batch_size], labels[i:i + batch_size]
                hits = loss.correct(out, lb) if loss.per_token else (out.argmax(-1) == lb).sum()
                sums += torch.stack([loss.sum(out, yb).double(),
                                     hits.double() if classes else sums.new_zeros(()),
                                     loss.counted(yb).to(sums)])
    finally:
        model.train(was)
    if distributed.active():
        sums = distributed.all_reduce_(sums)
    return float(sums[0] / sums[2]), (float(sums[1] / sums[2]) if classes else None)


class _Session:
    """The built pieces of one run: data, model, loss, optimizer and counters."""

    def __init__(self, cfg: TrainConfig, rundir: RunDir) -> None:
        from ..data import load_dataset
        from ..data.split import to_tensors
        from ..io.checkpoint import normalize_loss
        from ..models import build_model, model_kwargs_for
        from ..optim import build_optimizer, hyperparameters
        from ..problem import resolve_device, resolve_dtype

        cfg.validate()
        self.cfg, self.rundir = cfg, rundir
        self.device = resolve_device(cfg.device)
        self.dtype = resolve_dtype(cfg.dtype)
        self.split = load_dataset(cfg.data, **cfg.data_kwargs)
        self.loss_name = normalize_loss(cfg.loss) if cfg.loss else self.split.default_loss
        self.loss = get_loss(self.loss_name)
        self.model_kwargs = model_kwargs_for(cfg.model, self.split, **cfg.model_kwargs)
        model = build_model(cfg.model, seed=cfg.seed, **self.model_kwargs)
        self.model = model.to(device=self.device, dtype=self.dtype).train()

        targets = self.split.for_loss(self.loss_name)  # one-hot labels for mse on classes
        # training draws random minibatches of the whole set: it holds it (a streamed part is read
        # once)
        self.train_pair = self._to_device(to_tensors(targets.train))
        self.test_pair = (
            self._to_device(to_tensors(targets.test)) if targets.test is not None else None
        )
        self.classes = self.split.task in ("classification", "tokens")
        self._check_fit()
        self.n = B.size(self.train_pair[0])
        if self.loss.per_token:  # minibatch losses estimate the mean over all training tokens
            tokens = int(self.loss.counted(self.train_pair[1]))
            self.loss = replace(self.loss, scale=self.n / max(tokens, 1))
        self.full_batch = cfg.optimizer.lower() in FULL_BATCH
        self.batch_size = self.n if self.full_batch else min(cfg.batch_size, self.n)
        self.steps_per_epoch = 1 if self.full_batch else math.ceil(self.n / self.batch_size)
        self.total_steps = (
            cfg.steps if cfg.steps is not None else (cfg.epochs or 10) * self.steps_per_epoch
        )
        if cfg.eval_every is None:
            cfg.eval_every = max(self.steps_per_epoch, math.ceil(self.total_steps / 500))

        own = hyperparameters(cfg.optimizer)
        hyper = dict(cfg.hyper)
        if "num_data" in own and "num_data" not in hyper:
            hyper["num_data"] = self.n
        if "total_steps" in own and "total_steps" not in hyper and "noise_steps" not in hyper:
            hyper["total_steps"] = self.total_steps
        if "loss_fn" in own and "loss_fn" not in hyper:
            hyper["loss_fn"] = self.loss_name
        cfg.hyper = hyper  # resolved once: an extended run keeps them
        self.optimizer = build_optimizer(cfg.optimizer, self.model.parameters(), base=cfg.base,
                                         lr=cfg.lr,
                                         momentum=cfg.momentum, weight_decay=cfg.weight_decay,
                                         model=self.model, seed=cfg.seed, **hyper)
        self._step_takes_batch = "batch" in inspect.signature(self.optimizer.step).parameters
        if cfg.accumulate > 1 and getattr(self.optimizer, "needs_graph", False):
            raise ConfigError(f"--accumulate is not available for {cfg.optimizer}: its exact "
                              "Hessian-vector product needs the whole minibatch's graph at once",
                              "drop --accumulate (or lower --batch-size to fit the memory)")
        self.world, self.rank = distributed.world_size(), distributed.rank()
        self.shard = slice(self.rank, None, self.world)  # this rank's rows of every minibatch
        if self.world > 1:
            if self.batch_size < self.world:
                raise ConfigError(
                    f"the batch of {self.batch_size} cannot be shared by {self.world} processes",
                    f"pass --batch-size {self.world} or more",
                )
            self.optimizer.set_reducer(distributed.all_reduce_, self.shard)
        group = self.optimizer.param_groups[0]
        self.lr = float(group["lr"])
        self.momentum = group.get("momentum")

        # counters and state
        self.step = 0
        self.pos = 0  # batches done in the current epoch
        self.perm: torch.Tensor | None = None
        self.data_rng = torch.Generator().manual_seed(cfg.seed)
        self.series = Series()
        self.timers = {"wall": 0.0, "train": 0.0, "eval": 0.0, "track": 0.0}
        self.status = "running"
        self.stop_reason: str | None = None
        #: the last step's update θ_t − θ_{t−1}, one tensor per parameter (None before a step)
        self._update: list[torch.Tensor] | None = None
        #: what trackers keep between tracked steps (top-overlap: the last eigenvectors)
        self.track_memory: dict = {}

    def _to_device(self, pair):
        def move(t: torch.Tensor) -> torch.Tensor:
            return t.to(self.device, self.dtype if t.is_floating_point() else t.dtype)

        x, y = pair
        return B.apply(x, move), move(y)

    def _check_fit(self) -> None:
        x, y = self.train_pair
        was = self.model.training
        self.model.eval()
        try:
            with torch.no_grad():
                out = B.call(self.model, B.rows(x, slice(0, 2)))
        except (RuntimeError, TypeError, ValueError) as e:
            shapes = B.apply(x, lambda t: tuple(t.shape[1:]))
            raise ConfigError(
                f"model {self.cfg.model!r} cannot take inputs of shape {shapes}: "
                f"{str(e).splitlines()[0]}",
                "check --model-arg against the data",
            ) from e
        finally:
            self.model.train(was)
        self.loss.check(out, y[:2])

    # -------------------------------------------------------------------- state
    def settings(self) -> dict:
        """The run's settings, resolved (what run.h5 records as attributes)."""
        d = self.cfg.to_dict()
        d.update(model_kwargs=self.model_kwargs, loss=self.loss_name, lr=self.lr,
                 momentum=self.momentum,
                 batch_size=self.batch_size, total_steps=self.total_steps,
                 steps_per_epoch=self.steps_per_epoch, n_train=self.n,
                 n_test=0 if self.test_pair is None else int(self.test_pair[0].shape[0]),
                 params=sum(p.numel() for p in self.model.parameters()),
                 passes_per_step=float(self.optimizer.passes_per_step),
                 base=self.cfg.base or type(self.optimizer.base).__name__.lower())
        return d

    def state(self) -> dict:
        return {
            "config": self.cfg.to_dict(),
            "status": self.status,
            "stop_reason": self.stop_reason,
            "step": self.step,
            "pos": self.pos,
            "perm": None if self.perm is None else self.perm.clone(),
            "data_rng": self.data_rng.get_state(),
            "global_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state(self.device)
            if self.device.type == "cuda"
            else None,
            "model": plain_state(self.model.state_dict()),
            "optimizer": plain_state(self.optimizer.state_dict()),
            "series": self.series.to_state(),
            "timers": dict(self.timers),
            "update": plain_state(self.update()),
            "track_memory": plain_state(self.track_memory),
        }

    def update(self) -> dict[str, torch.Tensor] | None:
        """The last step's update ``θ_t − θ_{t−1}`` by parameter name (None before a step):
        what ``update-curvature`` measures, stored in checkpoints and the run state."""
        if self._update is None:
            return None
        return {n: u for (n, _), u in zip(self.model.named_parameters(), self._update)}

    def load(self, state: dict) -> None:
        try:
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.data_rng.set_state(state["data_rng"])
        except (KeyError, RuntimeError, ValueError, TypeError) as e:
            raise LandscapeError(
                f"the run state in {self.rundir.state} does not fit this run "
                f"({str(e).splitlines()[0][:120] if str(e) else type(e).__name__})",
                "start the run again with --force",
            ) from e
        self.step, self.pos = int(state["step"]), int(state["pos"])
        self.perm = state.get("perm")
        self.series = Series.from_state(state["series"])
        self.timers = {k: float(v) for k, v in state["timers"].items()}
        self.status = state.get("status", "running")
        self.stop_reason = state.get("stop_reason")
        self.track_memory = dict(state.get("track_memory") or {})
        update = state.get("update")
        if update is not None:
            self._update = [update[n].to(self.device, p.dtype).clone()
                            for n, p in self.model.named_parameters()]

    @property
    def epoch(self) -> float:
        return self.step / self.steps_per_epoch

    def status_attrs(self) -> dict:
        return {"status": self.status, "step": self.step, "epoch": self.epoch,
                "stop_reason": self.stop_reason}

    # -------------------------------------------------------------------- one step
    def batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = self.train_pair
        if self.full_batch:
            return x, y
        if self.pos == 0 or self.perm is None:
            self.perm = torch.randperm(self.n, generator=self.data_rng)
        idx = self.perm[self.pos * self.batch_size:(self.pos + 1) * self.batch_size].to(self.device)
        return B.rows(x, idx), y[idx]

    def train_step(self) -> float:
        xb, yb = self.batch()
        closure = self._sharded_closure(xb, yb)
        params = [p.detach() for p in self.model.parameters()]
        if self._update is None:
            self._update = [p.clone() for p in params]
        else:
            torch._foreach_copy_(self._update, params)
        if self._step_takes_batch:  # the global minibatch: the optimizer takes its shard itself
            value = self.optimizer.step(closure, batch=(xb, yb))
        else:
            value = self.optimizer.step(closure)
        torch._foreach_sub_(self._update, params)  # θ_{t−1} − θ_t, in the buffer of θ_{t−1}
        torch._foreach_neg_(self._update)
        if self.world > 1:
            self._average_buffers()
        self.step += 1
        self.pos += 1
        if self.pos == self.steps_per_epoch:
            self.pos = 0
        return float(value)

    def _sharded_closure(self, xb: torch.Tensor, yb: torch.Tensor) -> Callable[[], torch.Tensor]:
        """A loss closure (the optimizer differentiates it, landscape.optim.wrapper) on this rank's
        shard ``xb[rank::world]`` (all of it in one process): ``(1/B) Σ_{i∈shard} l_i``, B the
        global batch size, whose sum over ranks (the optimizer's reducer) is the global mean
        loss.

        ``--autocast bfloat16``: the forward pass under autocast, the loss summed from float32
        outputs. ``--accumulate K``: the shard in K micro-batches, each differentiated at once
        (``backward``, gradients summed in ``.grad``), so that one micro-batch's graph is held at
        a time; the closure then returns the detached total (PyTorch's closure form, which the
        tracers, needing the graph, refuse in one line)."""
        xs, ys = B.rows(xb, self.shard), yb[self.shard]
        size = B.size(xb)
        model, loss, cfg = self.model, self.loss, self.cfg
        device = self.device.type

        def value(x, y) -> torch.Tensor:
            if cfg.autocast is None:
                return loss.sum(B.call(model, x), y) / size
            with torch.autocast(device, dtype=getattr(torch, cfg.autocast)):
                out = B.call(model, x)
            return loss.sum(out.to(torch.promote_types(out.dtype, torch.float32)), y) / size

        parts = torch.arange(B.size(xs)).chunk(cfg.accumulate)
        if len(parts) <= 1:
            return lambda: value(xs, ys)

        def accumulated() -> torch.Tensor:
            total = torch.zeros((), device=self.device, dtype=self.dtype)
            for idx in parts:
                part = value(B.rows(xs, idx.to(self.device)), ys[idx.to(self.device)])
                part.backward()
                total += part.detach()
            return total

        return accumulated

    def _average_buffers(self) -> None:
        """BatchNorm running statistics averaged over ranks (each saw only its shard)."""
        bufs = [b for b in self.model.buffers() if b.is_floating_point()]
        if bufs:
            flat = distributed.all_reduce_(torch.cat([b.reshape(-1) for b in bufs])) / self.world
            start = 0
            for b in bufs:
                b.copy_(flat[start:start + b.numel()].view_as(b))
                start += b.numel()

    # -------------------------------------------------------------------- measurements
    def evaluate_row(self) -> dict:
        row: dict[str, float | None] = {}
        row["train_loss"], row["train_accuracy"] = evaluate(self.model, self.loss, self.train_pair,
                                                            self.classes)
        if self.test_pair is not None:
            row["test_loss"], row["test_accuracy"] = evaluate(self.model, self.loss, self.test_pair,
                                                              self.classes)
        return row

    def track_row(self) -> dict:
        from ..problem import Problem

        cfg = self.cfg
        problem = Problem(self.model, self.loss, self.train_pair, batch_size=cfg.track_batch_size,
                          samples=cfg.track_samples, seed=cfg.seed, device=self.device,
                          dtype=self.dtype)
        settings = settings_from(cfg.probes, cfg.seed, cfg.track_options)
        # before the first step there is no update: zeros, whose curvature is reported as NaN
        problem.update = self.update() or {n: torch.zeros_like(t)
                                           for n, t in problem.params.items()}
        settings.extra.update(lr=self.lr, batch_size=self.batch_size, n_train=self.n,
                              step=self.step, memory=self.track_memory)
        return track(problem, cfg.track, settings)


# ------------------------------------------------------------------------ the loop
ProgressFn = Callable[[dict], None]


def train(
    config: TrainConfig,
    out: str | Path,
    *,
    force: bool = False,
    stop_after: int | None = None,
    handle_signals: bool = False,
    progress: ProgressFn | None = None,
    flush_seconds: float = 10.0,
) -> RunResult:
    """Train ``config`` into the run directory ``out``.

    An existing finished run there is left alone (``status="already-finished"``) and an
    unfinished one is an error (continue it with :func:`resume`), unless ``force`` (its files
    are removed first). ``stop_after``: stop as if interrupted after that many steps in all
    (the test hook for resume). ``progress(event)`` receives ``{"step", "total", "epoch",
    "loss", "metric"}`` after every step.
    """
    rundir = RunDir(out)
    if rundir.exists() and not force:
        state = _peek(rundir)
        if state is not None and state.get("status") == "finished":
            diff = _config_diff(state.get("config") or {}, config.to_dict())
            if diff:
                raise ConfigError(
                    f"{rundir.path} holds a finished run with other settings "
                    f"({'; '.join(diff[:3])})",
                    "choose another --out, or pass --force to replace it",
                )
            return _already(rundir, state)
        raise ConfigError(f"{rundir.path} already holds an unfinished run",
                          f"continue it with --resume {rundir.path}, or start again with --force")
    if rundir.path.exists() and not rundir.path.is_dir():
        raise ConfigError(f"--out {rundir.path} is a file", "pass a directory for the run")
    config = TrainConfig.from_dict(config.to_dict())
    session = _Session(config, rundir)  # builds (and validates) before touching the directory
    if force and distributed.is_main():
        rundir.clear()
    rundir.path.mkdir(parents=True, exist_ok=True)
    _barrier()  # under torchrun: every rank has checked the directory before rank 0 writes to it
    return _loop(session, None, stop_after, handle_signals, progress, flush_seconds)


def resume(
    out: str | Path,
    *,
    epochs: int | None = None,
    steps: int | None = None,
    until_loss: float | None = None,
    stop_after: int | None = None,
    handle_signals: bool = False,
    progress: ProgressFn | None = None,
    flush_seconds: float = 10.0,
) -> RunResult:
    """Continue the run in ``out`` from its ``state.pt``; ``epochs`` / ``steps`` / ``until_loss``
    replace the recorded stopping rule (e.g. to train a finished run longer)."""
    rundir = RunDir(out)
    state = rundir.load_state()
    cfg = TrainConfig.from_dict(state["config"])
    if epochs is not None or steps is not None:
        cfg.epochs, cfg.steps = epochs, steps
    if until_loss is not None:
        cfg.until_loss = until_loss
    session = _Session(cfg, rundir)
    unchanged = epochs is None and steps is None and until_loss is None
    if session.total_steps <= int(state["step"]) or (
        state.get("status") == "finished" and unchanged
    ):
        return _already(rundir, state)
    session.load(state)
    session.status, session.stop_reason = "running", None
    _barrier()
    return _loop(session, state, stop_after, handle_signals, progress, flush_seconds)


def _config_diff(recorded: dict, new: dict) -> list[str]:
    """The settings in which a new run differs from a recorded one (``name: recorded -> new``);
    optimizer settings the recorded run resolved by default (``hyper``) count only when given."""
    ignore = {"epochs", "steps",
              "until_loss"}  # the stopping rule: a finished run may be extended with --resume
    out = []
    for key, value in new.items():
        if key in ignore or value is None:  # None: the default, which the recorded run resolved
            continue
        old = recorded.get(key)
        if key == "hyper":
            old = {k: v for k, v in (old or {}).items() if k in (value or {})}
        if old != value:
            out.append(f"{key}: {old!r} -> {value!r}")
    return out


def _barrier() -> None:
    if distributed.active():
        torch.distributed.barrier()


def _peek(rundir: RunDir) -> dict | None:
    try:
        return rundir.load_state()
    except LandscapeError:
        return None


def _already(rundir: RunDir, state: dict) -> RunResult:
    """Nothing to do: the run in ``rundir`` is finished (as far as asked)."""
    series = Series.from_state(state["series"])
    epoch = series.last("epoch") or 0.0
    return RunResult(rundir.path, "already-finished", int(state["step"]), epoch, int(state["step"]),
                     state.get("stop_reason"), None, series.final(),
                     {k: round(float(v), 4) for k, v in state["timers"].items()})


def _loop(s: _Session, state: dict | None, stop_after: int | None, handle_signals: bool,
          progress: ProgressFn | None, flush_seconds: float) -> RunResult:
    cfg, rundir = s.cfg, s.rundir
    stop = StopRequest()
    cuda_index = (s.device.index if s.device.index is not None else torch.cuda.current_device()
                  ) if s.device.type == "cuda" else None
    devices = [cuda_index] if cuda_index is not None else []
    t_start = time.perf_counter()
    wall0 = s.timers["wall"]
    last_flush = time.perf_counter()
    last_metric: tuple[str, float] | None = _last_metric(s)

    def wall() -> float:
        return wall0 + time.perf_counter() - t_start

    def record(batch_loss: float | None, final: bool = False) -> None:
        """Evaluate and track when due; at the end (``final``) make sure the last step has both."""
        nonlocal last_metric
        cols = s.series.columns
        same = final and len(s.series) > 0 and cols["step"][-1] == s.step
        if final:
            due_eval = not same or math.isnan(cols["train_loss"][-1])
            due_track = bool(cfg.track) and (not same or _missing(s.series, cfg.track))
        else:
            due_eval = s.step % cfg.eval_every == 0
            due_track = bool(cfg.track) and s.step % cfg.every == 0
        if not (due_eval or due_track):
            return
        row: dict[str, float | None] = {"step": s.step, "epoch": s.epoch, "batch_loss": batch_loss}
        if due_eval:
            t = time.perf_counter()
            row.update(s.evaluate_row())
            s.timers["eval"] += time.perf_counter() - t
        if due_track:
            t = time.perf_counter()
            values = s.track_row()
            s.timers["track"] += time.perf_counter() - t
            row.update(values)
            primary = TRACKERS[cfg.track[-1]].primary
            if primary in values:
                last_metric = (primary, values[primary])
        s.timers["wall"] = wall()
        row.update({f"{k}_seconds": v for k, v in s.timers.items()})
        if same:
            s.series.update_last(row)
        else:
            s.series.append(row)

    def flush(with_state: bool = True) -> None:
        nonlocal last_flush
        s.timers["wall"] = wall()
        if distributed.is_main():  # under torchrun rank 0 alone writes
            if with_state:
                rundir.save_state(s.state())
            rundir.write_h5(s.series, s.settings(), s.status_attrs())
        last_flush = time.perf_counter()

    if handle_signals:
        stop.install()
    try:
        with torch.random.fork_rng(devices=devices):
            if state is None:
                torch.default_generator.manual_seed(cfg.seed)
                if cuda_index is not None:
                    with torch.cuda.device(cuda_index):
                        torch.cuda.manual_seed(cfg.seed)
                record(None)  # step 0: the initial point
                flush()
            else:
                torch.set_rng_state(state["global_rng"])
                if state.get("cuda_rng") is not None and s.device.type == "cuda":
                    torch.cuda.set_rng_state(state["cuda_rng"], s.device)
            batch_loss = math.nan
            while s.step < s.total_steps:
                t = time.perf_counter()
                try:
                    batch_loss = s.train_step()
                except NumericalError:
                    s.status, s.stop_reason = "diverged", "nan"
                    s.timers["train"] += time.perf_counter() - t
                    flush(with_state=False)
                    raise
                s.timers["train"] += time.perf_counter() - t
                record(batch_loss)
                if progress is not None:
                    progress({"step": s.step, "total": s.total_steps, "epoch": s.epoch,
                              "loss": batch_loss,
                              "metric": last_metric})
                if (
                    cfg.until_loss is not None
                    and len(s.series)
                    and s.series.columns["step"][-1] == s.step
                ):
                    tl = s.series.columns["train_loss"][
                        -1
                    ]  # NaN (no evaluation at this step) never stops
                    if tl < cfg.until_loss:
                        s.stop_reason = "until_loss"
                        break
                if cfg.checkpoint_every and s.step % cfg.checkpoint_every == 0:
                    if distributed.is_main():
                        _checkpoint(s).save(rundir.step_checkpoint(s.step))
                    flush()
                elif time.perf_counter() - last_flush > flush_seconds:
                    flush()
                stopping = stop.signum is not None or (
                    stop_after is not None and s.step >= stop_after
                )
                if s.world > 1:  # every rank stops at the same step (a signal may reach them apart)
                    stopping = bool(
                        distributed.all_reduce_(torch.tensor([int(stopping)], device=s.device))[0]
                    )
                if stopping and s.step < s.total_steps:
                    s.status = "interrupted"
                    s.stop_reason = "signal" if stop.signum is not None else "stop_after"
                    break
            if s.status != "interrupted":
                if s.stop_reason is None:
                    s.stop_reason = "steps"
                record(batch_loss, final=True)
                s.status = "finished"
                if distributed.is_main():
                    _checkpoint(s).save(rundir.final)
            flush()
    finally:
        stop.restore()
    if cfg.plot and distributed.is_main():
        from ..io.run_figures import run_figure, save

        save(run_figure(s.series.arrays(), s.settings()), rundir.figure)
        usual_mode(rundir.figure)
    return RunResult(rundir.path, s.status, s.step, s.epoch, s.total_steps, s.stop_reason,
                     stop.signum,
                     s.series.final(), {k: round(v, 4) for k, v in s.timers.items()})


def _missing(series: Series, names: list[str]) -> bool:
    """Whether the last row lacks a tracked metric's primary column."""
    for name in names:
        col = series.columns.get(TRACKERS[name].primary)
        if col is None or math.isnan(col[-1]):
            return True
    return False


def _last_metric(s: _Session) -> tuple[str, float] | None:
    if not s.cfg.track:
        return None
    primary = TRACKERS[s.cfg.track[-1]].primary
    v = s.series.last(primary)
    return None if v is None else (primary, v)


def _checkpoint(s: _Session):
    """The model now, as a core-format checkpoint with the training record."""
    from ..io.checkpoint import make_checkpoint

    cfg = s.cfg
    final = s.series.final()
    training = {
        "optimizer": cfg.optimizer,
        "base": s.settings()["base"],
        "lr": s.lr,
        "momentum": s.momentum,
        "weight_decay": cfg.weight_decay,
        "batch_size": s.batch_size,
        "step": s.step,
        "epoch": s.epoch,
        "seed": cfg.seed,
        "dtype": cfg.dtype,
        "hyper": {k: v for k, v in cfg.hyper.items() if isinstance(v, (int, float, str, bool))},
        "passes_per_step": float(s.optimizer.passes_per_step),
        "total_steps": s.total_steps,
        "run": str(s.rundir.path),
        "status": "finished"
        if s.step >= s.total_steps or s.stop_reason == "until_loss"
        else "running",
        **{
            k: final[k]
            for k in ("train_loss", "train_accuracy", "test_loss", "test_accuracy")
            if final.get(k) is not None
        },
    }
    update = s.update()
    return make_checkpoint(cfg.model, s.model_kwargs, cfg.data, cfg.data_kwargs, s.loss_name,
                           s.model, training, split=s.split,
                           extra={"update": update} if update is not None else None)
