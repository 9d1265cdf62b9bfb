"""What an escape run measured, beside what the lecture's stability theory predicts.

- :func:`escape_steps` / :func:`summarize`: the fraction of trajectories whose loss rose above
  ``escape_factor`` times its start (a NaN or infinite loss counts as escaped), the median step of
  escape, and the per-step growth factor of the mean loss in its exponential phase
  (:func:`growth_rate`, a least-squares fit of ``log mean L_t``).
- :func:`predicted_growth`: Theorem 4's ``γ_0 = η² μ c_B ‖H‖_F²`` (lecture "Theorem 4 (Escape from
  sharp minima)", its ``1/B`` being ``c_B`` of sampling with replacement; the engine's SGD draws
  without, ``c_B = (n−B)/(B(n−1))``, :func:`landscape.metrics.stability.gamma0`): if Theorem 3's
  bound is violated then ``E L(θ_t) ≥ γ_0^t E L(θ_0)``.
- :func:`minimum_stats`: the starting point's loss, ``λ_max`` (GD linearly stable iff
  ``λ_max ≤ 2/η``), ``‖H‖_F``, ``tr H``, the alignment ``μ`` (with α, β) and the non-uniformity
  ``s``,
  through :mod:`landscape.estimators` and :mod:`landscape.metrics.stability`.
"""

from __future__ import annotations

import copy
import math
import re
from dataclasses import asdict, dataclass

import torch

from ..errors import ConfigError
from ..metrics.stability import alignment_bound, gamma0, sgd_noise_factor
from .engine import Trajectories


# ----------------------------------------------------------------------------- escape statistics
def escape_steps(traj: Trajectories, escape_factor: float = 10.0) -> torch.Tensor:
    """``[T]``: the first recorded step at which ``L(θ_t) > escape_factor · L(θ_0)`` (or the loss
    is not finite), ``inf`` for a trajectory that never escaped."""
    if not escape_factor > 1:
        raise ConfigError(f"the escape factor must exceed 1, got {escape_factor}",
                          "pass e.g. --escape-factor 10")
    L = traj.losses
    out = ~(L <= escape_factor * L[:, :1])  # NaN compares False: counted as escaped
    has = out.any(1)
    first = out.double().argmax(1)
    res = torch.full((L.shape[0],), math.inf, dtype=torch.float64)
    res[has] = traj.record_steps.double()[first[has]]
    return res


@dataclass(frozen=True)
class GrowthFit:
    """``log mean L_t ≈ c + t log(rate)`` over recorded steps ``first..last`` (``points`` records).
    ``stderr`` is the least-squares standard error carried to ``rate`` (it ignores the correlation
    between consecutive steps, so it is optimistic)."""

    rate: float
    stderr: float
    first: int
    last: int
    points: int


def growth_rate(record_steps: torch.Tensor, mean_loss: torch.Tensor, *, upto: float = 0.5,
                min_rise: float = 100.0) -> GrowthFit | None:
    """The per-step growth factor of the mean loss in its exponential phase.

    Window: from the first record to the first one where ``log mean L`` has covered ``upto`` of its
    rise ``log(max/start)`` (the part before saturation) when the mean rises by more than
    ``min_rise``; otherwise every record (then a factor ≤ 1 says the loss did not grow). Records
    after a non-finite mean are dropped. None with fewer than 3 usable records."""
    L = mean_loss.double()
    t = record_steps.double()
    bad = ~torch.isfinite(L) | (L <= 0)
    end = int(bad.double().argmax()) if bool(bad.any()) else L.numel()
    L, t = L[:end], t[:end]
    if L.numel() < 3:
        return None
    logL = L.log()
    rise = float(logL.max() - logL[0])
    if rise > math.log(min_rise):
        last = int((logL >= logL[0] + upto * rise).double().argmax())
        last = max(last, 2)
    else:
        last = L.numel() - 1
    x, y = t[: last + 1], logL[: last + 1]
    xm, ym = x.mean(), y.mean()
    sxx = float(((x - xm) ** 2).sum())
    slope = float(((x - xm) * (y - ym)).sum()) / sxx
    resid = y - (ym + slope * (x - xm))
    dof = x.numel() - 2
    se = math.sqrt(float((resid**2).sum()) / dof / sxx) if dof > 0 else math.nan
    rate = math.exp(slope)
    return GrowthFit(rate, rate * se, int(x[0]), int(x[-1]), int(x.numel()))


