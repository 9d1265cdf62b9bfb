"""``Split``: a dataset's train and test parts, with what a checkpoint needs to know about it.

A part is a pair of tensors ``(inputs, targets)`` (the built-in datasets, user factories that
return arrays) or a :class:`~landscape.data.source.DataSource` read batch by batch (user factories
that return a Dataset or a DataLoader): those are never concatenated, except by :func:`to_tensors`
for the one consumer that needs random access to every sample at once (``landscape train``)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from typing import Literal

import torch
from torch import Tensor

from landscape.data import batch as B
from landscape.data.source import DataSource
from landscape.errors import ConfigError, LandscapeError

Task = Literal["classification", "regression", "tokens"]
Pair = tuple[Tensor, Tensor]
Part = Pair | DataSource


def part_len(part: Part) -> int:
    """Samples in a part."""
    return len(part) if isinstance(part, DataSource) else B.size(part[0])


def first(part: Part, k: int = 2) -> Pair:
    """Its first ``k`` samples."""
    return part.first(k) if isinstance(part, DataSource) else (B.rows(part[0], slice(0, k)),
                                                               part[1][:k])


def to_tensors(part: Part) -> Pair:
    """A part as one pair of tensors (a source is read once and concatenated)."""
    if not isinstance(part, DataSource):
        return part
    xs, ys = zip(*part.batches(4096))
    return (B.cat(list(xs)), B.cat_targets(list(ys))) if len(xs) > 1 else (xs[0], ys[0])


@dataclass
class Split:
    """Train (and optional test) tensors ``(inputs [N, *input_shape], targets)``.

    Targets are int64 class labels ``[N]`` for ``task="classification"`` and float ``[N, out_dim]``
    for ``task="regression"``. ``info`` holds plain values describing the source (name, options,
    sizes); ``record()`` adds a content fingerprint for checkpoints."""

    train: Part
    test: Part | None
    task: Task
    num_classes: int | None
    input_shape: tuple[int, ...]
    info: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.task not in ("classification", "regression", "tokens"):
            raise ConfigError(f"unknown task {self.task!r}",
                              "use classification, regression or tokens")
        self.input_shape = tuple(int(s) for s in self.input_shape)
        for part, pair in (("train", self.train), ("test", self.test)):
            if pair is None or isinstance(pair, DataSource):
                continue
            x, y = pair
            if B.size(x) != y.shape[0]:
                raise LandscapeError(
                    f"{part} inputs have {B.size(x)} samples but targets have {y.shape[0]}",
                    "inputs and targets must have the same first dimension",
                )

    @property
    def n_train(self) -> int:
        return part_len(self.train)

    @property
    def n_test(self) -> int:
        return 0 if self.test is None else part_len(self.test)

    @property
    def output_dim(self) -> int:
        """Number of model outputs: classes, or the regression target width."""
        if self.task == "classification":
            if self.num_classes is None:  # a streamed part: one pass over its labels
                parts = [p for p in (self.train, self.test) if p is not None]
                self.num_classes = 1 + max(int(y.max()) for p in parts
                                           for _, y in (p.batches(4096) if isinstance(p,
                                               DataSource) else [p])
                                           if y.numel())
            return int(self.num_classes)
        y = first(self.train)[1]
        return 1 if y.dim() < 2 else int(y[0].numel())

    @property
    def default_loss(self) -> str:
        """``cross-entropy`` for classification, ``mse`` for regression, ``causal-lm`` for token
        labels."""
        return {"classification": "cross-entropy", "tokens": "causal-lm"}.get(self.task, "mse")

    def for_loss(self, loss: str) -> Split:
        """The split with targets fit for ``loss``: for ``mse`` on a classification task, the class
        labels one-hot encoded as float (the lecture slides' squared error on one-hot labels; the
        task stays classification, so accuracy is the argmax of outputs against that of targets).
        Otherwise the split itself."""
        if loss != "mse" or self.task != "classification":
            return self
        k = self.output_dim

        def encode(y: Tensor, like: Tensor) -> Tensor:
            if y.is_floating_point():
                return y
            return torch.nn.functional.one_hot(y, k).to(
                like.dtype if like.is_floating_point() else torch.float32
            )

        def onehot(pair: Part | None) -> Part | None:
            if pair is None:
                return None
            if isinstance(pair, DataSource):
                dtype = first(pair, 1)[0]
                return pair.map_targets(lambda y: encode(y, dtype))
            return pair[0], encode(pair[1], pair[0])

        return replace(self, train=onehot(self.train), test=onehot(self.test))

    def part(self, which: str = "train") -> Part:
        """The ``train`` or ``test`` pair; a LandscapeError when there is no test split."""
        if which == "train":
            return self.train
        if which == "test":
            if self.test is None:
                raise LandscapeError(
                    f"dataset {self.info.get('name', '?')!r} has no test split",
                    "use the train split, or load it with a test fraction / test files",
                )
            return self.test
        raise ConfigError(f"unknown split {which!r}", "use train or test")

    def record(self) -> dict:
        """``info`` plus sizes, task and a sha256 fingerprint of the train tensors (16 hex)."""
        return {
            **self.info,
            "n_train": self.n_train,
            "n_test": self.n_test,
            "task": self.task,
            "num_classes": self.num_classes,
            "input_shape": list(self.input_shape),
            "fingerprint": fingerprint(self.train),
        }


def fingerprint(pair: Part) -> str:
    """First 16 hex digits of the sha256 of the tensors' dtypes, shapes and bytes (of a streamed
    part: its length and first 64 samples)."""
    h = hashlib.sha256()
    if isinstance(pair, DataSource):
        h.update(f"stream {len(pair)}".encode())
        pair = pair.first(64)
    for t in [t for part in pair for t in B.tensors(part)]:
        t = t.detach().cpu().contiguous()
        h.update(f"{t.dtype}{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().data if t.numel() else b"")
    return h.hexdigest()[:16]


def take(pair: Pair, idx: Tensor) -> Pair:
    """Rows ``idx`` of both tensors."""
    return B.rows(pair[0], idx), pair[1][idx]


def random_split(
    pair: Pair, test_fraction: float, generator: torch.Generator
) -> tuple[Pair, Pair | None]:
    """Seeded disjoint train/test split; each part keeps the original order."""
    if not 0.0 <= float(test_fraction) < 1.0:
        raise ConfigError(
            f"test_fraction must be in [0, 1), got {test_fraction}", "e.g. test_fraction=0.2"
        )
    n = B.size(pair[0])
    n_test = round(float(test_fraction) * n)
    if n_test == 0:
        return pair, None
    perm = torch.randperm(n, generator=generator)
    test_idx, _ = perm[:n_test].sort()
    train_idx, _ = perm[n_test:].sort()
    return take(pair, train_idx), take(pair, test_idx)


def subset(pair: Part, k: int, generator: torch.Generator) -> Part:
    """A seeded subset of ``k`` rows in the original order (of a source: a selection of it)."""
    idx, _ = torch.randperm(part_len(pair), generator=generator)[:k].sort()
    return pair.select(idx) if isinstance(pair, DataSource) else take(pair, idx)
