"""Noise and linear-stability reports of a minimum (the library behind ``landscape noise`` and
``landscape stability``; docs/algorithms.md §2, lecture "What affects the stability of SGD" and
"The linear stability condition").
"""

from __future__ import annotations

import math
from typing import Any, Literal

import torch

from ..curvature.base import as_problem
from ..curvature.hessian import Hessian
from ..curvature.noise import NonUniformity
from ..curvature.operator import LinearOperator
from ..errors import ConfigError
from ..estimators.alignment import alignment
from ..problem import Problem
from ..results import Estimate, Table


def nonuniformity(model_or_problem, loss=None, data=None, *, samples: int | None = None,
                  seed: int = 0,
                  tol: float = 1e-4, max_steps: int | None = None, chunk: int | None = None,
                  subsets: int = 4, **problem_kwargs) -> Estimate:
    """The non-uniformity ``s = sqrt(λ_max(Σ_H))`` (Wu, Ma & E 2018; lecture eq. 5) by Lanczos on
    :class:`~landscape.curvature.noise.NonUniformity`.

    On all samples the value is exact up to Lanczos: with ``θ`` and residual ``r`` some eigenvalue
    lies in ``[θ − r, θ + r]``, so ``s`` lies in ``[sqrt(θ − r), sqrt(θ + r)]``
    (``extra["interval"]``; ``stderr`` is NaN). On a subset of ``samples`` (of n) it is measured on
    ``subsets`` independent seeded subsets (seeds ``seed, seed + 1, …``): the value is their mean
    and ``stderr`` their standard deviation over sqrt(subsets). A subset's ``s`` is biased upward
    (``λ_max`` is convex in the matrix, so the λ_max of a sample covariance overestimates, +21% at
    12 of 48 samples of a 1-D family), which the error does not cover: ``extra["note"]`` says so.
    One dimension (``L = (1/2n) Σ a_i x²``): ``s = sqrt(mean a_i² − mean(a_i)²)``."""
    from ..estimators import top_eigenvalues

    problem = as_problem(model_or_problem, loss, data, **problem_kwargs)
    subset = samples is not None and samples < problem.n
    runs = max(2, int(subsets)) if subset else 1
    values, los, his, lams, matvecs = [], [], [], [], 0
    for r in range(runs):
        op = NonUniformity(problem, samples=samples, seed=seed + r, chunk=chunk)
        eig = top_eigenvalues(op, k=1, which="top", tol=tol, max_steps=max_steps, seed=seed)
        lam, res = float(eig.values[0]), float(eig.residuals[0])
        values.append(math.sqrt(max(lam, 0.0)))
        los.append(math.sqrt(max(lam - res, 0.0)))
        his.append(math.sqrt(max(lam + res, 0.0)))
        lams.append(lam)
        matvecs += eig.matvecs
    s = sum(values) / runs
    extra = {"lambda_max": sum(lams) / runs, "residual": max(h - l for h, l in zip(his, los)) / 2,
             "interval": [min(los), max(his)], "samples": op.samples, "subsample": subset,
             "seed": seed}
    if not subset:
        return Estimate(s, math.nan, matvecs, "lanczos", extra)
    se = float(torch.tensor(values, dtype=torch.float64).std(unbiased=True)) / math.sqrt(runs)
    extra.update(
        subsets=runs,
        subset_values=values,
        dof=runs - 1,
        note=f"s on {runs} seeded subsets of {op.samples} of {problem.n} samples: ± is their "
        "spread; a subset's s is biased upward (lambda_max of a sample covariance "
        "overestimates), so the full-data s is likely below; measure on all samples for the "
        "exact value",
    )
    return Estimate(s, se, matvecs, "lanczos", extra)


def noise_report(problem: Problem, *, s_samples: int | None = None, seed: int = 0,
                 tol: float = 1e-4,
                 max_steps: int | None = None, chunk: int | None = None, g_rtol: float = 0.0,
                 memory: int | None = None) -> dict:
    """The alignment factors (exact, :func:`~landscape.estimators.alignment.alignment`) and the
    non-uniformity ``s`` (Lanczos, :func:`nonuniformity`). Top-level keys are plain numbers:
    ``alpha, beta, mu, loss, tr_sigma_g, sigma_frobenius, g_frobenius, nonuniformity``; the
    details are under ``alignment`` and ``nonuniformity_detail``."""
    kw = {} if memory is None else {"memory": memory}
    al = alignment(problem, chunk=chunk, rtol=g_rtol, **kw)
    s = nonuniformity(problem, samples=s_samples, seed=seed, tol=tol, max_steps=max_steps)
    return {"alpha": al.alpha, "beta": al.beta, "mu": al.mu, "loss": al.loss,
            "tr_sigma_g": al.tr_sigma_g,
            "sigma_frobenius": al.sigma_frobenius, "g_frobenius": al.g_frobenius,
            "nonuniformity": s.value,
            "alignment": al.to_dict(), "nonuniformity_detail": s.to_dict()}


