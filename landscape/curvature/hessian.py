"""The Hessian ``H = ∇²L(θ) = (1/n) Σ_i ∇²l_i(θ)`` as a linear operator."""

from __future__ import annotations

from typing import Literal

import torch

from ..data import batch as B
from ..problem import Problem
from . import functional as fx
from .base import ProblemOperator

#: On a CPU, passes of 8 or more vectors cache graphs only when all of them fit this (bytes).
CPU_WIDE_CACHE = 512 << 20


class Hessian(ProblemOperator):
    """``H v``, summed over mini-batches with exact weights, for blocks of vectors at once.

    Two engines give the same numbers:

    - ``"graph"`` (default): on each batch the gradient is computed once with its graph
      (``create_graph=True``); every vector of the block is then one reverse pass through it
      (double backward; ``vmap`` vectors at a time with ``is_grads_batched``). Graphs are kept
      between passes while their measured bytes fit the memory budget (``cache_bytes`` caps the
      cache; default: what the plan leaves free); the others are rebuilt on each pass, so a
      block of k vectors builds each of them once, not k times.
    - ``"jvp"``: forward-over-reverse (``jvp`` of ``grad``, Pearlmutter 1994) vmapped over
      ``vmap`` vectors; stores nothing between products.

    Products are taken at the problem's parameters; build a new operator for new parameters.

    >>> import torch, landscape
    >>> model = torch.nn.Linear(1, 1, bias=False)          # f(x) = w x
    >>> _ = model.weight.data.fill_(2.0)
    >>> H = landscape.Hessian(model, "mse", (torch.tensor([[3.0]]), torch.tensor([[1.0]])))
    >>> H.dense()                                           # ∂²/∂w² ½(3w − 1)² = 9
    tensor([[9.]])
    """

    def __init__(self, model_or_problem, loss=None, data=None, *, engine: Literal["graph",
                                                                                  "jvp"] = "graph",
                 cache_bytes: int | None = None, block_size: int | None = None,
                 vmap: int | None = None,
                 **kwargs) -> None:
        super().__init__(model_or_problem, loss, data, block_size=block_size, vmap=vmap, **kwargs)
        if engine not in ("graph", "jvp"):
            raise ValueError(f"engine must be 'graph' or 'jvp', got {engine!r}")
        self.engine = engine
        self.cache_bytes = cache_bytes
        self._graphs: dict[tuple[int, int], fx.GradientGraph] = {}
        self._cached = 0

    # ------------------------------------------------------------------ plan
    def _calibrate(self, x, y):
        if self.engine == "jvp":
            return super()._calibrate(x, y)
        # the graph's saved activations, counted; a build and one reverse pass through it peak at
        # 2.7-3.3x that (resident memory measured on ResNet-18 and a BatchNorm CNN at batch 128):
        # 1.3x while building, 1.5x more per vmapped vector
        per = self._build(x, y, limit=None).nbytes / B.size(x)
        return 1.3 * per, 1.5 * per

    def _caches(self) -> bool:
        return self.engine == "graph" and self.cache_bytes != 0

    def _wide_cache_cap(self) -> float:
        """On a CPU, unless ``cache_bytes`` is given, passes of 8 or more vectors keep graphs only
        when all the batches' graphs together take at most ``CPU_WIDE_CACHE``. Measured on ResNet-18
        and a BatchNorm CNN (1k-16k samples): rebuilding each batch's graph once per pass for a
        block of 16 was 1.1-1.6x faster than reading cached graphs back for a block of 8, at a flat
        0.8-1.8 GiB where the cache held up to 15 GiB, and caching part of them (512 MiB) gained
        nothing; small graphs (the digits models) gain 5-13% from the cache, and so do passes of
        fewer vectors (block Lanczos of 5: 37 s cached against 44 s rebuilt on the CNN), which keep
        the whole budget."""
        if self.cache_bytes is not None or self.device.type == "cuda":
            return float("inf")
        return float(CPU_WIDE_CACHE)

    def _make_plan(self):
        plan = super()._make_plan()
        if self.cache_bytes is not None:
            plan.cache = min(plan.cache, int(self.cache_bytes))
        return plan

    def _drop_cache(self) -> bool:
        had = bool(self._graphs)
        self._graphs.clear()
        self._cached = 0
        return had

    # ------------------------------------------------------------------ products
    def _build(self, x, y, limit: int | None) -> fx.GradientGraph:
        pb = self.problem
        meter = fx.SavedBytes(limit=limit, exclude=[*pb.params.values(), *pb.frozen.values(),
                                                    *B.tensors(x), y])
        return fx.GradientGraph(pb.forward, pb.loss, pb.params, x, y, meter=meter)

    def _prepare(self, i: int, start: int, x, y, width: int = 1):
        if self.engine == "jvp":
            return None
        plan = self.plan()
        if i < 0:  # a batch of its own (timing): not cached
            return self._build(x, y, limit=None)
        key = (plan.batch, i)
        if key in self._graphs:
            return self._graphs[key]
        # what this graph may take: the budget less the cache, the block's rows and the
        # reverse passes' transients (an OutOfBudget beyond it shrinks the plan)
        others = (
            3 * plan.block + 2 * plan.vmap
        ) * self.p_bytes + plan.per_sample * plan.vmap * B.size(x)
        others += (plan.fixed / 1.3) * 0.3 * B.size(x)  # the build's own transients
        gg = self._build(x, y, limit=max(int(plan.budget - self._cached - others), 0))
        revisited = self.passes_left is None or self.passes_left > 1
        if revisited and plan.keeps(width) and self._cached + gg.nbytes <= plan.cache:
            self._graphs[key] = gg
            self._cached += gg.nbytes
            gg.cached = True
        return gg

    def _apply(self, state, x, y, V, last=False):
        if state is None:
            return self._batch_product(self.problem.params, x, y, V)
        return state.hvp(V, last=last and not getattr(state, "cached", False))

    def _batch_product(self, params, x, y, V):
        pb = self.problem
        return fx.hvp(pb.forward, pb.loss, params, x, y, V)

    def cache_report(self) -> dict:
        """How many batches' graphs are cached and their measured bytes."""
        return {"cached_graphs": len(self._graphs), "cached_bytes": self._cached}


def precision_check(problem: Problem, products: int = 3, seed: int = 0) -> dict:
    """How far Hessian products in the problem's low precision (bfloat16, float16) are from
    float32's: ``‖H_low v − H_32 v‖ / ‖H_32 v‖`` for ``products`` Rademacher vectors ``v`` (the
    same data, the model cast to float32)."""
    g = torch.Generator().manual_seed(int(seed))
    V = (torch.randint(0, 2, (problem.p, products), generator=g) * 2 - 1).to(
        device=problem.device, dtype=torch.float32)  # Rademacher
    ref = Hessian(problem.retyped(torch.float32))
    low = Hessian(problem)
    want, got = ref.matmat(V), low.matmat(V)
    rel = (torch.linalg.vector_norm(got - want, dim=0)
           / torch.linalg.vector_norm(want, dim=0)).tolist()
    return {"dtype": str(problem.dtype).replace("torch.", ""), "products": products,
            "relative_difference": rel, "max_relative_difference": max(rel)}
