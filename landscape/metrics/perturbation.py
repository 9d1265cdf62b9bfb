"""Sharpness as the loss increase under parameter perturbations (``landscape sharpness --metric
perturbation,keskar``; the estimators are in :mod:`landscape.estimators.perturbation`).
Importing this module registers both."""

from __future__ import annotations

from ..schema import integer, positive
from . import Metric, Row, Settings, estimate_headline, fmt, number, register
from .hessian import PROBES


def _perturbation(op, s: Settings):
    from ..estimators.perturbation import perturbation_sharpness, problem_of

    return perturbation_sharpness(problem_of(op), rho=float(s.get("rho", 0.01)),
                                  samples=int(s.get("perturbations", 100)), seed=s.seed,
                                  probes=s.probes, op=op)


def _perturbation_rows(r) -> list[Row]:
    e = r.extra
    return [(f"E[L(θ+ε)] − L(θ), ρ={e['rho']:g}", fmt(r.value), fmt(r.stderr),
             f"{e['loss_evaluations']} losses"),
            ("ρ² tr(H)/2", fmt(e["quadratic"]), fmt(e["quadratic_stderr"]), str(r.matvecs))]


def _keskar(op, s: Settings):
    from ..estimators.perturbation import keskar_sharpness, problem_of

    sub = s.get("subspace")
    return keskar_sharpness(problem_of(op), epsilon=float(s.get("epsilon", 1e-3)),
                            subspace=int(sub) if sub else None,
                            steps=int(s.get("ascent_steps", 20)), seed=s.seed)


def _keskar_rows(r) -> list[Row]:
    e = r.extra
    where = f"subspace {e['subspace']}" if e["subspace"] else "full space"
    return [(f"Keskar φ (%), ε={e['epsilon']:g}, {where}", fmt(r.value), "lower bound (ascent)",
             f"{e['gradient_evaluations']} grads")]


register("perturbation", Metric(
    "perturbation", _perturbation, _perturbation_rows, lambda s: s.probes,
    "E[L(θ+ε)] − L(θ), ε ~ N(0, ρ²I), by Monte Carlo ± stderr, beside ρ² tr(H)/2",
    options={"rho": positive(0.01, "perturbation: noise scale ρ of ε ~ N(0, ρ²I)."),
             "perturbations": integer(2, 100, "perturbation: Monte-Carlo draws of ε."),
             "probes": PROBES},
    scalars=lambda r: {"perturbation": (r.value, r.stderr)}, primary="perturbation",
    headlines=lambda stored: [estimate_headline(stored, "E[L(θ+ε)] − L(θ)")]))

register("keskar", Metric(
    "keskar", _keskar, _keskar_rows, lambda s: None,
    "Keskar et al.'s ε-sharpness (% loss increase in a box) by projected ascent",
    options={"epsilon": positive(1e-3, "keskar: half-width ε of the box (relative to |θ|+1)."),
             "subspace": integer(0, help="keskar: ascent in a random subspace of this dimension "
                                         "(default, or 0: the full space)."),
             "ascent_steps": integer(1, 20, "keskar: projected ascent steps.")},
    scalars=lambda r: {"keskar": r.value}, primary="keskar",
    headlines=lambda stored: [("Keskar φ (%)", number(stored.get("estimate")), number(None))]))
