"""The Hessian, GGN, Monte-Carlo Fisher and empirical Fisher side by side (the library behind
``landscape fisher`` and the study kind ``fisher``): trace, λ_max, Frobenius norm and pairwise
Frobenius cosines."""

from __future__ import annotations

from collections.abc import Callable

from ..curvature.fisher import EmpiricalFisher, Fisher
from ..curvature.ggn import GGN
from ..curvature.hessian import Hessian
from ..estimators.alignment import matrix_comparison
from ..problem import Problem

#: The matrices compared, in report order.
MATRICES = ("hessian", "ggn", "fisher", "empirical_fisher")
#: Their short names (table rows, progress labels).
LABELS = {"hessian": "H", "ggn": "GGN", "fisher": "F (MC)", "empirical_fisher": "F_emp"}


#: labels drawn per sample for the Monte-Carlo Fisher: its product costs one Jacobian-vector and one
#: vector-Jacobian product per batch whatever their number, and the label noise falls as 1/sqrt(m)
MC_SAMPLES = 16


def fisher_report(problem: Problem, *, probes: int = 100, mc_samples: int = MC_SAMPLES,
                  tol: float = 1e-4,
                  max_steps: int | None = None, seed: int = 0, chunk: int | None = None,
                  on_start: Callable[[str], None] | None = None) -> dict:
    """``{"matrices": {name: {"trace", "lambda_max", "frobenius"}}, "cosine": {"a~b": ...}}`` for
    H, GGN, Fisher (``mc_samples`` labels per sample) and F_emp: traces, Frobenius norms and
    cosines from one shared set of probes
    (:func:`~landscape.estimators.alignment.matrix_comparison`;
    the Fisher's from independent label draws per probe group, so their errors cover the labels'
    randomness), λ_max by Lanczos with its residual. λ_max of the Monte-Carlo Fisher is that of
    one draw: λ_max is convex in the matrix, so it is biased upward (E λ_max(F_mc) ≥ λ_max(F)) and
    has no standard error; the report says so (for cross-entropy and mse λ_max(GGN) is the true
    Fisher's exactly). ``on_start(label)`` is called before each stage (progress)."""
    from ..estimators import top_eigenvalues

    ops = {"hessian": Hessian(problem), "ggn": GGN(problem),
           "fisher": Fisher(problem, mc_samples=mc_samples, seed=seed),
           "empirical_fisher": EmpiricalFisher(problem, chunk=chunk)}
    if on_start:
        on_start("traces, norms, cosines")
    cmp = matrix_comparison(ops, probes=probes, seed=seed)
    matrices = {}
    for name, op in ops.items():
        if on_start:
            on_start(f"λ_max({LABELS[name]})")
        eig = top_eigenvalues(op, k=1, which="top", tol=tol, max_steps=max_steps, seed=seed)
        lam = {"estimate": float(eig.values[0]), "residual": float(eig.residuals[0]),
               "method": eig.method,
               "matvecs": eig.matvecs}
        if name == "fisher":
            lam["note"] = (
                f"one draw of {mc_samples} label(s) per sample: biased upward, no standard error; "
                "the true Fisher's λ_max is the GGN's"
            )
        matrices[name] = {"trace": cmp["trace"][name].to_dict(), "lambda_max": lam,
                          "frobenius": cmp["frobenius"][name].to_dict()}
    return {"matrices": matrices, "cosine": {k: v.to_dict() for k, v in cmp["cosine"].items()}}
