"""Data sources: the samples of one data split, read batch by batch, never concatenated.

A source holds the ``n`` samples in a fixed order (their global positions ``0 … n−1``) and yields
``(inputs, targets)`` CPU batches of a requested size, in that order, every time it is read:

- :class:`TensorSource`: ``(X, Y)`` tensors already in memory; a batch is a slice (a view) or a
  gather of the selected rows.
- :class:`DatasetSource`: a map-style ``Dataset`` read through a ``DataLoader`` over the selected
  indices, with the user's collate function, workers and pinning: only the selected samples are
  ever read.
- :class:`StreamSource`: anything that can only be iterated (an ``IterableDataset``, a loader
  with its own batch sampler): read from the start on every pass, keeping the selected positions,
  cut into batches of the requested size.

:func:`as_source` accepts what a data factory returns. ``select(positions)`` restricts a source to
some of its positions (a seeded ``--samples`` subset, a rank's shard), ``take(indices)`` reads
samples by position where the source allows random access (training minibatches, the escape engine),
and :func:`check_repeatable` refuses a loader that shuffles or augments at random."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import (
    BatchSampler,
    DataLoader,
    Dataset,
    IterableDataset,
    RandomSampler,
    SequentialSampler,
    Subset,
    default_collate,
)

from ..errors import ConfigError, LandscapeError
from . import batch as B
from .batch import IGNORE

Batch = tuple[B.Inputs, Tensor]

#: DataLoader settings carried over from a user's loader when landscape re-batches its dataset.
_LOADER_KEYS = ("num_workers", "pin_memory", "timeout", "worker_init_fn", "multiprocessing_context",
                "prefetch_factor", "persistent_workers", "in_order")


class RandomDataError(LandscapeError):
    """Two reads of the data gave different batches (a shuffling loader, random augmentation)."""


def _tensor(a: Any, what: str) -> Tensor:
    if isinstance(a, Tensor):
        return a.detach()
    if isinstance(a, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(a))
    try:
        return torch.as_tensor(a)
    except (TypeError, ValueError, RuntimeError) as e:
        raise ConfigError(f"the data give {what} of type {type(a).__name__}, not a tensor or array",
                          "return (inputs, targets) as tensors or NumPy arrays") from e


def as_pair(batch: Any, where: str = "a batch") -> Batch:
    """``(inputs, targets)`` from a collated batch: a tuple or list of two (extra trailing items
    such as sample ids are ignored), a dict with keys ``x`` and ``y``, or a dict of model keyword
    inputs (an HF batch: ``input_ids``, ``attention_mask``, ...) whose ``labels`` are the targets
    and are not passed to the model; without ``labels``, the ``input_ids`` with every position of
    ``attention_mask`` 0 set to −100 (the language-model convention)."""
    if isinstance(batch, dict) and "x" in batch and "y" in batch:
        batch = (batch["x"], batch["y"])
    elif isinstance(batch, dict):
        return _keyword_pair(batch, where)
    if not (isinstance(batch, (tuple, list)) and len(batch) >= 2):
        raise ConfigError(
            f"{where} of the data is {type(batch).__name__}, not an (inputs, targets) pair",
            "make the Dataset return (input, target) or the collate_fn (inputs, targets)",
        )
    x, y = _tensor(batch[0], "inputs"), _tensor(batch[1], "targets")
    if x.dim() == 0 or y.dim() == 0 or x.shape[0] != y.shape[0]:
        raise ConfigError(
            f"{where} of the data has inputs {tuple(x.shape)} and targets {tuple(y.shape)}",
            "inputs and targets need the same first (sample) dimension",
        )
    return x, y


def _keyword_pair(batch: dict, where: str) -> Batch:
    """``(model keyword inputs, labels)`` from a dict batch (see :func:`as_pair`)."""
    if "labels" not in batch and "input_ids" not in batch:
        raise ConfigError(
            f"{where} of the data is a dict with keys {sorted(map(str, batch))[:6]} and no "
            "'labels' (or 'input_ids'), so it is not an (inputs, targets) pair",
            "return 'labels' (or 'input_ids' for a language model) in each batch, or an "
            "(inputs, targets) pair",
        )
    inputs = {str(k): _tensor(v, f"{k!r}") for k, v in batch.items() if k != "labels"}
    if "labels" in batch:
        y = _tensor(batch["labels"], "'labels'")
    else:
        y = inputs["input_ids"].clone()
        if "attention_mask" in inputs:
            y[inputs["attention_mask"] == 0] = IGNORE
    n = {k: int(v.shape[0]) if v.dim() else 0 for k, v in inputs.items()}
    if not inputs or len(set(n.values())) != 1 or 0 in n.values() or y.dim() == 0 \
            or y.shape[0] != next(iter(n.values())):
        raise ConfigError(
            f"{where} of the data has inputs of first dimensions {n} and labels "
            f"{tuple(y.shape)}",
            "every entry of a dict batch needs the same first (sample) dimension",
        )
    return inputs, y


class DataSource:
    """Base class: ``n`` samples in a fixed order, read in batches (see the module docstring)."""

    #: whether :meth:`take` can read samples by position without a full pass
    random_access: bool = False
    kind: str = "source"
    #: why two reads would differ, when that is known from how the data were built (a shuffling
    #: loader); :func:`check_random` refuses such a source unless randomness is allowed
    random: str | None = None

    def __len__(self) -> int:  # pragma: no cover - abstract
        raise NotImplementedError

    def batches(self, size: int,
                pin: bool = False) -> Iterator[Batch]:  # pragma: no cover - abstract
        """CPU ``(inputs, targets)`` batches of ``size`` samples (the last may be smaller), in
        order; ``pin``: in page-locked memory, for a copy to a GPU that does not block."""
        raise NotImplementedError

    def select(self, positions: Tensor) -> DataSource:  # pragma: no cover - abstract
        """The source restricted to ``positions`` (increasing global positions of this source)."""
        raise NotImplementedError

    def take(self, positions: Tensor) -> Batch:
        """The samples at ``positions`` as one batch (random-access sources only)."""
        raise LandscapeError(f"this data ({self.describe()}) can only be read from the start",
                             "return a map-style Dataset or tensors from the data factory")

    def first(self, k: int = 2) -> Batch:
        """The first ``k`` samples (fewer if the source is smaller)."""
        for x, y in self.batches(k):  # a stream yields at most k samples per batch too
            return B.rows(x, slice(0, k)), y[:k]
        raise ConfigError("the data hold no samples",
                          "check the data factory (it returned an empty set)")

    def describe(self) -> str:
        return self.kind

    def map_targets(self, fn: Callable[[Tensor], Tensor]) -> DataSource:
        """The same samples with ``fn`` applied to every batch's targets (e.g. one-hot labels)."""
        return Mapped(self, fn)


