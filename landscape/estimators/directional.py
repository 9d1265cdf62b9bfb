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


def subspace_fraction(V: torch.Tensor, v: torch.Tensor) -> float:
    """``‖P v‖² / ‖v‖²`` with ``P`` the orthogonal projection onto the span of the columns of
    ``V: [p, k]`` (orthonormalised here, in float64): 1 for ``v`` in the span, 0 orthogonal to
    it."""
    Q, _ = torch.linalg.qr(V.double())
    v = v.reshape(-1).double().to(Q.device)
    vv = float(v @ v)
    return float((Q.T @ v).square().sum()) / vv if vv > 0 else 0.0


def gradient_in_top_subspace(op, k: int = 1, tol: float = 1e-6, seed: int = 0,
                             block: int | None = None, max_steps: int | None = None) -> Estimate:
    """The fraction of ``‖g‖²`` in the span of the top-``k`` Hessian eigenvectors (Gur-Ari,
    Roberts & Dyer 2018: SGD's gradient lives mostly there): ``‖V_kᵀ g‖² / ‖g‖²`` with ``V_k``
    the Ritz vectors of Lanczos, whose residuals (``extra``) bound how far they are from the
    eigenvectors; no sampling, so no standard error."""
    from landscape.estimators.lanczos import top_eigenvalues
    from landscape.estimators.perturbation import problem_of

    problem = problem_of(op)
    eig = top_eigenvalues(op, k=k, which="top", tol=tol, seed=seed, block=block,
                          max_steps=max_steps, return_vectors=True)
    _, g = problem.gradient()
    return Estimate(subspace_fraction(eig.vectors, g), 0.0, eig.matvecs, "lanczos",
                    {"k": k, "eigenvalues": eig.values.tolist(),
                     "residuals": eig.residuals.tolist(), "grad_norm": float(g.double().norm())})


__all__ = ["gradient_curvature", "gradient_in_top_subspace", "rayleigh_quotient",
           "subspace_fraction"]
