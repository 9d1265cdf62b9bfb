"""Noise and linear-stability reports of a minimum (the library behind ``landscape noise`` and
``landscape stability``; ALGORITHMS.md §2, lecture "What affects the stability of SGD" and
"The linear stability condition").
"""

from __future__ import annotations

import math

import torch

from ..curvature.base import as_problem
from ..curvature.hessian import Hessian
from ..curvature.noise import NonUniformity
from ..curvature.operator import LinearOperator
from ..errors import ConfigError
from ..estimators.alignment import alignment
from ..problem import Problem
from ..results import Estimate


def nonuniformity(model_or_problem, loss=None, data=None, *, samples: int | None = None, seed: int = 0,
                  tol: float = 1e-4, max_steps: int | None = None, chunk: int | None = None,
                  **problem_kwargs) -> Estimate:
    """The non-uniformity ``s = sqrt(λ_max(Σ_H))`` (Wu, Ma & E 2018; lecture eq. 5) by Lanczos on
    :class:`~landscape.curvature.noise.NonUniformity` over a seeded subset of ``samples``.

    Lanczos gives ``θ`` with residual ``r``: some eigenvalue lies in ``[θ − r, θ + r]``, so ``s``
    lies in ``[sqrt(θ − r), sqrt(θ + r)]`` (``extra["interval"]``). ``stderr`` is NaN: the value is
    not a random estimate (for a subset it is the subset's exact value). One dimension
    (``L = (1/2n) Σ a_i x²``): ``s = sqrt(mean a_i² − mean(a_i)²)``.
    """
    from ..estimators import top_eigenvalues

    problem = as_problem(model_or_problem, loss, data, **problem_kwargs)
    op = NonUniformity(problem, samples=samples, seed=seed, chunk=chunk)
    eig = top_eigenvalues(op, k=1, which="top", tol=tol, max_steps=max_steps, seed=seed)
    lam, res = float(eig.values[0]), float(eig.residuals[0])
    s = math.sqrt(max(lam, 0.0))
    lo, hi = math.sqrt(max(lam - res, 0.0)), math.sqrt(max(lam + res, 0.0))
    return Estimate(s, math.nan, eig.matvecs, "lanczos",
                    {"lambda_max": lam, "residual": res, "interval": [lo, hi], "samples": op.samples,
                     "subsample": op.subsampled, "seed": seed})


def noise_report(problem: Problem, *, s_samples: int | None = None, seed: int = 0, tol: float = 1e-4,
                 max_steps: int | None = None, chunk: int | None = None, rtol: float = 0.0,
                 memory: int | None = None) -> dict:
    """The alignment factors (exact, :func:`~landscape.estimators.alignment.alignment`) and the
    non-uniformity ``s`` (Lanczos, :func:`nonuniformity`). Top-level keys are plain numbers:
    ``alpha, beta, mu, loss, tr_sigma_g, sigma_frobenius, g_frobenius, nonuniformity``; the
    details are under ``alignment`` and ``nonuniformity_detail``."""
    kw = {} if memory is None else {"memory": memory}
    al = alignment(problem, chunk=chunk, rtol=rtol, **kw)
    s = nonuniformity(problem, samples=s_samples, seed=seed, tol=tol, max_steps=max_steps)
    return {"alpha": al.alpha, "beta": al.beta, "mu": al.mu, "loss": al.loss, "tr_sigma_g": al.tr_sigma_g,
            "sigma_frobenius": al.sigma_frobenius, "g_frobenius": al.g_frobenius, "nonuniformity": s.value,
            "alignment": al.to_dict(), "nonuniformity_detail": s.to_dict()}


def sgd_noise_factor(n: int, batch_size: int) -> float:
    """``(n − B)/(B(n − 1))``: the covariance of a mean over B samples drawn without replacement
    is this times the one-sample covariance (0 for full batch)."""
    if n <= 1 or batch_size >= n:
        return 0.0
    return (n - batch_size) / (batch_size * (n - 1))


class StabilityMatrix(LinearOperator):
    """``(I − ηH)² + c Σ_H`` with ``c = η²(n−B)/(B(n−1))``: the lecture's p-dimensional matrix
    (slide "The selection diagram"). ``λ_max ≤ 1`` is SUFFICIENT for linear stability of SGD but
    not necessary (ALGORITHMS.md §2: a 2×2 example has 1.034 where SGD contracts, 0.962)."""

    def __init__(self, H: LinearOperator, sigma_h: LinearOperator, lr: float, c: float) -> None:
        super().__init__(H.shape[0], H.dtype, H.device)
        self.H, self.S, self.lr, self.c = H, sigma_h, lr, c
        self.block_size = min(H.block_size, sigma_h.block_size)

    def _matmat(self, V: torch.Tensor) -> torch.Tensor:
        W = V - self.lr * self.H.matmat(V)
        out = W - self.lr * self.H.matmat(W)
        return out + self.c * self.S.matmat(V) if self.c else out


def _verdict(condition: str, kind: str, value: float, error: float, bound: float, **extra) -> dict:
    """One condition ``value ≤ bound``: ``holds`` is None when the bound is undefined (NaN)."""
    margin = bound - value
    ratio = value / bound if 0 < bound < math.inf else (0.0 if bound == math.inf else math.nan)
    defined = not math.isnan(bound) and not math.isnan(value)
    return {"condition": condition, "kind": kind, "value": value, "error": error, "bound": bound,
            "margin": margin, "ratio": ratio, "holds": bool(value <= bound) if defined else None,
            "decided": bool(defined and math.isfinite(error) and abs(margin) > 3 * error), **extra}