Sampling = Literal["without", "with"]


def sgd_noise_factor(n: int, batch_size: int, sampling: Sampling = "without") -> float:
    """``c_B``: the covariance of a minibatch mean of B of the n samples is ``c_B Σ`` (Σ the
    one-sample covariance, docs/algorithms.md §1): ``(n − B)/(B(n − 1))`` drawn without replacement
    (landscape's SGD, and any epoch-based shuffling; 0 for full batch), ``1/B`` drawn with
    replacement.

    >>> sgd_noise_factor(8, 6), sgd_noise_factor(8, 6, "with")
    (0.047619047619047616, 0.16666666666666666)
    """
    if sampling == "with":
        return 1.0 / batch_size
    if sampling != "without":
        raise ConfigError(f"unknown sampling {sampling!r}", "choose without (replacement) or with")
    if n <= 1 or batch_size >= n:
        return 0.0
    return (n - batch_size) / (batch_size * (n - 1))


def gamma0(lr: float, mu: float, frobenius: float, noise_factor: float) -> float:
    """``γ_0 = η² μ c_B ‖H‖_F²`` (lecture Theorem 4, whose ``1/B`` is ``c_B`` of sampling with
    replacement): the predicted per-step factor of the expected loss of SGD near a minimum;
    escape (``E L_t ≥ γ_0^t L_0``) when it exceeds 1, i.e. when Theorem 3's bound is violated."""
    return lr * lr * mu * noise_factor * frobenius * frobenius


def alignment_bound(lr: float, mu: float, noise_factor: float) -> float:
    """``1/(η sqrt(c_B μ))`` (Theorem 3's ``(1/η) sqrt(B/μ)`` with ``1/B`` = ``c_B``): the largest
    ``‖H‖_F`` of a minimum linearly stable for SGD; infinite without noise."""
    return 1.0 / (lr * math.sqrt(noise_factor * mu)) if mu > 0 and noise_factor > 0 else math.inf


class StabilityMatrix(LinearOperator):
    """``(I − ηH)² + c Σ_H`` with ``c = η²(n−B)/(B(n−1))``: the lecture's p-dimensional matrix
    (slide "The selection diagram"). ``λ_max ≤ 1`` is SUFFICIENT for linear stability of SGD but
    not necessary (docs/algorithms.md §2: a 2×2 example has 1.034 where SGD contracts, 0.962)."""

    def __init__(self, H: LinearOperator, sigma_h: LinearOperator, lr: float, c: float) -> None:
        super().__init__(H.shape[0], H.dtype, H.device)
        self.H, self.S, self.lr, self.c = H, sigma_h, lr, c
        self.block_size = min(H.block_size, sigma_h.block_size)

    def _matmat(self, V: torch.Tensor) -> torch.Tensor:
        W = V - self.lr * self.H.matmat(V)
        out = W - self.lr * self.H.matmat(W)
        return out + self.c * self.S.matmat(V) if self.c else out


def _verdict(condition: str, kind: str, value: float, error: float, bound: float, **extra) -> dict:
    """One condition ``value ≤ bound``: ``holds`` is None when the bound is undefined (NaN);
    ``decided`` when the margin exceeds three errors and the rounding of the float64 arithmetic
    (64 eps of the larger side): a margin of 4e-16 with no error is not a decision."""
    margin = bound - value
    ratio = value / bound if 0 < bound < math.inf else (0.0 if bound == math.inf else math.nan)
    defined = not math.isnan(bound) and not math.isnan(value)
    rounding = (
        64
        * torch.finfo(torch.float64).eps
        * max(abs(value), abs(bound) if math.isfinite(bound) else 0.0)
    )
    decided = defined and math.isfinite(error) and abs(margin) > max(3 * error, rounding)
    return {"condition": condition, "kind": kind, "value": value, "error": error, "bound": bound,
            "margin": margin, "ratio": ratio, "holds": bool(value <= bound) if defined else None,
            "decided": bool(decided), **extra}