def _positions(positions: Tensor | None, n: int) -> Tensor | None:
    if positions is None:
        return None
    pos = torch.as_tensor(positions, dtype=torch.long).reshape(-1)
    if pos.numel() and (int(pos.min()) < 0 or int(pos.max()) >= n):
        raise ConfigError(f"sample positions out of range for {n} samples", "report this bug")
    return pos


class TensorSource(DataSource):
    """``(X, Y)`` held in memory; ``index`` (rows of X in reading order) selects a subset."""

    random_access = True
    kind = "tensors"

    def __init__(self, x: Tensor, y: Tensor, index: Tensor | None = None) -> None:
        if B.size(x) != y.shape[0]:
            raise ConfigError(f"inputs hold {B.size(x)} samples but targets {y.shape[0]}",
                              "inputs and targets must have the same first dimension")
        self.x, self.y = x, y
        self.index = _positions(index, B.size(x))

    def __len__(self) -> int:
        return int(B.size(self.x) if self.index is None else self.index.numel())

    def batches(self, size: int, pin: bool = False) -> Iterator[Batch]:
        n = len(self)
        for i in range(0, n, size):
            if self.index is None:
                x, y = B.rows(self.x, slice(i, i + size)), self.y[i : i + size]
            else:
                idx = self.index[i : i + size]
                x, y = B.rows(self.x, idx), self.y[idx]
            if pin and y.device.type == "cpu":
                x, y = B.apply(x, Tensor.pin_memory), y.pin_memory()
            yield x, y

    def select(self, positions: Tensor) -> TensorSource:
        pos = _positions(positions, len(self))
        return TensorSource(self.x, self.y, pos if self.index is None else self.index[pos])

    def take(self, positions: Tensor) -> Batch:
        pos = torch.as_tensor(positions, dtype=torch.long, device=torch.device("cpu"))
        rows = pos if self.index is None else self.index[pos]
        return B.rows(self.x, rows), self.y[rows]

    def describe(self) -> str:
        shapes = {k: tuple(v.shape) for k, v in self.x.items()} if isinstance(self.x, dict) \
            else tuple(self.x.shape)
        return f"tensors {shapes}"


