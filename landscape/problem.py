"""Problem: a model in functional form, the parameters under study, and the data with exact weights.

``L(θ) = (1/n) Σ_{i=1..n} l_i(θ)``: every product and loss is a sum over batches of per-sample
SUMS divided by the total n, so an uneven last batch carries exactly its share (the trap of
averaging per-batch means with equal weights is avoided by construction).

Under ``torch.distributed`` (e.g. ``torchrun``) each rank holds the shard ``indices[rank::world]``
and :meth:`Problem.reduce` sums partial results over ranks; ``n`` stays the global count.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterator

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from .curvature import functional as fx
from .curvature.layout import ParamLayout, select
from .errors import ConfigError, LandscapeError, NumericalError
from .losses import Loss, get_loss

DTYPES = {"float32": torch.float32, "float64": torch.float64}


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``None`` → CPU; ``"cuda"`` without a GPU → a clear error."""
    dev = torch.device(device or "cpu")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise LandscapeError("--device cuda was asked for but no CUDA GPU is available",
                             "use --device cpu, or run on a machine with a GPU")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise LandscapeError("--device mps was asked for but MPS is not available", "use --device cpu")
    from .distributed import local_device

    return local_device(dev)


def resolve_dtype(dtype: str | torch.dtype | None) -> torch.dtype | None:
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in DTYPES:
        raise ConfigError(f"unknown dtype {dtype!r}", "choose float32 or float64")
    return DTYPES[dtype]


def as_tensors(data) -> tuple[torch.Tensor, torch.Tensor]:
    """A ``(inputs, targets)`` pair of tensors from a tuple, a Dataset or a DataLoader."""
    if isinstance(data, (tuple, list)) and len(data) == 2 and all(isinstance(t, torch.Tensor) for t in data):
        x, y = data
    elif isinstance(data, (DataLoader, Dataset)):
        loader = data if isinstance(data, DataLoader) else DataLoader(data, batch_size=1024)
        xs, ys = [], []
        for batch in loader:
            if not (isinstance(batch, (tuple, list)) and len(batch) >= 2):
                raise ConfigError("the data must yield (inputs, targets) pairs",
                                  "return a Dataset of (x, y), or a tuple of tensors (X, Y)")
            xs.append(torch.as_tensor(batch[0]))
            ys.append(torch.as_tensor(batch[1]))
        if not xs:
            raise ConfigError("the data holds no samples", "check the data factory")
        x, y = torch.cat(xs), torch.cat(ys)
    else:
        raise ConfigError(f"data must be (inputs, targets) tensors, a Dataset or a DataLoader, "
                          f"got {type(data).__name__}", "return a tuple (X, Y) from the data factory")
    if x.shape[0] != y.shape[0]:
        raise ConfigError(f"inputs hold {x.shape[0]} samples but targets {y.shape[0]}",
                          "inputs and targets must have the same first dimension")
    if x.shape[0] == 0:
        raise ConfigError("the data holds no samples", "check the data source")
    return x, y


def _dist():
    from . import distributed

    return torch.distributed if distributed.active() else None