def stability_report(problem: Problem, lr: float, batch_size: int, *, probes: int = 100,
                     seed: int = 0,
                     tol: float = 1e-4, max_steps: int | None = None, s_samples: int | None = None,
                     chunk: int | None = None, sufficient: bool = False, memory: int | None = None,
                     sampling: Sampling = "without") -> dict:
    """Linear-stability verdicts of the lecture for SGD with learning rate ``η`` and batch ``B``
    at this point (meant for a minimum where every ``l_i ≈ 0``; ``loss`` and ``grad_norm`` are
    reported to judge that), for minibatches drawn ``sampling`` replacement (``c_B`` of
    :func:`sgd_noise_factor`; landscape's SGD draws without). Each verdict has its measured
    value, error, bound, margin ``bound − value``, ``holds``, and ``decided`` (margin beyond 3
    errors and beyond rounding):

    - ``gd``: ``λ_max(H) ≤ 2/η`` (lecture "What affects the stability of SGD"; otherwise GD
      leaves at rate ``|1 − ηλ_max|`` per step). ``error``: the Lanczos residual.
    - ``sgd_nonuniformity``: ``s ≤ (1/η) sqrt(B(n−1)/(n−B))``; with ``gd`` the slides' necessary
      conditions for SGD (without replacement; infinite bound for ``B ≥ n``).
    - ``alignment``: ``‖H‖_F ≤ 1/(η sqrt(c_B μ))`` (lecture Theorem 3, ``(1/η) sqrt(B/μ)`` for
      sampling with replacement, with the measured ``μ(θ)`` as ``μ_0``); ``gamma0 = η² μ c_B
      ‖H‖_F²`` is the predicted per-step growth of the expected loss, ``> 1`` (escape) exactly when
      the bound is violated. ``‖H‖_F`` by Hutchinson ± stderr.
    - ``matrix_sufficient`` (``sufficient=True``): ``λ_max{(I−ηH)² + η²(n−B)/(B(n−1)) Σ_H} ≤ 1``,
      sufficient but NOT necessary (docs/algorithms.md §2): a violation does not prove instability.
    """
    from ..estimators import frobenius, top_eigenvalues

    if not (lr > 0 and math.isfinite(lr)):
        raise ConfigError(f"the learning rate must be a positive finite number, got {lr}",
                          "pass --lr 0.1")
    n = problem.n
    if not 1 <= batch_size <= n:
        raise ConfigError(f"the SGD batch size must be between 1 and n = {n}, got {batch_size}",
                          f"pass --batch-size B with 1 <= B <= {n}")
    H = Hessian(problem)
    eig = top_eigenvalues(H, k=1, which="top", tol=tol, max_steps=max_steps, seed=seed)
    lam, lam_res = float(eig.values[0]), float(eig.residuals[0])
    fro = frobenius(H, probes=probes, seed=seed)
    s = nonuniformity(problem, samples=s_samples, seed=seed, tol=tol, max_steps=max_steps,
                      chunk=chunk)
    kw = {} if memory is None else {"memory": memory}
    if problem.loss.per_token:  # no alignment for sequences (estimators.alignment): undecided
        loss_value, grad = problem.gradient()
        point = {"mu": math.nan, "alpha": math.nan, "beta": math.nan, "loss": loss_value,
                 "grad_norm": float(grad.norm())}
    else:
        al = alignment(problem, chunk=chunk, **kw)
        point = {"mu": al.mu, "alpha": al.alpha, "beta": al.beta, "loss": al.loss,
                 "grad_norm": al.grad_norm}
    c = sgd_noise_factor(n, batch_size, sampling)
    s_lo, s_hi = s.extra["interval"]
    s_err = max(s.value - s_lo, s_hi - s.value) if math.isnan(s.stderr) else max(s.stderr,
        s.extra["residual"])
    verdicts = {
        "gd": _verdict("lambda_max(H) <= 2/lr", "necessary and sufficient for GD (linearised)", lam,
                       lam_res,
                       2 / lr, escape_rate=abs(1 - lr * lam)),
        "sgd_nonuniformity": _verdict("s <= 1/(lr sqrt(c_B))", "necessary for SGD (with gd)",
                                      s.value, s_err,
                                      1 / (lr * math.sqrt(c)) if c else math.inf,
                                      **({"note": s.extra["note"]} if "note" in s.extra else {})),
    }
    mu = point["mu"]
    g0 = gamma0(lr, mu, fro.value, c) if math.isfinite(mu) else math.nan
    verdicts["alignment"] = _verdict("||H||_F <= 1/(lr sqrt(c_B mu))",
                                     "necessary given mu(theta) >= mu (Theorem 3)",
                                     fro.value, fro.stderr, alignment_bound(lr, mu,
                                         c) if math.isfinite(mu) else math.nan,
                                     mu=mu, gamma0=g0, escapes=bool(g0 > 1))
    if sufficient:
        S = NonUniformity(problem, samples=s_samples, seed=seed, chunk=chunk)
        e2 = top_eigenvalues(StabilityMatrix(H, S, lr, lr**2 * c), k=1, which="top", tol=tol,
                             max_steps=max_steps, seed=seed)
        verdicts["matrix_sufficient"] = _verdict(
            "lambda_max{(I - lr H)^2 + lr^2 (n-B)/(B(n-1)) Sigma_H} <= 1",
            "sufficient, not necessary (a violation does not prove instability)",
            float(e2.values[0]), float(e2.residuals[0]), 1.0)
    return {
        "lr": lr,
        "batch_size": batch_size,
        "n": n,
        "noise_factor": c,
        "sampling": sampling,
        "noise_factor_formula": "(n-B)/(B(n-1))" if sampling == "without" else "1/B",
        "measured": {
            "lambda_max": lam,
            "lambda_max_residual": lam_res,
            "nonuniformity": s.value,
            "nonuniformity_interval": [s_lo, s_hi],
            "nonuniformity_stderr": s.stderr,
            "hessian_frobenius": fro.value,
            "hessian_frobenius_stderr": fro.stderr,
            **point,
            "nonuniformity_samples": s.extra["samples"],
        },
        "verdicts": verdicts,
        "gd_stable": verdicts["gd"]["holds"],
        "sgd_necessary_holds": bool(
            verdicts["gd"]["holds"] and verdicts["sgd_nonuniformity"]["holds"]
        ),
        "alignment_bound_holds": verdicts["alignment"]["holds"],
    }


