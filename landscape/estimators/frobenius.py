"""Frobenius norm and Frobenius inner product of symmetric operators by Rademacher probes."""

from __future__ import annotations

import math

import torch

from landscape.curvature.operator import as_operator, expected_passes
from landscape.errors import ConfigError
from landscape.estimators.sampling import make_generator, rademacher
from landscape.estimators.trace import _block_size, _mean_stderr
from landscape.results import Estimate


def _check_probes(probes: int) -> None:
    if probes < 2:
        raise ConfigError(f"need at least 2 probes for a standard error, got {probes}",
                          "use --probes 2 or more (100 is typical)")


def frobenius(op, probes: int = 100, seed: int = 0, block: int | None = None) -> Estimate:
    """``‖A‖_F = sqrt(tr(A²))`` with ``tr(A²) = tr(AᵀA) = E‖A v‖²`` for Rademacher ``v``.

    docs/algorithms.md §1 (Frobenius norm). ``tr(A²)`` is the mean of ``‖A v_j‖²`` over ``m`` probes
    with standard error ``se = std/√m``; the delta method carries it to the square root: ``se(‖A‖_F)
    ≈ se / (2 sqrt(tr A²))``. ``extra`` holds ``trace_sq`` and ``trace_sq_stderr``. Costs ``m``
    products."""
    op = as_operator(op)
    _check_probes(probes)
    g = make_generator(seed)
    p = op.shape[0]
    b = _block_size(op, probes, block)
    vals = []
    blocks = [min(b, probes - start) for start in range(0, probes, b)]
    with expected_passes(op, sum(-(-k // op.block_size) for k in blocks)):
        for start in range(0, probes, b):
            V = rademacher(p, min(b, probes - start), g, op.dtype, op.device)
            vals.append(op.matmat(V).double().square().sum(dim=0))
    tsq, tsq_se = _mean_stderr(torch.cat(vals))
    value = math.sqrt(max(tsq, 0.0))
    se = tsq_se / (2 * value) if value > 0 else (0.0 if tsq_se == 0 else math.inf)
    return Estimate(value, se, probes, "hutchinson",
                    {"probes": probes, "trace_sq": tsq, "trace_sq_stderr": tsq_se,
                     "dof": probes - 1})


def frobenius_inner(opA, opB, probes: int = 100, seed: int = 0,
                    block: int | None = None) -> Estimate:
    """``⟨A, B⟩_F = tr(AB) = E[(A v)ᵀ (B v)]`` for symmetric ``A``, ``B`` and Rademacher ``v``.

    docs/algorithms.md §1 (comparisons: ``cos = ⟨A,B⟩_F / (‖A‖_F ‖B‖_F)``). The same probes go to
    both operators, so ``frobenius_inner(A, A)`` reproduces :func:`frobenius`'s ``trace_sq``.
    Reports mean ± std/√m; costs ``m`` products with each operator (``matvecs = 2m``)."""
    opA, opB = as_operator(opA), as_operator(opB)
    if tuple(opA.shape) != tuple(opB.shape):
        raise ConfigError(f"operators differ in shape: {tuple(opA.shape)} vs {tuple(opB.shape)}",
                          "compare matrices of the same parameter selection")
    _check_probes(probes)
    g = make_generator(seed)
    p = opA.shape[0]
    b = min(_block_size(opA, probes, block), _block_size(opB, probes, block))
    vals = []
    for start in range(0, probes, b):
        V = rademacher(p, min(b, probes - start), g, opA.dtype, opA.device)
        AV = opA.matmat(V).double()
        BV = opB.matmat(V).to(device=AV.device, dtype=torch.float64)
        vals.append((AV * BV).sum(dim=0))
    value, se = _mean_stderr(torch.cat(vals))
    return Estimate(value, se, 2 * probes, "hutchinson", {"probes": probes, "dof": probes - 1})


__all__ = ["frobenius", "frobenius_inner"]