class DatasetSource(DataSource):
    """A map-style ``Dataset`` read in the order ``index`` (default ``0 … len−1``) through a
    ``DataLoader`` built for each pass, with ``collate`` and the loader ``settings`` (workers,
    pinning) of the user's own loader when one was given."""

    random_access = True
    kind = "dataset"

    def __init__(self, dataset: Dataset, index: Tensor | None = None,
                 collate: Callable | None = None,
                 settings: dict | None = None) -> None:
        self.dataset = dataset
        try:
            total = len(dataset)  # type: ignore[arg-type]
        except TypeError as e:
            raise ConfigError(f"the Dataset {type(dataset).__name__} has no length",
                              "define __len__, or make it an IterableDataset") from e
        self.index = _positions(index, total)
        self.collate = collate or default_collate
        self.settings = dict(settings or {})

    def __len__(self) -> int:
        n = self.index
        return len(self.dataset) if n is None else int(n.numel())  # type: ignore[arg-type]

    def _loader(self, size: int, pin: bool = False) -> DataLoader:
        data = self.dataset if self.index is None else Subset(self.dataset, self.index.tolist())
        kw = dict(self.settings)
        if pin:
            kw["pin_memory"] = True
        if not kw.get("num_workers"):
            for key in ("prefetch_factor", "persistent_workers", "timeout",
                        "multiprocessing_context"):
                kw.pop(key, None)
        return DataLoader(data, batch_size=size, shuffle=False, collate_fn=self.collate, **kw)

    def batches(self, size: int, pin: bool = False) -> Iterator[Batch]:
        for i, batch in enumerate(self._loader(size, pin)):
            yield as_pair(batch, f"batch {i}")

    def select(self, positions: Tensor) -> DatasetSource:
        pos = _positions(positions, len(self))
        return DatasetSource(self.dataset, pos if self.index is None else self.index[pos],
                             self.collate,
                             self.settings)

    def take(self, positions: Tensor) -> Batch:
        pos = torch.as_tensor(positions, dtype=torch.long, device=torch.device("cpu")).tolist()
        rows = pos if self.index is None else self.index[pos].tolist()
        return as_pair(self.collate([self.dataset[i] for i in rows]), "a minibatch")

    def describe(self) -> str:
        return f"Dataset {type(self.dataset).__name__} ({len(self)} samples)"


