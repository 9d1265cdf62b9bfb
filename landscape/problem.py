"""Problem: a model in functional form, the parameters under study, and the data with exact weights.

``L(θ) = (1/n) Σ_{i=1..n} l_i(θ)``: every product and loss is a sum over batches of per-sample
SUMS divided by the total n, so an uneven last batch carries exactly its share (the trap of
averaging per-batch means with equal weights is avoided by construction).

The data are a :class:`~landscape.data.source.DataSource` read batch by batch on every pass and
moved to the device as each batch is used; small data sets are kept on the device instead (see
:meth:`Problem._plan_residency`). Under ``torch.distributed`` (e.g. ``torchrun``) each rank reads
only its shard, global positions ``rank, rank + world, …``, and :meth:`Problem.reduce` sums partial
results over ranks; ``n`` stays the global count.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterator
from dataclasses import replace

import torch
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils._python_dispatch import TorchDispatchMode

from .curvature import functional as fx
from .curvature.layout import ParamLayout, select
from .data import batch as B
from .data.source import TensorSource
from .errors import ConfigError, LandscapeError, NumericalError
from .losses import Loss, get_loss
from .memory import Budget

DTYPES = {"float32": torch.float32, "float64": torch.float64, "bfloat16": torch.bfloat16,
          "float16": torch.float16}
#: products in these run in them, but sums over batches and the estimators' vectors are float32
LOW_PRECISION = (torch.bfloat16, torch.float16)


def accumulation_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype sums are kept in: float32 for a low-precision problem, else its own."""
    return torch.float32 if dtype in LOW_PRECISION else dtype


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``None`` → CPU; ``"cuda"`` without a GPU, or a device torch does not know → a clear error."""
    try:
        dev = torch.device(device or "cpu")
    except (RuntimeError, TypeError) as e:
        raise ConfigError(f"unknown device {device!r}", "use cpu, cuda, cuda:1 or mps") from e
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise LandscapeError("--device cuda was asked for but no CUDA GPU is available",
                             "use --device cpu, or run on a machine with a GPU")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise LandscapeError("--device mps was asked for but MPS is not available",
                             "use --device cpu")
    from .distributed import local_device

    return local_device(dev)


def resolve_dtype(dtype: str | torch.dtype | None) -> torch.dtype | None:
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in DTYPES:
        raise ConfigError(f"unknown dtype {dtype!r}", f"choose one of {', '.join(DTYPES)}")
    return DTYPES[dtype]


DEFAULT_BATCH = 256


class _FusedAttention(TorchDispatchMode):
    """Counts the fused attention kernels (``aten._scaled_dot_product_{flash,efficient,cudnn}…``)
    that the operations it watches run: they have no double backward and no forward-mode
    derivative, where SDPA's math kernel (plain matmul and softmax) has both."""

    count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if "_scaled_dot_product_" in str(func):
            self.count += 1
        return func(*args, **(kwargs or {}))


class Batches:
    """A re-iterable view of a problem's device batches of one size."""

    def __init__(self, problem: Problem, size: int) -> None:
        self.problem, self.size = problem, size

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return self.problem.iter_batches(self.size)

    def first(self) -> tuple[torch.Tensor, torch.Tensor]:
        return next(iter(self))


def _dist():
    from . import distributed

    return torch.distributed if distributed.active() else None


