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


def update_curvature(op) -> Estimate:
    """``uᵀHu / ‖u‖²`` along the optimizer's last update ``u = θ_t − θ_{t−1}`` (stored by
    ``landscape train``; init2winit's "update curvature"): exact, one product, NaN when ``u = 0``
    (no step taken); like λ_max, it is compared with ``2/η`` (docs/algorithms.md §1).
    ``extra``: ``update_norm``."""
    from landscape.estimators.perturbation import problem_of

    u = problem_of(op).update_vector()
    norm = float(u.double().norm())
    value = rayleigh_quotient(op, u) if norm > 0 else float("nan")
    return Estimate(value, 0.0, 1 if norm > 0 else 0, "exact", {"update_norm": norm})


def gradient_in_top_subspace(op, k: int = 1, tol: float = 1e-6, seed: int = 0,
                             block: int | None = None, max_steps: int | None = None) -> Estimate:
    """The fraction of ``‖g‖²`` in the span of the top-``k`` Hessian eigenvectors (Gur-Ari,
    Roberts & Dyer 2018: SGD's gradient lives mostly there): ``‖V_kᵀ g‖² / ‖g‖²`` with ``V_k``
    the Ritz vectors of Lanczos, whose residuals (``extra``) bound how far they are from the
    eigenvectors; no sampling, so no standard error."""
    from landscape.estimators.lanczos import top_eigenvalues
    from landscape.estimators.perturbation import problem_of
    from landscape.estimators.subspace import subspace_fraction

    problem = problem_of(op)
    eig = top_eigenvalues(op, k=k, which="top", tol=tol, seed=seed, block=block,
                          max_steps=max_steps, return_vectors=True)
    _, g = problem.gradient()
    return Estimate(subspace_fraction(eig.vectors, g), 0.0, eig.matvecs, "lanczos",
                    {"k": k, "eigenvalues": eig.values.tolist(),
                     "residuals": eig.residuals.tolist(), "grad_norm": float(g.double().norm())})


__all__ = ["gradient_curvature", "gradient_in_top_subspace", "rayleigh_quotient",
           "update_curvature"]
