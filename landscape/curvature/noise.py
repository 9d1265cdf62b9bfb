"""SGD noise operators: the gradient-noise covariance Σ and the non-uniformity Σ_H.

- :class:`NoiseCovariance`: ``Σ = (1/n) Σ_i g_i g_iᵀ − g gᵀ`` (docs/algorithms.md §1 "SGD noise
  covariance"); one SGD step with batch B (without replacement) adds gradient noise of covariance
  ``(n−B)/(B(n−1)) Σ``.
- :class:`NonUniformity`: ``Σ_H = (1/n) Σ_i H_i² − H²`` (Wu, Ma & E 2018; lecture "What affects
  the stability of SGD"); the non-uniformity is ``s = sqrt(λ_max(Σ_H))``.
"""

from __future__ import annotations

import torch

from . import functional as fx
from .base import ProblemOperator
from .fisher import EmpiricalFisher, _chunks, auto_chunk, require_per_sample


class NoiseCovariance(EmpiricalFisher):
    """``Σ v = (1/n) Σ_i g_i (g_iᵀ v) − g (gᵀ v)``: the covariance of one sample's gradient
    (population normalisation 1/n), from per-sample gradients in chunks of samples (memory ``chunk ·
    p``) and the full gradient ``g`` computed once at construction (``gradient``, with
    ``loss_value`` the mean loss there). PSD: ``Σ = (1/n) Σ_i (g_i − g)(g_i − g)ᵀ``."""

    def __init__(self, model_or_problem, loss=None, data=None, *, chunk: int | None = None,
                 block_size: int | None = None, **kwargs) -> None:
        super().__init__(model_or_problem, loss, data, chunk=chunk, block_size=block_size, **kwargs)
        self.loss_value, self.gradient = self.problem.gradient()

    def _pass(self, V: torch.Tensor) -> torch.Tensor:
        g = self.gradient
        return self._second_moment(V) - g[:, None] * (g @ V)[None, :]


class NonUniformity(ProblemOperator):
    """``Σ_H v = (1/m) Σ_{i∈S} H_i (H_i v) − H_S (H_S v)`` over a seeded subset ``S`` of
    ``samples`` of the problem's samples (all by default), with ``H_S = (1/m) Σ_{i∈S} H_i``: the
    covariance of the per-sample Hessians of ``S`` (PSD), docs/algorithms.md §1 "non-uniformity".

    Per-sample products ``H_i(H_i v)`` are two forward-over-reverse products per sample and
    vector, vmapped over ``chunk`` samples (default: as fit in 256 MiB for the block);
    ``H_S(H_S v)`` is two batched Hessian products. A product of one vector costs about
    four Hessian-vector products over S. ``s = sqrt(λ_max)``: see
    :func:`landscape.metrics.stability.nonuniformity`.

    In one dimension, ``L = (1/2n) Σ a_i x²`` gives ``Σ_H = mean(a_i²) − mean(a_i)²``."""

    def __init__(self, model_or_problem, loss=None, data=None, *, samples: int | None = None,
                 seed: int = 0,
                 chunk: int | None = None, block_size: int | None = None, **kwargs) -> None:
        super().__init__(model_or_problem, loss, data, block_size=block_size or 8, **kwargs)
        require_per_sample(self.problem, "the non-uniformity")
        self.sub = self.problem.subset(samples, seed)
        self.samples = self.sub.n
        self.subsampled = self.samples < self.problem.n
        self.seed = seed
        self._chunk = chunk

    def _calibrate(self, x, y):
        return 0.0, 0.0  # per-sample products run in chunks sized by ``auto_chunk``

    def _hvp(self, rows: torch.Tensor) -> torch.Tensor:
        """``H_S`` applied to the rows ``[k, p]``."""
        pb = self.problem
        Vd = pb.layout.unflatten_rows(rows.to(pb.dtype))
        out = torch.zeros_like(rows)
        for x, y in self.sub.batches:
            out += pb.layout.flatten_rows(fx.hvp(pb.forward, pb.loss, pb.params, x, y, Vd))
        return pb.reduce(out / self.samples)

    def _pass(self, V: torch.Tensor) -> torch.Tensor:
        pb = self.problem
        rows = V.T.contiguous()
        Vd = pb.layout.unflatten_rows(rows.to(pb.dtype))
        chunk = auto_chunk(pb, 4 * rows.shape[0], self._chunk)
        sq = torch.zeros_like(rows)
        for x, y in self.sub.batches:
            for xc, yc in _chunks(x, y, chunk):
                sq += pb.layout.flatten_rows(
                    fx.per_sample_hvp_sq(pb.forward, pb.loss, pb.params, xc, yc, Vd)
                )
        sq = pb.reduce(sq / self.samples)
        return (sq - self._hvp(self._hvp(rows))).T
