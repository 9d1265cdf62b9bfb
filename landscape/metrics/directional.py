"""The Hessian where the optimizer moves (``landscape sharpness --metric grad-curvature,
update-curvature,top-subspace``, ``landscape train --track ...``): ``gᵀHg / ‖g‖²`` and
``uᵀHu / ‖u‖²`` for the last update ``u`` (exact, one product each), and the fraction of ``‖g‖²``
in the top-k eigenspace. Importing this module registers them; they were added by
CONTRIBUTING.md's recipe (these declarations, the estimators in
:mod:`landscape.estimators.directional`, their tests)."""

from __future__ import annotations

from . import Metric, Row, Settings, fmt, number, register
from .hessian import EIG


def _compute(op, s: Settings):
    from ..estimators.directional import gradient_curvature

    return gradient_curvature(op)


def _rows(r) -> list[Row]:
    return [("gᵀHg / ‖g‖²", fmt(r.value), f"exact; ‖g‖ = {r.extra['grad_norm']:.3g}",
             str(r.matvecs))]


def _update(op, s: Settings):
    from ..estimators.directional import update_curvature

    return update_curvature(op)


def _update_rows(r) -> list[Row]:
    return [("uᵀHu / ‖u‖², last update", fmt(r.value),
             f"exact; ‖u‖ = {r.extra['update_norm']:.3g}", str(r.matvecs))]


def _top_subspace(op, s: Settings):
    from ..estimators.directional import gradient_in_top_subspace

    return gradient_in_top_subspace(op, k=s.top_k, tol=s.tol, seed=s.seed, block=s.eig_block,
                                    max_steps=s.max_steps)


def _top_subspace_rows(r) -> list[Row]:
    worst = max(r.extra["residuals"]) if r.extra["residuals"] else 0.0
    return [(f"‖P_k g‖² / ‖g‖², top {r.extra['k']}", fmt(r.value),
             f"Ritz residuals ≤ {worst:.2g}", str(r.matvecs))]


register("grad-curvature", Metric(
    "grad_curvature", _compute, _rows, lambda s: 1,
    "curvature along the gradient gᵀHg/‖g‖² (exact, one product)",
    scalars=lambda r: {"grad_curvature": r.value}, primary="grad_curvature",
    headlines=lambda stored: [("gᵀHg/‖g‖²", number(stored.get("estimate")), number(None))]))

register("update-curvature", Metric(
    "update_curvature", _update, _update_rows, lambda s: 1,
    "curvature along the optimizer's last update uᵀHu/‖u‖² (exact; a landscape train checkpoint)",
    scalars=lambda r: {"update_curvature": r.value}, primary="update_curvature",
    headlines=lambda stored: [("uᵀHu/‖u‖²", number(stored.get("estimate")), number(None))]))

register("top-subspace", Metric(
    "top_subspace", _top_subspace, _top_subspace_rows, lambda s: None,
    "fraction of ‖g‖² in the top-k Hessian eigenspace (Lanczos Ritz vectors)",
    options={k: EIG[k] for k in ("top_k", "tol", "eig_block", "max_steps")},
    scalars=lambda r: {"top_subspace": r.value}, primary="top_subspace",
    headlines=lambda stored: [("‖P_k g‖²/‖g‖²", number(stored.get("estimate")), number(None))]))