#: How each verdict of :func:`stability_report` reads in a table: its condition and its kind.
PRETTY = {"gd": "λ_max(H) ≤ 2/η", "sgd_nonuniformity": "s ≤ 1/(η·sqrt(c_B))",
          "alignment": "‖H‖_F ≤ 1/(η·sqrt(c_B·μ))",
          "matrix_sufficient": "λ_max((I−ηH)² + η²c_B·Σ_H) ≤ 1"}
KIND = {"gd": "GD: iff", "sgd_nonuniformity": "SGD: necessary",
        "alignment": "SGD: necessary (Thm 3)",
        "matrix_sufficient": "SGD: sufficient only"}


def stability_table(report: dict, n: int, checkpoint: Any) -> tuple[Table, list[str]]:
    """The verdicts of a stability report (with its ``settings`` and ``seconds``) as a table and
    the notes under it (escape rate, μ and γ0, the sufficient condition's caveat)."""
    result, settings = report, report["settings"]
    lr, batch_size = settings["lr"], settings["batch_size"]
    f = "{:.4g}".format
    rows, notes = [], []
    for name, v in result["verdicts"].items():
        verdict = "undefined" if v["holds"] is None else ("holds" if v["holds"] else "VIOLATED")
        if v["holds"] is not None and not v["decided"]:
            verdict += " (within error)"
        if name == "gd" and v["holds"] is False:
            notes.append(
                f"GD leaves this minimum at rate |1 − ηλ_max| = {v['escape_rate']:.3g} per step"
            )
        if name == "alignment" and not math.isfinite(v["mu"]):
            notes.append("alignment: μ is not available for a token loss (undecided)")
        elif name == "alignment":
            notes.append(f"alignment: μ = {v['mu']:.3g}; γ0 = η²·μ·c_B·‖H‖_F² = {v['gamma0']:.3g}"
                         + (" > 1: SGD escapes, E L_t ≥ γ0^t E L_0" if v["escapes"] else " ≤ 1"))
        if v.get("note"):
            notes.append(v["note"])
        if name == "matrix_sufficient":
            notes.append(
                "the matrix condition is sufficient, not necessary: a violation does not prove "
                "instability"
            )
        err = f(v["error"]) if math.isfinite(v["error"]) else "—"
        # a Lanczos residual bounds the error of an eigenvalue; it is no standard error
        residual = name in ("gd", "matrix_sufficient") or (
            name == "sgd_nonuniformity"
            and not math.isfinite(result["measured"].get("nonuniformity_stderr", math.nan))
        )
        shown = f"{f(v['value'])} (residual {err})" if residual else f"{f(v['value'])} ± {err}"
        rows.append((PRETTY[name], shown, f(v["bound"]), f(v["margin"]), verdict, KIND[name]))
    m = result["measured"]
    caption = (
        f"η = {lr:g}, B = {batch_size}, n = {n}, minibatches drawn {settings['sampling']} "
        "replacement: "
        f"c_B = {result['noise_factor_formula']} = {result['noise_factor']:.3g}; "
        f"L = {m['loss']:.3g}, ‖g‖ = {m['grad_norm']:.3g} (the conditions assume a minimum with "
        "every l_i ≈ 0); "
        f"{report['seconds']:.2f} s"
    )
    return Table(f"Linear stability at {checkpoint}",
                 ["condition", "measured", "bound", "margin", "verdict", "kind"], rows,
                 caption), notes


__all__ = ["KIND", "PRETTY", "StabilityMatrix", "alignment_bound", "gamma0", "noise_report",
           "nonuniformity", "sgd_noise_factor", "stability_report", "stability_table"]