class Problem:
    """Model, loss, parameters and data of one loss landscape.

    Args:
        model: an ``nn.Module`` (copied; the caller's module is never changed).
        loss: ``"cross-entropy"``, ``"mse"`` (½‖f−y‖² per sample), or a mean-reduced callable.
        data: ``(inputs, targets)`` tensors, a Dataset, a DataLoader or a
            :class:`~landscape.data.source.DataSource`; read batch by batch, never concatenated.
        batch_size: samples per product batch (memory, not the estimate, depends on it; an
            operator may choose fewer to fit the memory budget). Default 256.
        samples: use a seeded random subset of this many samples (``None``: all).
        seed: seed of that subset.
        params: regular expression selecting the parameters under study (``re.search`` on
            ``model.named_parameters()`` names); the others are held fixed.
        device, dtype: where and in what precision everything is computed.
        train_mode: BatchNorm uses batch statistics (running statistics are not updated) and
            dropout stays active; default eval mode.
        bn_batch: in train mode, the batch over which BatchNorm takes its statistics (the Hessian
            depends on it); default ``batch_size``. Products then run on exactly these batches.
        memory: the memory budget (``"8GiB"``, bytes as int, ``None``: the device's default share,
            see :mod:`landscape.memory`).
        allow_random_data: skip the check that two reads of the data give the same batches.
        resident: keep the samples on the device (True), stream them on every pass (False), or
            decide from their size (None, see :meth:`_plan_residency`).

    Attributes: ``layout`` (:class:`ParamLayout`), ``params`` (dict of the selected tensors),
    ``theta`` (flat ``[p]``), ``batches`` (the device batches, re-read on every pass), ``n``
    (global count), ``source`` (this process's samples), ``budget``
    (:class:`~landscape.memory.Budget`).
    """

    def __init__(
        self,
        model: nn.Module,
        loss: str | Callable | Loss,
        data,
        *,
        batch_size: int | None = None,
        samples: int | None = None,
        seed: int = 0,
        params: str | None = None,
        device: str | torch.device | None = None,
        dtype: str | torch.dtype | None = None,
        train_mode: bool = False,
        bn_batch: int | None = None,
        memory: str | int | None = None,
        allow_random_data: bool = False,
        resident: bool | None = None,
    ) -> None:
        from .data.source import as_source, check_repeatable, seeded_subset

        batch_size = DEFAULT_BATCH if batch_size is None else int(batch_size)
        if batch_size < 1:
            raise ConfigError(f"product batch must be positive, got {batch_size}",
                              "pass --product-batch 256")
        if bn_batch is not None and bn_batch < 1:
            raise ConfigError(f"--bn-batch must be positive, got {bn_batch}",
                              "pass e.g. --bn-batch 128")
        self.device = resolve_device(device)
        dt = resolve_dtype(dtype)
        self.loss = get_loss(loss)
        self.train_mode = train_mode
        self.seed = seed
        self.budget = Budget.resolve(memory, self.device)
        self.allow_random_data = bool(allow_random_data)
        self._keep = resident
        self.attention: str | None = None
        #: agreement of low-precision products with float32's, when checked (precision_check)
        self.precision: dict | None = None
        #: the optimizer's last update ``θ_t − θ_{t−1}`` by parameter name, when known (a
        #: checkpoint of ``landscape train``, or the running session); see :meth:`update_vector`
        self.update: dict[str, torch.Tensor] | None = None

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
            raise ConfigError(
                f"--params {params!r} matches no parameter",
                f"parameter names: {', '.join(list(named)[:8])}{' ...' if len(named) > 8 else ''}",
            )
        self.params = {n: named[n].detach() for n in chosen}
        self.frozen = {n: t.detach() for n, t in named.items() if n not in self.params}
        self.frozen.update({n: b for n, b in model.named_buffers()})
        self.layout = ParamLayout.from_tensors(self.params)
        self.dtype = next(iter(self.params.values())).dtype
        #: batches couple their samples (BatchNorm batch statistics): products run on bn batches
        self.coupled = train_mode and any(
            isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()
        )
        self.bn_batch = (bn_batch or batch_size) if self.coupled else None
        self.batch_size = self.bn_batch or batch_size

        source = as_source(data)
        n_all = len(source)
        if n_all == 0:
            raise ConfigError("the data hold no samples",
                              "check the data factory (it returned an empty set)")
        if samples is not None and samples < 1:
            raise ConfigError(f"--samples must be positive, got {samples}",
                              "pass e.g. --samples 512")
        #: positions of the problem's samples in the data as given (a seeded subset's, or all)
        self.indices = torch.arange(n_all)
        if samples is not None and samples < n_all:
            self.indices = seeded_subset(n_all, samples, seed)
            source = source.select(self.indices)
        self.samples_total = n_all
        self._global = source  # every rank's samples, in order (after --samples)
        self._set_samples(source)
        if not self.allow_random_data and not isinstance(source, TensorSource):
            check_repeatable(
                self.source if len(self.source) else self._global, min(self.batch_size, 8)
            )
        self._check_fit()

    def _set_samples(self, source) -> None:
        """Use ``source`` (all ranks' samples): this rank's shard, its count and residency."""
        from .data.source import split_positions

        self.n = len(source)
        dist = _dist()
        local = source.select(split_positions(self.n, dist.get_rank(), dist.get_world_size())) \
            if dist is not None else source
        self.source = local
        self._resident = None
        self._plan_residency()
        self._count_tokens()

    def _count_tokens(self) -> None:
        """For a token loss: ``N``, the counted tokens of all ``n`` sequences (one pass over the
        labels, summed over ranks), and the loss scaled by ``n/N`` so that ``(1/n) Σ_i l_i`` is
        the mean over tokens (:mod:`landscape.losses`)."""
        self.tokens = None
        if not self.loss.per_token:
            return
        count = torch.zeros((), dtype=torch.int64)
        for _, y in (self.iter_batches(4096) if self._resident is not None
                     else self.source.batches(4096)):
            if y.dim() < 2 or y.is_floating_point():
                raise ConfigError(
                    f"{self.loss.name} needs integer token labels [batch, length], the data give "
                    f"{str(y.dtype).replace('torch.', '')} targets {tuple(y.shape)}",
                    "use --loss cross-entropy for class labels (mse for regression)")
            count += self.loss.counted(y).cpu()
        self.tokens = int(self.reduce(count.to(self.device)))
        if self.tokens == 0:
            raise ConfigError(f"every label of the {self.n} sequences is ignored (−100), so "
                              f"{self.loss.name} counts no token",
                              "check the labels (and the attention_mask, when labels are "
                              "derived from input_ids)")
        self.loss = replace(self.loss, scale=self.n / self.tokens)

    def _check_fit(self) -> None:
        """One clear error when the model cannot take the data or the targets do not fit the
        loss."""
        xb, yb = self.source.first(2) if len(self.source) else self._global.first(2)
        xb, yb = self._to_device((xb, yb))
        # with autograd on, as in the products (torch's fused fast paths run only without it)
        live = {n: t.detach().requires_grad_() for n, t in self.params.items()}
        with torch.enable_grad(), _FusedAttention() as calls:
            try:
                out = self.forward(live, xb).detach()
            except (RuntimeError, TypeError, ValueError) as e:
                shapes = B.apply(xb, lambda t: tuple(t.shape[1:]))
                raise ConfigError(f"the model cannot take these inputs {shapes}: "
                                  f"{str(e).splitlines()[0]}",
                                  "check that the model and the data fit together") from e
        #: the attention kernel of the products: the fused SDPA kernels (flash, memory-efficient)
        #: have no double backward and no forward-mode derivative, the math kernel has both
        self.attention = "sdpa-math" if calls.count else None
        self.loss.check(out, yb)

    # ---------------------------------------------------------------- data, batch by batch
    def _to_device(self, batch):
        """A CPU batch on the problem's device, floating tensors in its dtype (pinned and copied
        without blocking on a GPU); dict inputs key by key."""
        x, y = batch
        cuda = self.device.type == "cuda"

        def move(t: torch.Tensor) -> torch.Tensor:
            if t.is_floating_point() and t.dtype != self.dtype:
                t = t.to(self.dtype)
            if t.device != self.device:
                if cuda and t.device.type == "cpu" and not t.is_pinned():
                    t = t.pin_memory()
                t = t.to(self.device, non_blocking=cuda)
            return t

        return B.apply(x, move), move(y)

    def _plan_residency(self) -> None:
        """Keep this process's samples on the device when they are plain tensors already there,
        or when they take at most 1/16 of the memory budget (then they are read once); otherwise
        every pass streams them batch by batch."""
        from .data.source import TensorSource, batch_nbytes

        src = self.source
        n_local = len(src)
        if n_local == 0:
            return
        if (
            self._keep is not False
            and isinstance(src, TensorSource)
            and src.index is None
            and all(t.device == self.device and (not t.is_floating_point() or t.dtype == self.dtype)
                    for t in B.tensors(src.x) + [src.y])
        ):
            self._resident = (src.x, src.y)  # the caller's tensors themselves: no copy
            return
        first = self._to_device(src.first(1))
        self.sample_bytes = batch_nbytes(first)
        if self._keep is False:
            return
        if self._keep or n_local * self.sample_bytes <= self.budget.bytes // 16:
            parts = [self._to_device(b) for b in src.batches(4096)]
            xs, ys = zip(*parts)
            self._resident = (B.cat(list(xs)), B.cat_targets(list(ys))) if len(parts) > 1 \
                else parts[0]

    @property
    def resident(self) -> bool:
        """Whether this process's samples are held on the device (else streamed every pass)."""
        return self._resident is not None

    def iter_batches(self, size: int | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """This process's samples in batches of ``size`` (default ``batch_size``; in train mode
        with BatchNorm always the statistics batch ``bn_batch``), on the device, in order."""
        size = self.bn_batch or int(size or self.batch_size)
        if self._resident is not None:
            x, y = self._resident
            for i in range(0, B.size(x), size):
                yield B.rows(x, slice(i, i + size)), y[i : i + size]
            return
        pin = self.device.type == "cuda"
        for batch in self.source.batches(size, pin=pin):
            yield self._to_device(batch)

    @property
    def batches(self) -> Batches:
        """The device batches at the problem's batch size; iterate it as often as needed."""
        return Batches(self, self.batch_size)

    def batches_of(self, size: int) -> Batches:
        return Batches(self, size)

    def subset(self, samples: int | None, seed: int) -> Problem:
        """The same problem on a seeded subset of ``samples`` of its ``n`` samples (``None`` or
        ``samples >= n``: itself): the subset is drawn over global positions from ``seed``, so it
        is the same for every number of processes."""
        from .data.source import seeded_subset

        if samples is None or samples >= self.n:
            return self
        if samples < 1:
            raise ConfigError(f"the sample subset must be positive, got {samples}",
                              "pass a positive number of samples, e.g. 256 (or none: all samples)")
        sub = copy.copy(self)
        pos = seeded_subset(self.n, samples, seed)
        sub.indices = self.indices[pos]
        sub._global = self._global.select(pos)
        sub._set_samples(sub._global)
        return sub

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """This process's samples as one ``(X, Y)`` pair on the device, for computations that
        index samples at random (the escape engine, Gram blocks of a subset). Refused when they
        would take more than half the memory budget."""
        if self._resident is not None:
            return self._resident
        from .data.source import batch_nbytes
        from .memory import fmt_bytes

        need = len(self.source) * getattr(self, "sample_bytes", 0)
        if need > self.budget.bytes // 2:
            raise ConfigError(
                f"this computation holds all {len(self.source)} samples at once "
                f"({fmt_bytes(need)}), "
                f"more than half the memory budget {self.budget}",
                "use --samples to take a subset, or raise --memory",
            )
        parts = list(self.iter_batches(4096))
        xs, ys = zip(*parts)
        out = (B.cat(list(xs)), B.cat_targets(list(ys))) if len(parts) > 1 else parts[0]
        self.sample_bytes = batch_nbytes(out) // max(1, B.size(out[0]))
        return out

    # ---------------------------------------------------------------- functional form
    def forward(self, params: dict[str, torch.Tensor], x: B.Inputs) -> torch.Tensor:
        """``f(x; θ)`` with the selected parameters replaced by ``params``."""
        return self.call((params, self.frozen), x)

    def call(self, tensors: tuple[dict[str, torch.Tensor], ...], x: B.Inputs,
             model: nn.Module | None = None) -> torch.Tensor:
        """The output tensor of the model (or of ``model``, a copy of it) with its parameters and
        buffers taken from ``tensors`` (dicts, as ``torch.func.functional_call`` takes them): a
        dict ``x`` is passed as keyword arguments, an HF output gives its ``.logits``, and
        attention runs on SDPA's math kernel when the model uses a fused one (``attention``)."""
        model = self.model if model is None else model
        args, kwargs = ((), x) if isinstance(x, dict) else ((x,), None)
        if self.attention is None:
            return B.logits(torch.func.functional_call(model, tensors, args, kwargs))
        with sdpa_kernel([SDPBackend.MATH]):
            return B.logits(torch.func.functional_call(model, tensors, args, kwargs))

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

    # ---------------------------------------------------------------- scalar quantities
    def loss_value(self, theta: torch.Tensor | None = None) -> float:
        """``L(θ) = (1/n) Σ_i l_i(θ)`` over the problem's samples."""
        return self._evaluate(theta, accuracy=False, check=True)[0]

    def _evaluate(self, theta: torch.Tensor | None, accuracy: bool,
                  check: bool) -> tuple[float, float | None]:
        """``(L(θ), accuracy or None)`` from one pass over the data (one forward per batch); the
        accuracy only for cross-entropy with class labels; ``check``: a NaN or infinite loss
        raises."""
        params = self.params if theta is None else self.at(theta)
        total = torch.zeros((), dtype=accumulation_dtype(self.dtype), device=self.device)
        right = torch.zeros(2, dtype=torch.float64, device=self.device)  # correct, counted
        with torch.no_grad():
            for x, y in self.batches:
                out = self.forward(params, x)
                total += self.loss.sum(out, y)
                hits = self.loss.correct(out, y) if accuracy else None
                accuracy = hits is not None
                if accuracy:
                    right += torch.stack([hits, self.loss.counted(y).to(hits.device)])
        value = float(self.reduce(total) / self.n)
        if check and not math.isfinite(value):
            raise self._nonfinite(value, params)
        if not accuracy:
            return value, None
        right = self.reduce(right)
        return value, float(right[0] / right[1])

    def _nonfinite(self, value: float, params: dict[str, torch.Tensor]) -> NumericalError:
        """Whose fault a NaN or infinite loss is: the data's, the parameters', or the model's."""
        for i, (x, y) in enumerate(self.batches):
            for what, t in (("inputs", x), ("targets", y)):
                if t.is_floating_point() and not bool(torch.isfinite(t).all()):
                    return NumericalError(
                        f"the data hold NaN or infinite {what} (batch {i}), so the loss is {value}",
                        "clean the data (the checkpoint is not at fault)",
                    )
        bad = [n for n, t in params.items() if not bool(torch.isfinite(t).all())]
        if bad:
            return NumericalError(
                f"the parameters hold NaN or infinite values ({', '.join(bad[:3])}), so the loss "
                f"is {value}",
                "the checkpoint has diverged; pick an earlier one",
            )
        return NumericalError(
            f"the loss is {value} at these parameters (finite weights and data: the model "
            "overflows)",
            "pick an earlier checkpoint, or use --dtype float64",
        )

    def point(self) -> dict:
        """``{"loss_value", "accuracy"}`` at the problem's parameters, from one pass: what every
        result reports of the point it measured (a NaN or infinite loss raises here, before any
        product)."""
        loss, acc = self._evaluate(None, accuracy=True, check=True)
        return {"loss_value": loss, "accuracy": acc}

    def accuracy(self, theta: torch.Tensor | None = None) -> float | None:
        """Fraction of correct argmax predictions among the counted samples or tokens
        (cross-entropy with class labels and the token losses; None otherwise)."""
        return self._evaluate(theta, accuracy=True, check=False)[1]

    def gradient(self, theta: torch.Tensor | None = None) -> tuple[float, torch.Tensor]:
        """``(L(θ), ∇L(θ))`` with the gradient flat ``[p]``."""
        params = self.params if theta is None else self.at(theta)
        acc = accumulation_dtype(self.dtype)
        value = torch.zeros((), dtype=acc, device=self.device)
        g = torch.zeros(self.p, dtype=acc, device=self.device)
        for x, y in self.batches:
            v, gd = fx.loss_and_grad(self.forward, self.loss, params, x, y)
            value += v.detach()
            g += self.layout.flatten(gd)
        out = self.reduce(torch.cat([value.reshape(1), g])) / self.n
        return float(out[0]), out[1:]

    def update_vector(self) -> torch.Tensor:
        """The optimizer's last update, flat ``[p]`` in this problem's layout (a ConfigError when
        the checkpoint holds none, or not for every parameter under study)."""
        missing = [n for n in self.layout.names if n not in (self.update or {})]
        if self.update is None or missing:
            raise ConfigError(
                "update-curvature needs the optimizer's last update, and the checkpoint holds none"
                + (f" for {', '.join(missing[:3])}" if self.update is not None else ""),
                "measure a checkpoint written by landscape train (it stores the last step's "
                "update), or use --metric grad-curvature")
        return self.layout.flatten(self.update).to(device=self.device, dtype=self.dtype)

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

    def count_text(self) -> str:
        """``"256 samples"``, or for a token loss ``"256 sequences (15,360 tokens)"``."""
        if self.tokens is None:
            return f"{self.n} samples"
        return f"{self.n} sequences ({self.tokens:,} tokens)"

    def retyped(self, dtype: torch.dtype) -> Problem:
        """The same problem in another precision (a copy of the model cast to ``dtype``; the
        samples, the subset and the token count are shared)."""
        sub = copy.copy(self)
        sub.model = copy.deepcopy(self.model).to(dtype=dtype)
        named = dict(sub.model.named_parameters())
        sub.params = {n: named[n].detach() for n in self.params}
        sub.frozen = {n: t.detach() for n, t in named.items() if n not in sub.params}
        sub.frozen.update(dict(sub.model.named_buffers()))
        sub.layout = ParamLayout.from_tensors(sub.params)
        sub.dtype = dtype

        def cast(t: torch.Tensor) -> torch.Tensor:
            return t.to(dtype) if t.is_floating_point() else t

        if self._resident is not None:
            sub._resident = (B.apply(self._resident[0], cast), cast(self._resident[1]))
        return sub

    def data_report(self) -> dict:
        """How the data are read: the source, whether they stay on the device, the batches, the
        BatchNorm statistics batch (train mode), the memory budget."""
        return {"source": self.source.describe(), "kind": self.source.kind,
                "resident": self.resident,
                "product_batch": self.batch_size, "bn_batch": self.bn_batch,
                "memory": str(self.budget),
                "memory_bytes": self.budget.bytes, "allow_random_data": self.allow_random_data,
                "tokens": self.tokens, "attention": self.attention,
                **({"precision": self.precision} if self.precision else {})}

    def describe(self) -> dict:
        return {"p": self.p, "n": self.n, "loss": self.loss.name, "batch_size": self.batch_size,
                "bn_batch": self.bn_batch, "data": self.source.describe(),
                "resident": self.resident,
                "device": str(self.device), "dtype": str(self.dtype).replace("torch.", ""),
                "train_mode": self.train_mode, "params": list(self.layout.names),
                **({"tokens": self.tokens} if self.tokens is not None else {}),
                **({"attention": self.attention} if self.attention else {})}
