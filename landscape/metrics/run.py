"""Run registered metrics on a problem: the whole library behind ``landscape sharpness``."""

from __future__ import annotations

import re
import time
from collections.abc import Callable

from ..curvature.hessian import Hessian
from ..curvature.operator import LinearOperator
from ..problem import Problem
from . import METRICS, Metric, Settings


class Counted(LinearOperator):
    """An operator that reports each block product to ``on_product(k)`` (progress bars)."""

    def __init__(self, op: LinearOperator, on_product: Callable[[int], None]) -> None:
        super().__init__(op.shape[0], op.dtype, op.device)
        self.op, self.on_product = op, on_product
        self.block_size = op.block_size
        self.memory = op.memory

    def _matmat(self, V):
        out = self.op.matmat(V)
        self.on_product(V.shape[1])
        return out


def measure(
    problem: Problem,
    metrics: list[str],
    settings: Settings,
    *,
    operator: Callable[[Problem], LinearOperator] = Hessian,
    registry: dict[str, Metric] = METRICS,
    on_start: Callable[[str, int | None], None] | None = None,
    on_product: Callable[[int], None] | None = None,
) -> dict:
    """``{metric key: result}`` for the problem's operator (the Hessian by default)."""
    op = operator(problem)
    results = {}
    for name in metrics:
        m = registry[name]
        if on_start:
            on_start(name, m.cost(settings))
        target = Counted(op, on_product) if on_product else op
        results[m.key] = m.compute(target, settings)
    return results


def layer_problems(problem: Problem) -> dict[str, Problem]:
    """One sub-problem per layer (parameters grouped by module name)."""
    return {layer: problem.restrict("^(" + "|".join(re.escape(n) for n in names) + ")$")
            for layer, names in problem.layout.groups().items()}


def timed(fn, *args, **kwargs):
    t = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - t
