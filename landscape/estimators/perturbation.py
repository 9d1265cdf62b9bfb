"""Sharpness as the loss increase under parameter perturbations (the estimators behind
``landscape sharpness --metric perturbation`` and ``--metric keskar``).

- perturbation: ``E_{ε∼N(0,ρ²I)}[L(θ+ε)] − L(θ)`` by Monte Carlo, beside its second-order value
  ``ρ² tr(H)/2`` (lecture, "sharpness ... under small perturbation": ``Tr(∇²L) = E 2(L(θ+ε) −
  L(θ))/ρ² + O(ρ)`` at a minimum).
- keskar: Keskar et al.'s ε-sharpness (ICLR 2017, Metric 2.1; the lecture's Table 4):
  ``φ = 100 · (max_{y∈C_ε} L(θ + A y) − L(θ)) / (1 + L(θ))`` over the box
  ``C_ε = {|y_i| ≤ ε(|(A⁺θ)_i| + 1)}``, with ``A = I`` (full space) or a random ``p × r`` matrix.
"""

from __future__ import annotations

import math

import torch

from ..errors import ConfigError
from ..problem import Problem
from ..results import Estimate
from .sampling import gaussian, make_generator


def problem_of(op) -> Problem:
    """The :class:`Problem` behind an operator (through wrappers that keep theirs in ``.op``)."""
    seen = op
    while not hasattr(seen, "problem"):
        if hasattr(seen, "idx"):  # a Restricted block: part of its problem's parameters
            raise ConfigError(
                "this metric evaluates the loss and its gradient over a problem's parameters, "
                "not over a block cut out of one tensor (the q, k, v blocks of --per-layer)",
                "measure it without --per-layer, or restrict with --params")
        seen = getattr(seen, "op", None)
        if seen is None:
            raise ConfigError(
                "this metric evaluates the loss and needs an operator built on a Problem",
                "pass landscape.Hessian(problem)",
            )
    return seen.problem


def perturbation_sharpness(problem: Problem, rho: float = 0.01, samples: int = 100, seed: int = 0,
                           probes: int = 100, op=None, antithetic: bool = True) -> Estimate:
    """``E[L(θ+ε)] − L(θ)`` for ``ε ∼ N(0, ρ² I)`` by Monte Carlo over ``samples`` draws, mean ±
    std/√samples. Antithetic pairs (default) average ``L(θ+ε)`` and ``L(θ−ε)``, which removes the
    first-order term ``gᵀε`` from every draw without bias (2 loss evaluations per draw).

    ``extra``: ``quadratic = ρ² tr(H)/2`` with its standard error (Hutchinson on ``op``, default
    the problem's Hessian, ``probes`` products), the exact second-order value of the expectation;
    for a quadratic loss the two agree exactly in expectation."""
    from ..curvature.hessian import Hessian
    from ..estimators import trace

    if not rho > 0:
        raise ConfigError(f"rho must be positive, got {rho}", "pass --rho 0.01")
    if samples < 2:
        raise ConfigError(f"need at least 2 perturbations for a standard error, got {samples}",
                          "pass --perturbations 2 or more")
    theta = problem.theta
    L0 = problem.loss_value()
    g = make_generator(seed)
    diffs = []
    for _ in range(samples):
        eps = rho * gaussian(problem.p, 1, g, problem.dtype, problem.device)[:, 0]
        up = problem.loss_value(theta + eps)
        diffs.append(0.5 * (up + problem.loss_value(theta - eps)) - L0 if antithetic else up - L0)
    d = torch.tensor(diffs, dtype=torch.float64)
    mean, se = float(d.mean()), float(d.std(unbiased=True)) / math.sqrt(samples)
    tr = trace(op if op is not None else Hessian(problem), probes=probes, seed=seed)
    return Estimate(mean, se, tr.matvecs, "monte-carlo", {
        "rho": rho, "perturbations": samples, "antithetic": antithetic, "loss": L0,
                                                          "dof": samples - 1,
        "loss_evaluations": samples * (2 if antithetic else 1) + 1,
        "quadratic": rho**2 * tr.value / 2, "quadratic_stderr": rho**2 * tr.stderr / 2,
        "trace": tr.value, "trace_stderr": tr.stderr})


def keskar_sharpness(problem: Problem, epsilon: float = 1e-3, subspace: int | None = None,
                     steps: int = 20,
                     seed: int = 0) -> Estimate:
    """Keskar et al.'s ε-sharpness ``φ`` in percent (Metric 2.1), maximised by projected sign
    ascent in the box: from a seeded uniform start in ``C_ε``, ``steps`` steps
    ``y ← clip(y + α sign(Aᵀ∇L(θ+Ay)), C_ε)`` with ``α = 2.5 ε_i / steps`` per coordinate (as in
    PGD for ℓ∞ boxes; Keskar et al. used a few L-BFGS-B iterations), keeping the best loss seen.
    The ascent finds a local maximum, so ``φ`` is a lower bound of the true value.

    ``subspace = r``: ``A`` is a ``p × r`` standard Gaussian matrix from ``seed`` (Table 4:
    r = 100), ``A⁺θ`` by least squares; ``None``: the full space (``A = I``). ``stderr`` is NaN."""
    if not epsilon > 0:
        raise ConfigError(f"epsilon must be positive, got {epsilon}", "pass --epsilon 1e-3")
    if steps < 1:
        raise ConfigError(f"ascent steps must be positive, got {steps}", "pass --ascent-steps 20")
    theta = problem.theta
    L0 = problem.loss_value()
    g = make_generator(seed)
    if subspace:
        if not 1 <= subspace <= problem.p:
            raise ConfigError(f"subspace dimension must be in [1, {problem.p}], got {subspace}",
                              "pass --subspace 100, or 0 for the full space")
        A = gaussian(problem.p, subspace, g, problem.dtype, problem.device)
        coords = torch.linalg.lstsq(A.double(), theta.double()[:, None]).solution[:,
            0].to(problem.dtype)
    else:
        A, coords = None, theta
    box = epsilon * (coords.abs() + 1)
    u = torch.rand(box.shape, generator=g, dtype=torch.float64).to(box)
    y = (2 * u - 1) * box
    step = 2.5 * box / steps

    def point(y: torch.Tensor) -> torch.Tensor:
        return theta + (A @ y if A is not None else y)

    best, best_y = -math.inf, y
    for _ in range(steps):
        L, grad = problem.gradient(point(y))
        if L > best:
            best, best_y = L, y
        gy = A.T @ grad if A is not None else grad
        y = torch.minimum(torch.maximum(y + step * torch.sign(gy), -box), box)
    L = problem.loss_value(point(y))
    if L > best:
        best, best_y = L, y
    phi = 100 * (best - L0) / (1 + L0)
    return Estimate(
        phi,
        math.nan,
        0,
        "projected-ascent",
        {
            "epsilon": epsilon,
            "subspace": subspace or None,
            "steps": steps,
            "loss": L0,
            "max_loss": best,
            "gradient_evaluations": steps,
            "step_norm": float((A @ best_y if A is not None else best_y).norm()),
        },
    )


__all__ = ["keskar_sharpness", "perturbation_sharpness", "problem_of"]
