"""Comparing subspaces of parameter space (docs/algorithms.md §1, "Subspaces"): the share of a
vector in a span, and the principal angles between two spans (Björck & Golub 1973), the measure
of how much two top-k Hessian eigenspaces agree (Gur-Ari, Roberts & Dyer 2018 track the overlap
of the top space with its value some steps earlier)."""

from __future__ import annotations

from dataclasses import dataclass

import torch


def orthonormal(V: torch.Tensor) -> torch.Tensor:
    """An orthonormal basis ``Q [p, k]`` of the columns of ``V`` (QR in float64, column order
    kept)."""
    Q, _ = torch.linalg.qr(V.double())
    return Q


def subspace_fraction(V: torch.Tensor, v: torch.Tensor) -> float:
    """``‖P v‖² / ‖v‖²`` with ``P`` the orthogonal projection onto the span of the columns of
    ``V: [p, k]``: 1 for ``v`` in the span, 0 orthogonal to it."""
    Q = orthonormal(V)
    v = v.reshape(-1).double().to(Q.device)
    vv = float(v @ v)
    return float((Q.T @ v).square().sum()) / vv if vv > 0 else 0.0


@dataclass(frozen=True)
class Overlap:
    """Two spans ``A [p, k_a]`` and ``B [p, k_b]`` compared.

    ``cosines``: the cosines of the principal angles, descending (the singular values of
    ``Q_aᵀQ_b``, ``min(k_a, k_b)`` of them); ``angles_deg`` the angles; ``matrix``: the squared
    overlaps ``(a_iᵀ b_j)²`` of the given (unit) columns, ``[k_a, k_b]``, the identity for a set
    of orthonormal vectors against itself; ``overlap``: ``‖Q_aᵀQ_b‖_F² / max(k_a, k_b)`` = the
    mean squared cosine, 1 for equal spans and 0 for orthogonal ones (for ``k_a = k_b = k``,
    Gur-Ari et al.'s overlap ``(1/k) Σ_i ‖P_b a_i‖²``)."""

    cosines: torch.Tensor
    matrix: torch.Tensor
    overlap: float

    @property
    def angles_deg(self) -> torch.Tensor:
        return torch.rad2deg(torch.arccos(self.cosines.clamp(-1.0, 1.0)))

    def to_dict(self) -> dict:
        return {"overlap": self.overlap, "cosines": self.cosines.tolist(),
                "angles_deg": self.angles_deg.tolist(), "matrix": self.matrix.tolist()}


def overlap(A: torch.Tensor, B: torch.Tensor) -> Overlap:
    """Principal angles and overlaps of the column spans of ``A`` and ``B`` (in float64)."""
    if A.shape[0] != B.shape[0]:
        raise ValueError(f"the spaces live in dimensions {A.shape[0]} and {B.shape[0]}")
    A, B = A.double(), B.double().to(A.device)
    Qa, Qb = orthonormal(A), orthonormal(B)
    M = Qa.T @ Qb
    cos = torch.linalg.svdvals(M).clamp(max=1.0).cpu()
    unit_a, unit_b = A / A.norm(dim=0), B / B.norm(dim=0)
    matrix = (unit_a.T @ unit_b).square().cpu()
    return Overlap(cos, matrix, float(M.square().sum()) / max(A.shape[1], B.shape[1]))


__all__ = ["Overlap", "orthonormal", "overlap", "subspace_fraction"]
