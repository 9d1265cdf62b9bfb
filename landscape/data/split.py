"""``Split``: a dataset held as tensors, with what a checkpoint needs to know about it."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from typing import Literal

import torch
from torch import Tensor

from landscape.errors import ConfigError, LandscapeError

Task = Literal["classification", "regression"]
Pair = tuple[Tensor, Tensor]


@dataclass
class Split:
    """Train (and optional test) tensors ``(inputs [N, *input_shape], targets)``.

    Targets are int64 class labels ``[N]`` for ``task="classification"`` and float
    ``[N, out_dim]`` for ``task="regression"``. ``info`` holds plain values describing the
    source (name, options, sizes); ``record()`` adds a content fingerprint for checkpoints.
    """

    train: Pair
    test: Pair | None
    task: Task
    num_classes: int | None
    input_shape: tuple[int, ...]
    info: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.task not in ("classification", "regression"):
            raise ConfigError(f"unknown task {self.task!r}", "use classification or regression")
        self.input_shape = tuple(int(s) for s in self.input_shape)
        for part, pair in (("train", self.train), ("test", self.test)):
            if pair is None:
                continue
            x, y = pair
            if x.shape[0] != y.shape[0]:
                raise LandscapeError(
                    f"{part} inputs have {x.shape[0]} samples but targets have {y.shape[0]}",
                    "inputs and targets must have the same first dimension",
                )

    @property
    def n_train(self) -> int:
        return int(self.train[0].shape[0])

    @property
    def n_test(self) -> int:
        return 0 if self.test is None else int(self.test[0].shape[0])

    @property
    def output_dim(self) -> int:
        """Number of model outputs: classes, or the regression target width."""
        if self.task == "classification":
            return int(self.num_classes or 0)
        y = self.train[1]
        return 1 if y.dim() < 2 else int(y[0].numel())

    @property
    def default_loss(self) -> str:
        """``cross-entropy`` for classification, ``mse`` for regression."""
        return "cross-entropy" if self.task == "classification" else "mse"

    def for_loss(self, loss: str) -> Split:
        """The split with targets fit for ``loss``: for ``mse`` on a classification task, the class
        labels one-hot encoded as float (the lecture slides' squared error on one-hot labels; the
        task stays classification, so accuracy is the argmax of outputs against that of targets).
        Otherwise the split itself."""
        if loss != "mse" or self.task != "classification":
            return self
        k = self.output_dim

        def onehot(pair: Pair | None) -> Pair | None:
            if pair is None or pair[1].is_floating_point():
                return pair
            return pair[0], torch.nn.functional.one_hot(pair[1], k).to(pair[0].dtype if pair[0].is_floating_point()
                                                                       else torch.float32)

        return replace(self, train=onehot(self.train), test=onehot(self.test))

    def part(self, which: str = "train") -> Pair:
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


def fingerprint(pair: Pair) -> str:
    """First 16 hex digits of the sha256 of the tensors' dtypes, shapes and bytes."""
    h = hashlib.sha256()
    for t in pair:
        t = t.detach().cpu().contiguous()
        h.update(f"{t.dtype}{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().data if t.numel() else b"")
    return h.hexdigest()[:16]


def take(pair: Pair, idx: Tensor) -> Pair:
    """Rows ``idx`` of both tensors."""
    return pair[0][idx], pair[1][idx]


def random_split(
    pair: Pair, test_fraction: float, generator: torch.Generator
) -> tuple[Pair, Pair | None]:
    """Seeded disjoint train/test split; each part keeps the original order."""
    if not 0.0 <= float(test_fraction) < 1.0:
        raise ConfigError(
            f"test_fraction must be in [0, 1), got {test_fraction}", "e.g. test_fraction=0.2"
        )
    n = pair[0].shape[0]
    n_test = round(float(test_fraction) * n)
    if n_test == 0:
        return pair, None
    perm = torch.randperm(n, generator=generator)
    test_idx, _ = perm[:n_test].sort()
    train_idx, _ = perm[n_test:].sort()
    return take(pair, train_idx), take(pair, test_idx)


def subset(pair: Pair, k: int, generator: torch.Generator) -> Pair:
    """A seeded subset of ``k`` rows in the original order."""
    idx, _ = torch.randperm(pair[0].shape[0], generator=generator)[:k].sort()
    return take(pair, idx)
