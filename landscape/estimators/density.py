"""Spectral density by stochastic Lanczos quadrature (SLQ)."""

from __future__ import annotations

import torch

from landscape.curvature.operator import as_operator
from landscape.errors import ConfigError
from landscape.estimators.lanczos import _lanczos_runs, _start_vectors
from landscape.estimators.sampling import make_generator
from landscape.results import Density


def spectral_density(op, runs: int = 10, steps: int = 80, seed: int = 0,
                     batch: int | None = None) -> Density:
    """Eigenvalue density of a symmetric ``A`` by stochastic Lanczos quadrature.

    Ghorbani, Krishnan & Xiao 2019 (§2, Eq. 6-8; PyHessian's ``density``): for each run, a
    Rademacher vector ``v`` normalised to ``‖v‖ = 1`` starts ``m = steps`` Lanczos steps with
    full re-orthogonalisation; with ``T_m = U diag(θ) Uᵀ``, the Gauss quadrature
    ``vᵀ f(A) v ≈ Σ_j w_j f(θ_j)``, ``w_j = U_{1j}²`` (so ``Σ_j w_j = 1``), and
    ``E[vᵀ f(A) v] = tr f(A)/p``. The density is ``(1/runs) Σ_r Σ_j w_rj δ(λ − θ_rj)``, broadened
    by :meth:`Density.curve`. Exact moments: ``Σ_j w_j θ_j = vᵀAv`` and
    ``Σ_j w_j θ_j² = ‖Av‖²``, i.e. Hutchinson estimates of ``tr(A)/p`` and ``tr(A²)/p``.

    ``batch`` runs go through the operator together (one ``matmat`` of ``batch`` columns per
    step; the bases take ``batch · steps · p`` numbers). Default: as many runs as the operator's
    memory share holds (``op.memory``; all of them when it has none); on a GPU whose share does
    not hold one run's basis, the bases live on the host. ``steps`` is capped at ``p``; a run
    whose Krylov space becomes invariant early (few distinct eigenvalues) is exact there and is
    padded with zero-weight copies of its last node.
    """
    op = as_operator(op)
    if runs < 1 or steps < 1:
        raise ConfigError(f"need runs >= 1 and steps >= 1, got runs={runs}, steps={steps}",
                          "use e.g. --runs 10 --steps 80")
    m = min(int(steps), op.shape[0])
    where, fit = _placement(op, m)
    batch = (min(runs, fit) if batch is None else max(1, min(int(batch), runs)))
    g = make_generator(seed)
    nodes = torch.zeros(runs, m, dtype=torch.float64)
    weights = torch.zeros(runs, m, dtype=torch.float64)
    products = 0
    for start in range(0, runs, batch):
        b = min(batch, runs - start)
        V0 = _start_vectors(op, None, b, g)
        alpha, beta, lengths, _, n = _lanczos_runs(op, V0, m, keep_basis=False, where=where)
        products += n
        for i, L in enumerate(lengths):
            T = (torch.diag(alpha[i, :L]) + torch.diag(beta[i, : L - 1], 1)
                 + torch.diag(beta[i, : L - 1], -1))
            theta, U = torch.linalg.eigh(T)
            r = start + i
            nodes[r, :L] = theta
            nodes[r, L:] = theta[-1]
            weights[r, :L] = U[0] ** 2
    return Density(nodes, weights, runs, m, products,
                   {"lockstep": batch, "basis_device": str(where)})


def _placement(op, m: int) -> tuple[torch.device, int]:
    """Where SLQ keeps its bases and how many runs' bases (``m · p`` numbers each) fit there: the
    operator's memory share on its device; on a GPU, the host when one run does not fit. One run
    is always allowed while it fits four times the share (the whole budget of a problem
    operator); beyond that an error names the fix."""
    from ..memory import available, fmt_bytes

    p = op.shape[0]
    per_run = m * p * torch.empty(0, dtype=op.dtype).element_size()
    if op.memory is None:
        return op.device, 1 << 30
    fit = int(op.memory // per_run)
    if fit >= 1:
        return op.device, fit
    if op.device.type == "cuda" and available(torch.device("cpu")) // 2 >= per_run:
        return torch.device("cpu"), max(1, int(available(torch.device("cpu")) // 2 // per_run))
    if per_run <= 4 * op.memory:
        return op.device, 1
    raise ConfigError(
        f"spectral density keeps each run's {m} Lanczos vectors ({fmt_bytes(per_run)}) for "
        f"re-orthogonalisation, more than the memory budget allows",
        f"use fewer --steps (e.g. {max(2, int(4 * op.memory // (p * per_run / m)))}) or raise "
        "--memory",
    )


__all__ = ["spectral_density"]