@dataclass(frozen=True)
class EscapeSummary:
    """One dynamics' escape statistics (see :func:`summarize`)."""

    dynamics: str
    trajectories: int
    steps: int
    escape_factor: float
    start_loss: float
    escaped: int
    fraction_escaped: float
    fraction_stderr: float
    median_step: float | None
    median_step_escaped: float | None
    growth_rate: float | None
    growth_rate_stderr: float | None
    fit_first: int | None
    fit_last: int | None
    predicted_growth: float | None
    prediction: str | None
    diverged: int
    final_mean_loss: float
    final_median_loss: float
    mean_distance: float
    seconds: float
    computed: int
    trajectory_steps_per_second: float

    def to_dict(self) -> dict:
        return asdict(self)


def summarize(traj: Trajectories, escape_factor: float = 10.0, predicted: float | None = None,
              prediction: str | None = None, upto: float = 0.5) -> EscapeSummary:
    """Fraction escaped (± its binomial standard error), median escape step over all trajectories
    (None when fewer than half escaped: the median is then not reached) and over the escaped ones,
    the growth factor of the mean loss (:func:`growth_rate`), and the prediction beside it."""
    steps = escape_steps(traj, escape_factor)
    T = steps.numel()
    esc = torch.isfinite(steps)
    k = int(esc.sum())
    frac = k / T
    srt = steps.sort().values
    median_all = float(srt[(T - 1) // 2])  # lower median; inf (→ None) unless half escaped
    median_all = median_all if math.isfinite(median_all) else None
    median_esc = float(steps[esc].median()) if k else None
    fit = growth_rate(traj.record_steps, traj.mean_loss, upto=upto)
    final = traj.losses[:, -1]
    diverged = int((~torch.isfinite(final)).sum())
    return EscapeSummary(
        traj.dynamics, T, traj.steps, float(escape_factor), traj.start_loss, k, frac,
        math.sqrt(frac * (1 - frac) / T), median_all, median_esc,
        None if fit is None else fit.rate, None if fit is None else fit.stderr,
        None if fit is None else fit.first, None if fit is None else fit.last,
        predicted, prediction, diverged, float(final.mean()), float(final.median()),
        float(traj.distances[:, -1].mean()), traj.seconds, traj.computed, traj.throughput)


# ----------------------------------------------------------------------------- theory
def predicted_growth(dynamics: str, stats: dict, lr: float, batch_size: int,
                     control_scale: float = 0.1) -> tuple[float | None, str | None]:
    """The lecture's predicted per-step factor of the mean loss for ``dynamics`` from the
    starting point's ``stats`` (keys ``mu``, ``hessian_frobenius``, ``hessian_trace``, ``p``):

    - ``sgd``: ``γ_0 = η² μ ‖H‖_F²/B`` (Theorem 4, a lower bound when above 1);
    - ``small-noise``: ``κ² γ_0`` (SGD's noise scaled by κ);
    - ``lb-full-noise``: ``γ_0`` (noise covariance ``(n−B)/(nB) F_emp ≈ Σ/B`` near a minimum);
    - ``isotropic``: ``η² tr(G) tr(H)/(pB)`` with ``tr G ≈ tr H`` (the slides' isotropic noise
      ``2σ²L I``, ``σ² = tr G/p``: "The importance of noise structure");
    - ``gd`` and ``lb-diag-noise``: no prediction (GD: linear stability only; diagonal noise:
      the lecture gives none).
    """
    mu, fro = stats.get("mu"), stats.get("hessian_frobenius")
    c = stats.get("noise_factor", sgd_noise_factor(stats.get("n", 0), batch_size))
    g0 = gamma0(lr, mu, fro, c) if _num(mu) and _num(fro) else None
    if dynamics == "sgd" and g0 is not None:
        return (
            g0,
            ("gamma_0 = lr^2 mu c_B ||H||_F^2, c_B = (n-B)/(B(n-1)) (Theorem 4, sampling without "
             "replacement)"),
        )
    if dynamics == "small-noise" and g0 is not None:
        return control_scale**2 * g0, "kappa^2 gamma_0 (SGD noise scaled by kappa)"
    if dynamics == "lb-full-noise" and g0 is not None:
        return g0, "gamma_0 (Fisher noise ~ SGD noise near a minimum)"
    tr, p = stats.get("hessian_trace"), stats.get("p")
    if dynamics == "isotropic" and _num(tr) and p:
        return (
            lr * lr * c * tr * tr / p,
            "lr^2 c_B tr(H)^2 / p (slides' isotropic noise, tr G ~ tr H)",
        )
    return None, None


def _num(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


# ----------------------------------------------------------------------------- the starting point
def problem_at(problem, theta: torch.Tensor):
    """A :class:`~landscape.problem.Problem` like ``problem`` with its parameters set to ``theta``
    (flat ``[p]``): the model is copied and its selected parameters overwritten."""
    from ..problem import Problem

    model = copy.deepcopy(problem.model)
    named = dict(model.named_parameters())
    with torch.no_grad():
        for name, t in problem.at(theta).items():
            named[name].copy_(t)
    pattern = "^(" + "|".join(re.escape(nm) for nm in problem.layout.names) + ")$"
    return Problem(model, problem.loss, problem._global, batch_size=problem.batch_size,
                   params=pattern,
                   device=problem.device, dtype=problem.dtype, memory=problem.budget.bytes,
                   allow_random_data=True)  # the same samples, already checked


def minimum_stats(problem, theta: torch.Tensor, lr: float, batch_size: int, *, probes: int = 30,
                  align_samples: int | None = 256, s_samples: int | None = 128, seed: int = 0,
                  tol: float = 1e-4, nonuniformity: bool = True, alignment: bool = True) -> dict:
    """The starting point of an escape run: ``loss``, ``lambda_max`` (Lanczos, with its residual),
    ``gd_stable`` (``λ_max ≤ 2/η``, lecture "Stability of Gradient Descent"), ``hessian_frobenius``
    and ``hessian_trace`` (Hutchinson ± stderr, ``probes`` probes), the alignment ``mu``
    (``alpha``, ``beta``; exact on a seeded subset of ``align_samples``), the non-uniformity ``s``
    (on ``s_samples``), Theorem 3's bound ``(1/η) sqrt(B/μ)`` and Theorem 4's ``gamma_0``.
    Subsets are reported (``*_samples``); ``None`` uses every sample."""
    from ..curvature.hessian import Hessian
    from ..estimators import frobenius, top_eigenvalues, trace

    pb = problem_at(problem, theta)
    H = Hessian(pb)
    eig = top_eigenvalues(H, k=1, which="top", tol=tol, seed=seed)
    lam = float(eig.values[0])
    fro = frobenius(H, probes=probes, seed=seed)
    tr = trace(H, probes=probes, seed=seed + 1)
    c = sgd_noise_factor(pb.n, batch_size)  # the escape engine's SGD draws without replacement
    out = {"loss": pb.loss_value(), "n": pb.n, "p": pb.p, "lr": lr, "batch_size": batch_size,
           "noise_factor": c,
           "lambda_max": lam, "lambda_max_residual": float(eig.residuals[0]),
           "two_over_lr": 2.0 / lr,
           "gd_stable": bool(lam <= 2.0 / lr), "gd_escape_rate": abs(1 - lr * lam),
           "hessian_frobenius": fro.value, "hessian_frobenius_stderr": fro.stderr,
           "hessian_trace": tr.value, "hessian_trace_stderr": tr.stderr, "probes": probes,
           "mu": None, "alpha": None, "beta": None, "align_samples": None,
           "nonuniformity": None, "nonuniformity_samples": None,
           "alignment_bound": None, "alignment_bound_holds": None, "gamma_0": None}
    if alignment:
        from ..estimators.alignment import alignment as align

        al = align(pb, samples=align_samples, seed=seed)
        out.update(mu=al.mu, alpha=al.alpha, beta=al.beta, align_samples=al.n)
        if _num(al.mu):
            bound = alignment_bound(lr, al.mu, c)
            out.update(alignment_bound=bound, alignment_bound_holds=bool(fro.value <= bound),
                       gamma_0=gamma0(lr, al.mu, fro.value, c))
    if nonuniformity:
        from ..metrics.stability import nonuniformity as nonuni

        s = nonuni(pb, samples=s_samples, seed=seed, tol=1e-3)
        n_eff = s.extra["samples"]
        out.update(nonuniformity=s.value, nonuniformity_samples=n_eff,
                   nonuniformity_bound=1 / (lr * math.sqrt(c)) if c > 0 else math.inf)
    return out
