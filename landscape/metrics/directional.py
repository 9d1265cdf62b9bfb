"""Curvature along the gradient (``landscape sharpness --metric grad-curvature``,
``landscape train --track grad-curvature``): ``gᵀHg / ‖g‖²``, exact, one product. Importing
this module registers it; it was added by CONTRIBUTING.md's recipe (this declaration, the
estimator in :mod:`landscape.estimators.directional`, one test)."""

from __future__ import annotations

from . import Metric, Row, Settings, fmt, number, register


def _compute(op, s: Settings):
    from ..estimators.directional import gradient_curvature

    return gradient_curvature(op)


def _rows(r) -> list[Row]:
    return [("gᵀHg / ‖g‖²", fmt(r.value), f"exact; ‖g‖ = {r.extra['grad_norm']:.3g}",
             str(r.matvecs))]


register("grad-curvature", Metric(
    "grad_curvature", _compute, _rows, lambda s: 1,
    "curvature along the gradient gᵀHg/‖g‖² (exact, one product)",
    scalars=lambda r: {"grad_curvature": r.value}, primary="grad_curvature",
    headlines=lambda stored: [("gᵀHg/‖g‖²", number(stored.get("estimate")), number(None))]))
