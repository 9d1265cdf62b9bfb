"""Stochastic trace estimators: Hutchinson and Hutch++.

Both take any symmetric operator (``matmat`` on ``[p, k]`` blocks) or a dense tensor, draw
Rademacher probes from a seeded generator (:mod:`landscape.estimators.sampling`), multiply them
in blocks (one ``matmat`` call per block) and return an :class:`~landscape.results.Estimate`
with a standard error and the exact number of products used.
"""

from __future__ import annotations

import math
from typing import Literal

import torch

from landscape.curvature.operator import as_operator, expected_passes
from landscape.errors import ConfigError
from landscape.estimators.sampling import make_generator, rademacher
from landscape.results import Estimate

TraceMethod = Literal["hutchinson", "hutchpp"]


def _block_size(op, probes: int, block: int | None) -> int:
    b = block if block is not None else getattr(op, "block_size", 64)
    return max(1, min(int(b), probes))


def _mean_stderr(x: torch.Tensor) -> tuple[float, float]:
    """Sample mean and its standard error ``std(x, ddof=1) / sqrt(m)``."""
    x = x.double()
    m = x.numel()
    return float(x.mean()), float(x.std(unbiased=True)) / math.sqrt(m)


def _even_blocks(total: int, block: int) -> list[int]:
    """``total`` split into the fewest blocks of at most ``block``, as even as possible
    (100 in blocks of 16: seven of 15 or 14, not six of 16 and one of 4)."""
    nb = math.ceil(total / max(1, block))
    return [total // nb + (1 if i < total % nb else 0) for i in range(nb)]


def _quadratic_forms(op, probes: int, g: torch.Generator, block: int) -> torch.Tensor:
    """``[m]`` values ``v_jᵀ A v_j`` for Rademacher ``v_j``, at most ``block`` probes per
    product."""
    p = op.shape[0]
    out = []
    blocks = _even_blocks(probes, block)
    with expected_passes(op, sum(-(-k // op.block_size) for k in blocks)):
        for k in blocks:
            V = rademacher(p, k, g, op.dtype, op.device)
            out.append((V * op.matmat(V)).sum(dim=0))
    return torch.cat(out)


def hutchinson_trace(op, probes: int = 100, seed: int = 0, block: int | None = None) -> Estimate:
    """Hutchinson's estimate ``tr(A) ≈ (1/m) Σ_j v_jᵀ A v_j`` with Rademacher ``v_j``.

    Unbiased since ``E[v vᵀ] = I``; ``Var(vᵀAv) = 2(‖A‖_F² − Σ_i A_ii²)`` (Hutchinson 1990).
    The standard error is the sample standard deviation over ``sqrt(m)``. Costs ``m`` products
    in blocks of ``block`` (default: the operator's ``block_size``).
    """
    op = as_operator(op)
    if probes < 2:
        raise ConfigError(f"hutchinson needs at least 2 probes for a standard error, got {probes}",
                          "use --probes 2 or more (100 is typical)")
    g = make_generator(seed)
    vals = _quadratic_forms(op, probes, g, _block_size(op, probes, block))
    value, se = _mean_stderr(vals)
    return Estimate(value, se, probes, "hutchinson", {"probes": probes, "dof": probes - 1})


def hutchpp_trace(op, probes: int = 100, seed: int = 0, block: int | None = None) -> Estimate:
    """Hutch++ (Meyer, Musco, Musco & Woodruff 2021, Algorithm 1) with a budget of ``m`` products.

    ``S`` (``s`` Rademacher columns), ``Q = orth(A S)``, then ``tr(A) ≈ tr(Qᵀ A Q) + (1/r) Σ_j
    w_jᵀ A w_j`` with ``w_j = (I − QQᵀ) g_j`` for ``r = m − 2s`` further Rademacher ``g_j``.
    Products: ``s`` for ``AS``, ``s`` for ``AQ``, ``r`` for the residual. ``tr(QᵀAQ)`` is exact
    given ``Q``, so the standard error is the residual Hutchinson part's (sample std / sqrt(r),
    with ``r − 1`` degrees of freedom). The paper's ``s = ⌊m/3⌋`` leaves 4 residual probes at
    m = 12, too few for an error bar: ``s`` is lowered so that ``r ≥ 10`` where ``m ≥ 12`` allows.
    When a few eigenvalues dominate, ``Q`` captures them and the error falls from
    ``O(‖A‖_F/√m)`` to ``O(‖A − A_s‖_F/√m)``.
    """
    op = as_operator(op)
    if probes < 4:
        raise ConfigError(f"hutch++ needs at least 4 products, got {probes}",
                          "use --probes 4 or more (a multiple of 3, e.g. 99, is natural)")
    p = op.shape[0]
    s = max(1, min(probes // 3, (probes - 10) // 2))  # at least 10 residual probes when m >= 12
    r = probes - 2 * s
    g = make_generator(seed)
    S = rademacher(p, s, g, op.dtype, op.device)
    Q, _ = torch.linalg.qr(op.matmat(S))  # Q: [p, min(p, s)], orthonormal columns
    del S
    low_rank = float((Q * op.matmat(Q)).sum())  # tr(Qᵀ A Q)
    b = _block_size(op, r, block)
    vals = []
    for k in _even_blocks(r, b):
        W = rademacher(p, k, g, op.dtype, op.device)
        W = W - Q @ (Q.T @ W)  # (I − QQᵀ) g
        vals.append((W * op.matmat(W)).sum(dim=0))
    mean, se = _mean_stderr(torch.cat(vals))
    extra = {"probes": probes, "sketch": s, "residual_probes": r, "low_rank_trace": low_rank,
             "dof": r - 1}
    return Estimate(low_rank + mean, se, s + Q.shape[1] + r, "hutchpp", extra)


def trace(op, probes: int = 100, method: TraceMethod = "hutchinson", seed: int = 0,
          block: int | None = None) -> Estimate:
    """``tr(A)`` by ``method``: ``"hutchinson"`` (:func:`hutchinson_trace`) or ``"hutchpp"``
    (:func:`hutchpp_trace`), with ``probes`` operator products in total."""
    if method == "hutchinson":
        return hutchinson_trace(op, probes, seed, block)
    if method == "hutchpp":
        return hutchpp_trace(op, probes, seed, block)
    raise ConfigError(f"unknown trace method {method!r}", "choose 'hutchinson' or 'hutchpp'")


__all__ = ["hutchinson_trace", "hutchpp_trace", "trace"]