class StreamSource(DataSource):
    """An iterable of batches (a ``DataLoader`` or an ``IterableDataset`` read through one),
    re-read from its start on every pass. ``positions`` (increasing) keeps only those samples;
    batches are cut and joined to the requested size. ``n`` is counted by one pass when needed."""

    kind = "stream"

    def __init__(self, loader: Any, positions: Tensor | None = None,
                 count: int | None = None) -> None:
        self.loader = loader
        self.positions = None if positions is None else torch.as_tensor(positions, dtype=torch.long)
        self._count = count  # samples of the whole stream, once counted

    def _raw(self) -> Iterator[Batch]:
        for i, batch in enumerate(self.loader):
            yield as_pair(batch, f"batch {i}")

    def total(self) -> int:
        """Samples in the whole stream (one pass over it the first time)."""
        if self._count is None:
            self._count = sum(B.size(x) for x, _ in self._raw())
        return self._count

    def __len__(self) -> int:
        return self.total() if self.positions is None else int(self.positions.numel())

    def batches(self, size: int, pin: bool = False) -> Iterator[Batch]:
        pending: list[Batch] = []
        held = 0
        start = 0
        pos = self.positions
        for x, y in self._raw():
            b = B.size(x)
            if pos is not None:
                lo, hi = torch.searchsorted(pos, torch.tensor([start, start + b])).tolist()
                keep = pos[lo:hi] - start
                start += b
                if keep.numel() == 0:
                    continue
                if keep.numel() < b:
                    x, y = B.rows(x, keep), y[keep]
            else:
                start += b
            pending.append((x, y))
            held += B.size(x)
            while held >= size:
                out, pending, held = _cut(pending, size)
                yield out
            if pos is not None and start > int(pos[-1]):
                break  # every selected sample has been read
        if held:
            yield _cut(pending, held)[0]
        if self._count is None and pos is None:
            self._count = start

    def select(self, positions: Tensor) -> StreamSource:
        pos = torch.as_tensor(positions, dtype=torch.long).reshape(-1)
        if pos.numel() and int(pos.min()) < 0:
            raise ConfigError("negative sample positions", "report this bug")
        absolute = pos if self.positions is None else self.positions[pos]
        out = StreamSource(self.loader, absolute, self._count)
        out.random = self.random
        return out

    def describe(self) -> str:
        return f"stream of batches from {type(self.loader).__name__}"


def _cut(pending: list[Batch], size: int) -> tuple[Batch, list[Batch], int]:
    """The first ``size`` samples of the pending pieces as one batch, and what is left over."""
    xs, ys, got = [], [], 0
    rest: list[Batch] = []
    for i, (x, y) in enumerate(pending):
        need = size - got
        if need <= 0:
            rest.extend(pending[i:])
            break
        if B.size(x) <= need:
            xs.append(x)
            ys.append(y)
            got += B.size(x)
        else:
            xs.append(B.rows(x, slice(0, need)))
            ys.append(y[:need])
            rest.append((B.rows(x, slice(need, None)), y[need:]))
            rest.extend(pending[i + 1 :])
            got = size
            break
    out = (xs[0], ys[0]) if len(xs) == 1 else (B.cat(xs), B.cat_targets(ys))
    return out, rest, sum(B.size(x) for x, _ in rest)


class Mapped(DataSource):
    """Another source with a function applied to its targets."""

    def __init__(self, base: DataSource, fn: Callable[[Tensor], Tensor]) -> None:
        self.base, self.fn = base, fn
        self.random_access = base.random_access
        self.kind = base.kind
        self.random = base.random

    def __len__(self) -> int:
        return len(self.base)

    def batches(self, size: int, pin: bool = False) -> Iterator[Batch]:
        for x, y in self.base.batches(size, pin):
            yield x, self.fn(y)

    def select(self, positions: Tensor) -> DataSource:
        return Mapped(self.base.select(positions), self.fn)

    def take(self, positions: Tensor) -> Batch:
        x, y = self.base.take(positions)
        return x, self.fn(y)

    def describe(self) -> str:
        return self.base.describe()


# ----------------------------------------------------------------------------- from user objects


def as_source(data: Any) -> DataSource:
    """A :class:`DataSource` from what a data factory returns: ``(inputs, targets)`` tensors or
    arrays (a tuple, a list or a dict with keys ``x`` and ``y``), a ``TensorDataset``, a map-style
    ``Dataset``, an ``IterableDataset``, or a ``DataLoader`` over any of them.

    A loader over a map-style dataset whose sampler is sequential (``shuffle=False``) or otherwise
    repeatable is read through its dataset and ``collate_fn`` in the sampler's order, so landscape
    chooses the batch size and reads only the samples it needs; a shuffling loader is read as a
    stream and marked ``random`` (:func:`check_random` refuses it unless allowed). A loader with a
    batch sampler of its own, or over an ``IterableDataset``, is read as a stream of its own
    batches."""
    if isinstance(data, DataSource):
        return data
    if isinstance(data, DataLoader):
        return _from_loader(data)
    if isinstance(data, torch.utils.data.TensorDataset) and len(data.tensors) == 2:
        return TensorSource(data.tensors[0], data.tensors[1])
    if isinstance(data, IterableDataset):
        return StreamSource(DataLoader(data, batch_size=256, collate_fn=default_collate))
    if isinstance(data, Dataset):
        return DatasetSource(data)
    if isinstance(data, dict) and "x" in data and "y" in data:
        data = (data["x"], data["y"])
    elif isinstance(data, dict):  # whole-data keyword inputs with their labels (see as_pair)
        return TensorSource(*_keyword_pair(data, "the data"))
    if isinstance(data, (tuple, list)) and len(data) == 2 and isinstance(data[0], dict):
        return TensorSource(*_keyword_pair({**data[0], "labels": data[1]}, "the data"))
    if isinstance(data, (tuple, list)) and len(data) == 2:
        x, y = _tensor(data[0], "inputs"), _tensor(data[1], "targets")
        if x.dim() == 0 or y.dim() == 0:
            raise ConfigError(f"the data give inputs {tuple(x.shape)} and targets {tuple(y.shape)}",
                              "inputs and targets need a first (sample) dimension")
        return TensorSource(x, y)
    raise ConfigError(
        "data must be (inputs, targets) tensors, a Dataset or a DataLoader, got "
        f"{type(data).__name__}",
        "return a tuple (X, Y), a torch Dataset or a DataLoader from the data factory",
    )