def stability_report(problem: Problem, lr: float, batch_size: int, *, probes: int = 100, seed: int = 0,
                     tol: float = 1e-4, max_steps: int | None = None, s_samples: int | None = None,
                     chunk: int | None = None, sufficient: bool = False, memory: int | None = None) -> dict:
    """Linear-stability verdicts of the lecture for SGD with learning rate ``η`` and batch ``B``
    at this point (meant for a minimum where every ``l_i ≈ 0``; ``loss`` and ``grad_norm`` are
    reported to judge that). Each verdict has its measured value, error, bound, margin
    ``bound − value``, ``holds``, and ``decided`` (margin beyond 3 errors):

    - ``gd``: ``λ_max(H) ≤ 2/η`` (lecture "What affects the stability of SGD"; otherwise GD
      leaves at rate ``|1 − ηλ_max|`` per step). ``error``: the Lanczos residual.
    - ``sgd_nonuniformity``: ``s ≤ (1/η) sqrt(B(n−1)/(n−B))``; with ``gd`` the slides' necessary
      conditions for SGD (without replacement; infinite bound for ``B ≥ n``).
    - ``alignment``: ``‖H‖_F ≤ (1/η) sqrt(B/μ)`` (lecture Theorem 3, with the measured ``μ(θ)`` as
      ``μ_0``); ``gamma0 = η² μ ‖H‖_F² / B`` is the predicted per-step growth of the expected
      loss, ``> 1`` (escape) exactly when the bound is violated. ``‖H‖_F`` by Hutchinson ± stderr.
    - ``matrix_sufficient`` (``sufficient=True``): ``λ_max{(I−ηH)² + η²(n−B)/(B(n−1)) Σ_H} ≤ 1``,
      sufficient but NOT necessary (ALGORITHMS.md §2): a violation does not prove instability.
    """
    from ..estimators import frobenius, top_eigenvalues

    if not lr > 0:
        raise ConfigError(f"the learning rate must be positive, got {lr}", "pass --lr 0.1")
    n = problem.n
    if not 1 <= batch_size <= n:
        raise ConfigError(f"the SGD batch size must be between 1 and n = {n}, got {batch_size}",
                          f"pass --batch-size B with 1 <= B <= {n}")
    H = Hessian(problem)
    eig = top_eigenvalues(H, k=1, which="top", tol=tol, max_steps=max_steps, seed=seed)
    lam, lam_res = float(eig.values[0]), float(eig.residuals[0])
    fro = frobenius(H, probes=probes, seed=seed)
    s = nonuniformity(problem, samples=s_samples, seed=seed, tol=tol, max_steps=max_steps, chunk=chunk)
    kw = {} if memory is None else {"memory": memory}
    al = alignment(problem, chunk=chunk, **kw)
    c = sgd_noise_factor(n, batch_size)
    s_lo, s_hi = s.extra["interval"]
    verdicts = {
        "gd": _verdict("lambda_max(H) <= 2/lr", "necessary and sufficient for GD (linearised)", lam, lam_res,
                       2 / lr, escape_rate=abs(1 - lr * lam)),
        "sgd_nonuniformity": _verdict("s <= (1/lr) sqrt(B(n-1)/(n-B))", "necessary for SGD (with gd)", s.value,
                                      max(s.value - s_lo, s_hi - s.value), 1 / (lr * math.sqrt(c)) if c else math.inf),
    }
    mu = al.mu
    bound = math.sqrt(batch_size / mu) / lr if mu > 0 else math.inf
    gamma0 = lr**2 * mu * fro.value**2 / batch_size if math.isfinite(mu) else math.nan
    verdicts["alignment"] = _verdict("||H||_F <= (1/lr) sqrt(B/mu)", "necessary given mu(theta) >= mu (Theorem 3)",
                                     fro.value, fro.stderr, bound if math.isfinite(mu) else math.nan,
                                     mu=mu, gamma0=gamma0, escapes=bool(gamma0 > 1))
    if sufficient:
        S = NonUniformity(problem, samples=s_samples, seed=seed, chunk=chunk)
        e2 = top_eigenvalues(StabilityMatrix(H, S, lr, lr**2 * c), k=1, which="top", tol=tol,
                             max_steps=max_steps, seed=seed)
        verdicts["matrix_sufficient"] = _verdict(
            "lambda_max{(I - lr H)^2 + lr^2 (n-B)/(B(n-1)) Sigma_H} <= 1",
            "sufficient, not necessary (a violation does not prove instability)",
            float(e2.values[0]), float(e2.residuals[0]), 1.0)
    return {
        "lr": lr, "batch_size": batch_size, "n": n, "noise_factor": c,
        "measured": {"lambda_max": lam, "lambda_max_residual": lam_res, "nonuniformity": s.value,
                     "nonuniformity_interval": [s_lo, s_hi], "hessian_frobenius": fro.value,
                     "hessian_frobenius_stderr": fro.stderr, "mu": mu, "alpha": al.alpha, "beta": al.beta,
                     "loss": al.loss, "grad_norm": al.grad_norm, "nonuniformity_samples": s.extra["samples"]},
        "verdicts": verdicts,
        "gd_stable": verdicts["gd"]["holds"],
        "sgd_necessary_holds": bool(verdicts["gd"]["holds"] and verdicts["sgd_nonuniformity"]["holds"]),
        "alignment_bound_holds": verdicts["alignment"]["holds"],
    }


__all__ = ["StabilityMatrix", "noise_report", "nonuniformity", "sgd_noise_factor", "stability_report"]
