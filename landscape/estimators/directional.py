"""Curvature along a direction: the Rayleigh quotient ``vᵀAv / vᵀv`` (docs/algorithms.md §1),
here along the gradient, where the optimizer moves (Gur-Ari et al. 2018 track it; Cohen et al.
2021 compare it with ``2/η``)."""

from __future__ import annotations

import torch

from landscape.curvature.operator import as_operator
from landscape.results import Estimate


def rayleigh_quotient(op, v: torch.Tensor) -> float:
    """``vᵀAv / vᵀv`` with one product, reduced in float64 (0 for ``v = 0``); ``op`` an operator
    or a dense matrix."""
    op = as_operator(op)
    v = v.reshape(-1, 1)
    Av = op.matmat(v.to(dtype=op.dtype, device=op.device)).double()
    vv = float((v.double() ** 2).sum())
    return float((v.double().to(Av.device) * Av).sum()) / vv if vv > 0 else 0.0


def gradient_curvature(op) -> Estimate:
    """``gᵀHg / ‖g‖²`` at the problem's parameters, ``g = ∇L`` on the same samples: exact (no
    sampling, so no standard error), one Hessian product. ``extra``: ``grad_norm`` and the loss."""
    from landscape.estimators.perturbation import problem_of

    problem = problem_of(op)
    loss, g = problem.gradient()
    value = rayleigh_quotient(op, g)
    return Estimate(value, 0.0, 1, "exact", {"grad_norm": float(g.double().norm()), "loss": loss})


__all__ = ["gradient_curvature", "rayleigh_quotient"]