def _random_stream(loader: DataLoader, why: str) -> StreamSource:
    out = StreamSource(loader)
    out.random = why
    return out


def _from_loader(loader: DataLoader) -> DataSource:
    ds = loader.dataset
    if isinstance(ds, IterableDataset):
        return StreamSource(loader)
    bs = loader.batch_sampler
    if not isinstance(bs, BatchSampler) or loader.batch_size is None:
        return StreamSource(loader)  # the user's own batching: read it as it is
    sampler = bs.sampler
    if isinstance(sampler, RandomSampler):
        return _random_stream(loader, "the DataLoader shuffles (its sampler is a RandomSampler)")
    settings = {k: getattr(loader, k) for k in _LOADER_KEYS if hasattr(loader, k)}
    if isinstance(sampler, SequentialSampler):
        index = None
    else:
        order = list(iter(sampler))
        if order != list(iter(sampler)):
            return _random_stream(
                loader,
                f"the DataLoader's sampler ({type(sampler).__name__}) gives another "
                "order on every pass",
            )
        index = torch.as_tensor(order, dtype=torch.long)
    total = len(ds) if index is None else int(index.numel())  # type: ignore[arg-type]
    if bs.drop_last:  # keep exactly the samples the user's loader yields
        kept = (total // bs.batch_size) * bs.batch_size
        index = (torch.arange(kept) if index is None else index[:kept])
    return DatasetSource(ds, index, loader.collate_fn, settings)


def check_repeatable(source: DataSource, size: int) -> None:
    """Refuse data that differ between reads: a loader known to shuffle, or one whose first batch
    read twice differs (random augmentation). Every estimate here needs the same loss at every
    pass (Hessian products are averaged over passes, Lanczos needs one fixed matrix)."""
    if source.random:
        raise RandomDataError(
            f"{source.random}, so every pass would see other batches",
            "build it with shuffle=False, or pass --allow-random-data to measure anyway",
        )
    a = next(iter(source.batches(size)))
    b = next(iter(source.batches(size)))
    same = B.equal(a[0], b[0]) and B.equal(a[1], b[1])
    if not same:
        raise RandomDataError(
            "two reads of the first batch gave different data (the loader shuffles, or the "
            "Dataset draws random transforms)",
            "use shuffle=False and no random augmentation, or pass --allow-random-data",
        )


def batch_nbytes(batch: Batch) -> int:
    return B.nbytes(*batch)


def split_positions(n: int, rank: int, world: int) -> Tensor:
    """Rank ``rank``'s share ``rank, rank + world, …`` of ``n`` global positions."""
    return torch.arange(rank, n, world, dtype=torch.long)


def seeded_subset(n: int, k: int, seed: int) -> Tensor:
    """``k`` of ``n`` positions drawn without replacement from ``seed``, in increasing order."""
    g = torch.Generator().manual_seed(int(seed))
    return torch.randperm(n, generator=g)[:k].sort().values


def n_batches(n: int, size: int) -> int:
    return math.ceil(n / max(1, size))
