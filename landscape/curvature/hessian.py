"""The Hessian ``H = ∇²L(θ) = (1/n) Σ_i ∇²l_i(θ)`` as a linear operator."""

from __future__ import annotations

from typing import Literal

from . import functional as fx
from .base import ProblemOperator


class Hessian(ProblemOperator):
    """``H v``, summed over mini-batches with exact weights, for blocks of vectors at once.

    Two engines give the same numbers:

    - ``"graph"`` (default): each batch's gradient is computed once with its graph
      (``create_graph=True``) and kept while the graphs fit in ``cache_bytes``; every later block
      product is one reverse pass through the stored graph, batched over the block
      (``is_grads_batched``). Batches beyond the budget are rebuilt on each product.
    - ``"jvp"``: forward-over-reverse (``jvp`` of ``grad``, Pearlmutter 1994) vmapped over the block;
      stores nothing between products.

    Products are taken at the problem's parameters; build a new operator for new parameters.

    >>> import torch, landscape
    >>> model = torch.nn.Linear(1, 1, bias=False)          # f(x) = w x
    >>> _ = model.weight.data.fill_(2.0)
    >>> H = landscape.Hessian(model, "mse", (torch.tensor([[3.0]]), torch.tensor([[1.0]])))
    >>> H.dense()                                           # ∂²/∂w² ½(3w − 1)² = 9
    tensor([[9.]])
    """

    def __init__(self, model_or_problem, loss=None, data=None, *, engine: Literal["graph", "jvp"] = "graph",
                 cache_bytes: int = 1 << 30, block_size: int | None = None, **kwargs) -> None:
        super().__init__(model_or_problem, loss, data, block_size=block_size, **kwargs)
        if engine not in ("graph", "jvp"):
            raise ValueError(f"engine must be 'graph' or 'jvp', got {engine!r}")
        self.engine = engine
        self.cache_bytes = cache_bytes
        self._graphs: dict[int, fx.GradientGraph] = {}
        self._cached = 0

    def _graph(self, i: int, x, y) -> fx.GradientGraph:
        if i in self._graphs:
            return self._graphs[i]
        pb = self.problem
        gg = fx.GradientGraph(pb.forward, pb.loss, pb.params, x, y)
        if self._cached + gg.nbytes <= self.cache_bytes:
            self._graphs[i] = gg
            self._cached += gg.nbytes
        return gg

    def _matmat(self, V):
        if self.engine == "jvp":
            return super()._matmat(V)
        pb = self.problem
        rows = V.T.contiguous()
        Vd = pb.layout.unflatten_rows(rows)
        out = rows.new_zeros(rows.shape)
        for i, (x, y) in enumerate(pb.batches):
            out += pb.layout.flatten_rows(self._graph(i, x, y).hvp(Vd))
        out /= pb.n
        return pb.reduce(out).T

    def _batch_product(self, params, x, y, V):
        pb = self.problem
        return fx.hvp(pb.forward, pb.loss, params, x, y, V)
