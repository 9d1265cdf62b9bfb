"""The generalised Gauss-Newton matrix ``G = (1/n) Σ_i J_iᵀ (∂²l_i/∂f²) J_i`` as a linear
operator."""

from __future__ import annotations

from . import functional as fx
from .base import ProblemOperator


class GGN(ProblemOperator):
    """``G v = (1/n) Σ_i J_iᵀ (∂²l_i/∂f_i²) J_i v`` (Schraudolph 2002; docs/algorithms.md §1 "GGN"),
    by a Jacobian-vector product, the loss Hessian in output space and a vector-Jacobian product.

    PSD for convex losses; equal to the true Fisher for softmax cross-entropy
    (``∂²l/∂f² = diag π − ππᵀ``) and for mse ``½‖f − y‖²`` (``∂²l/∂f² = I``, so
    ``G = (1/n) Σ_i ∇f_i ∇f_iᵀ``, the lecture's G in "An important observation"; ``H = G`` at an
    interpolating minimum). Batches are summed with exact weights and over ranks.

    >>> import torch, landscape
    >>> model = torch.nn.Linear(1, 1, bias=False)          # f(x) = w x
    >>> _ = model.weight.data.fill_(2.0)
    >>> G = landscape.GGN(model, "mse", (torch.tensor([[3.0]]), torch.tensor([[1.0]])))
    >>> G.dense()                                           # x² = 9 (= H: f is linear in w)
    tensor([[9.]])
    """

    def _batch_product(self, params, x, y, V):
        pb = self.problem
        return fx.ggn_vp(pb.forward, pb.loss, params, x, y, V)
