"""Operators built from a :class:`~landscape.problem.Problem`: a sum of per-batch products.

``A V = (1/n) Σ_batches Σ_{i∈batch} A_i V``, summed over ranks under torch.distributed. A subclass
implements only its per-batch product ``_batch_product(params, x, y, V)`` through
:mod:`landscape.curvature.functional`.
"""

from __future__ import annotations

import torch

from ..problem import Problem
from .operator import LinearOperator


def as_problem(model_or_problem, loss=None, data=None, **kwargs) -> Problem:
    """A :class:`Problem` as is, or one built from ``(model, loss, data, **kwargs)``."""
    if isinstance(model_or_problem, Problem):
        if loss is not None or data is not None or kwargs:
            raise TypeError("pass either a Problem or (model, loss, data, ...), not both")
        return model_or_problem
    if loss is None or data is None:
        raise TypeError("a model needs loss= and data= (or pass a Problem)")
    return Problem(model_or_problem, loss, data, **kwargs)


class ProblemOperator(LinearOperator):
    """Base of the curvature operators: exact mean over all samples of per-batch products."""

    block_size = 32

    def __init__(self, model_or_problem, loss=None, data=None, *, block_size: int | None = None, **kwargs) -> None:
        self.problem = as_problem(model_or_problem, loss, data, **kwargs)
        super().__init__(self.problem.p, self.problem.dtype, self.problem.device)
        if block_size is not None:
            self.block_size = block_size

    def _batch_product(self, params, x, y, V: dict) -> dict:  # pragma: no cover - abstract
        raise NotImplementedError

    def _matmat(self, V: torch.Tensor) -> torch.Tensor:
        pb = self.problem
        rows = V.T.contiguous()  # [k, p]
        Vd = pb.layout.unflatten_rows(rows)
        out = torch.zeros_like(rows)
        for x, y in pb.batches:
            out += pb.layout.flatten_rows(self._batch_product(pb.params, x, y, Vd))
        out /= pb.n
        return pb.reduce(out).T
