"""What several commands share: checkpoint → problem, and report assembly."""

from __future__ import annotations

import time
from pathlib import Path

from ..io.checkpoint import Checkpoint
from ..io.checkpoint import report_header as header  # noqa: F401  (the commands import it from here)
from ..problem import Problem


def load_problem(
    checkpoint: Path,
    *,
    model: str | None = None,
    data: str | None = None,
    loss: str | None = None,
    split: str = "train",
    samples: int | None = None,
    batch_size: int = 256,
    params: str | None = None,
    device: str = "cpu",
    dtype: str = "float32",
    train_mode: bool = False,
    seed: int = 0,
) -> tuple[Checkpoint, Problem]:
    """Load a checkpoint (native, or foreign with model/data factories) and build its problem."""
    ckpt = Checkpoint.load(checkpoint, model=model, data=data, loss=loss)
    problem = ckpt.problem(split=split, samples=samples, seed=seed, batch_size=batch_size, params=params,
                           device=device, dtype=dtype, train_mode=train_mode)
    return ckpt, problem


class Stopwatch:
    def __init__(self) -> None:
        self.t0 = time.perf_counter()

    def __call__(self) -> float:
        return round(time.perf_counter() - self.t0, 4)