class Problem:
    """Model, loss, parameters and data of one loss landscape.

    Args:
        model: an ``nn.Module`` (copied; the caller's module is never changed).
        loss: ``"cross-entropy"``, ``"mse"`` (½‖f−y‖² per sample), or a mean-reduced callable.
        data: ``(inputs, targets)`` tensors, a Dataset or a DataLoader.
        batch_size: samples per product batch (memory, not the estimate, depends on it).
        samples: use a seeded random subset of this many samples (``None``: all).
        seed: seed of that subset.
        params: regular expression selecting the parameters under study (``re.search`` on
            ``model.named_parameters()`` names); the others are held fixed.
        device, dtype: where and in what precision everything is computed.
        train_mode: BatchNorm uses batch statistics (running statistics are not updated) and
            dropout stays active; default eval mode.

    Attributes: ``layout`` (:class:`ParamLayout`), ``params`` (dict of the selected tensors),
    ``theta`` (flat ``[p]``), ``batches`` (list of ``(x, y)`` on the device), ``n`` (global count).
    """

    def __init__(
        self,
        model: nn.Module,
        loss: str | Callable | Loss,
        data,
        *,
        batch_size: int = 256,
        samples: int | None = None,
        seed: int = 0,
        params: str | None = None,
        device: str | torch.device | None = None,
        dtype: str | torch.dtype | None = None,
        train_mode: bool = False,
    ) -> None:
        if batch_size < 1:
            raise ConfigError(f"batch size must be positive, got {batch_size}", "pass --batch-size 256")
        self.device = resolve_device(device)
        dt = resolve_dtype(dtype)
        self.loss = get_loss(loss)
        self.train_mode = train_mode
        self.batch_size = batch_size
        self.seed = seed

        model = copy.deepcopy(model)
        if dt is not None:
            model = model.to(dtype=dt)
        model = model.to(self.device)
        model.train(train_mode)
        if train_mode:  # batch statistics without touching the running ones
            for m in model.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.track_running_stats = False
        self.model = model
        named = dict(model.named_parameters())
        if not named:
            raise ConfigError("the model has no parameters", "check the model factory")
        chosen = select(list(named), params)
        if not chosen:
            raise ConfigError(f"--params {params!r} matches no parameter",
                              f"parameter names: {', '.join(list(named)[:8])}{' ...' if len(named) > 8 else ''}")
        self.params = {n: named[n].detach() for n in chosen}
        self.frozen = {n: t.detach() for n, t in named.items() if n not in self.params}
        self.frozen.update({n: b for n, b in model.named_buffers()})
        self.layout = ParamLayout.from_tensors(self.params)
        self.dtype = next(iter(self.params.values())).dtype

        x, y = as_tensors(data)
        n_all = x.shape[0]
        idx = torch.arange(n_all)
        if samples is not None and samples < n_all:
            if samples < 1:
                raise ConfigError(f"--samples must be positive, got {samples}", "pass e.g. --samples 512")
            g = torch.Generator().manual_seed(seed)
            idx = torch.randperm(n_all, generator=g)[:samples].sort().values
        self.n = int(idx.numel())
        self.indices = idx
        dist = _dist()
        if dist is not None:
            idx = idx[dist.get_rank() :: dist.get_world_size()]
        x, y = x[idx], y[idx]
        if x.is_floating_point():
            x = x.to(self.dtype)
        if y.is_floating_point():
            y = y.to(self.dtype)
        x, y = x.to(self.device), y.to(self.device)
        self.batches = [(x[i : i + batch_size], y[i : i + batch_size]) for i in range(0, x.shape[0], batch_size)]
        if self.batches:
            xb, yb = self.batches[0]
            with torch.no_grad():
                try:
                    out = self.forward(self.params, xb[:2])
                except RuntimeError as e:
                    raise ConfigError(f"the model cannot take these inputs {tuple(xb.shape[1:])}: {str(e).splitlines()[0]}",
                                      "check that the model and the data fit together") from e
            self.loss.check(out, yb[:2])

    # ---------------------------------------------------------------- functional form
    def forward(self, params: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        """``f(x; θ)`` with the selected parameters replaced by ``params``."""
        return torch.func.functional_call(self.model, (params, self.frozen), (x,))

    @property
    def p(self) -> int:
        return self.layout.p

    @property
    def theta(self) -> torch.Tensor:
        """The selected parameters as one flat vector ``[p]``."""
        return self.layout.flatten(self.params)

    def at(self, theta: torch.Tensor) -> dict[str, torch.Tensor]:
        """Parameter dict for the flat vector ``theta``."""
        return self.layout.unflatten(theta.to(device=self.device, dtype=self.dtype))

    def reduce(self, t: torch.Tensor) -> torch.Tensor:
        """Sum a partial result over ranks (identity in a single process)."""
        dist = _dist()
        if dist is not None:
            dist.all_reduce(t)
        return t

    def iter_batches(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return iter(self.batches)

    # ---------------------------------------------------------------- scalar quantities
    def loss_value(self, theta: torch.Tensor | None = None) -> float:
        """``L(θ) = (1/n) Σ_i l_i(θ)`` over the problem's samples."""
        params = self.params if theta is None else self.at(theta)
        total = torch.zeros((), dtype=self.dtype, device=self.device)
        with torch.no_grad():
            for x, y in self.batches:
                total += fx.batch_loss(self.forward, self.loss, params, x, y)
        value = float(self.reduce(total) / self.n)
        if not math.isfinite(value):
            raise NumericalError(f"the loss is {value} at these parameters",
                                 "the checkpoint has diverged; pick an earlier one")
        return value

    def accuracy(self, theta: torch.Tensor | None = None) -> float | None:
        """Fraction of correct argmax predictions (cross-entropy with class labels only)."""
        if self.loss.name != "cross-entropy":
            return None
        params = self.params if theta is None else self.at(theta)
        correct = torch.zeros((), dtype=torch.float64, device=self.device)
        with torch.no_grad():
            for x, y in self.batches:
                if y.is_floating_point():
                    return None
                correct += (self.forward(params, x).argmax(-1) == y).sum()
        return float(self.reduce(correct) / self.n)

    def gradient(self, theta: torch.Tensor | None = None) -> tuple[float, torch.Tensor]:
        """``(L(θ), ∇L(θ))`` with the gradient flat ``[p]``."""
        params = self.params if theta is None else self.at(theta)
        value = torch.zeros((), dtype=self.dtype, device=self.device)
        g = torch.zeros(self.p, dtype=self.dtype, device=self.device)
        for x, y in self.batches:
            v, gd = fx.loss_and_grad(self.forward, self.loss, params, x, y)
            value += v.detach()
            g += self.layout.flatten(gd)
        out = self.reduce(torch.cat([value.reshape(1), g])) / self.n
        return float(out[0]), out[1:]

    def restrict(self, params: str) -> Problem:
        """The same problem with only the parameters matching ``params`` under study."""
        sub = copy.copy(self)
        named = {**self.params, **{k: v for k, v in self.frozen.items()}}
        chosen = [n for n in select(list(self.params), params)]
        if not chosen:
            raise ConfigError(f"--params {params!r} matches no parameter under study",
                              f"parameter names: {', '.join(self.layout.names[:8])}")
        sub.params = {n: self.params[n] for n in chosen}
        sub.frozen = {n: t for n, t in named.items() if n not in sub.params}
        sub.layout = ParamLayout.from_tensors(sub.params)
        return sub

    def describe(self) -> dict:
        return {"p": self.p, "n": self.n, "loss": self.loss.name, "batch_size": self.batch_size,
                "device": str(self.device), "dtype": str(self.dtype).replace("torch.", ""),
                "train_mode": self.train_mode, "params": list(self.layout.names)}
