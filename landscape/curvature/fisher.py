"""Fisher matrices as linear operators: the true Fisher by Monte Carlo and the empirical Fisher.

- :class:`Fisher`: ``F = (1/n) Σ_i E_{ŷ∼p(·|x_i,θ)}[∇l(f_i, ŷ) ∇l(f_i, ŷ)ᵀ]`` with ``mc_samples``
  labels per sample drawn ONCE from the model's predictive distribution (categorical for
  cross-entropy, ``ŷ ∼ N(f_i, I)`` for mse) with a seeded generator, so the operator is a fixed
  symmetric PSD matrix; ``E[F_mc] = F = G`` (docs/algorithms.md §1 "true Fisher"; covariance-noise
  paper App. F).
- :class:`EmpiricalFisher`: ``F_emp = (1/n) Σ_i g_i g_iᵀ`` at the dataset labels, from per-sample
  gradients (vmap) in chunks of samples: memory ``chunk · p``, never ``n · p``.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from ..data import batch as B
from ..data.batch import IGNORE
from ..errors import ConfigError, LandscapeError
from ..problem import Problem
from . import functional as fx
from .base import ProblemOperator

#: memory budget of one chunk of per-sample vectors, in bytes (the ``chunk`` default).
CHUNK_BYTES = 256 << 20


def require_per_sample(problem: Problem, what: str) -> None:
    """Per-sample quantities need a per-sample loss: a BatchNorm using batch statistics (train
    mode) couples the samples of a batch and dropout draws random masks, so ``l_i`` is undefined."""
    if not problem.train_mode:
        return
    bad = [type(m).__name__ for m in problem.model.modules()
           if isinstance(m, (nn.modules.batchnorm._BatchNorm, nn.modules.dropout._DropoutNd))]
    if bad:
        raise LandscapeError(
            f"{what} needs per-sample losses, which are undefined in train mode with {bad[0]} "
            "(BatchNorm batch statistics couple the samples; dropout is random)",
            "drop --train-mode (eval mode uses the running statistics)")


def auto_chunk(problem: Problem, vectors_per_sample: int, chunk: int | None,
               budget: int = CHUNK_BYTES) -> int:
    """Samples per vmapped call: ``chunk`` if given, else as many as keep
    ``samples · vectors_per_sample · p`` elements within ``budget`` bytes (and within a quarter
    of the problem's memory budget)."""
    if chunk is not None:
        if chunk < 1:
            raise ConfigError(f"chunk must be positive, got {chunk}", "pass e.g. --chunk 64")
        return int(chunk)
    item = torch.finfo(problem.dtype).bits // 8
    budget = min(budget, problem.budget.bytes // 4)
    return max(1, int(budget // (max(1, vectors_per_sample) * problem.p * item)))


def _chunks(x: torch.Tensor, y: torch.Tensor, size: int):
    for i in range(0, B.size(x), size):
        yield B.rows(x, slice(i, i + size)), y[i : i + size]


def predictive_draws(problem: Problem, m: int, seed: int) -> torch.Tensor | None:
    """The randomness of ``m`` predictive draws for each of this process's samples: uniforms
    ``[n_local, m]`` (cross-entropy) or standard normals ``[n_local, m, *out]`` (mse), drawn for
    all ``n`` global samples from ``seed`` and cut to this rank's rows ``[rank::world]``, so the
    labels are the same whatever the number of processes. None for a token loss, whose draws
    :func:`token_draws` makes per sequence as its batches are read."""
    name = problem.loss.name
    if problem.loss.per_token:
        return None  # drawn per sequence and token, by token_draws
    g = torch.Generator().manual_seed(int(seed))
    with torch.no_grad():
        out_shape = problem.forward(problem.params, problem.batches_of(1).first()[0]).shape[1:]
    if name == "cross-entropy":
        draws = torch.rand((problem.n, m), generator=g, dtype=torch.float64)
    elif name == "mse":
        draws = torch.randn((problem.n, m, *out_shape), generator=g, dtype=torch.float64)
    else:
        raise LandscapeError(f"the true Fisher needs a likelihood, and loss {name!r} defines none",
                             "use --loss cross-entropy or mse (the GGN is defined for any loss)")
    d = torch.distributed
    if d.is_available() and d.is_initialized():
        draws = draws[d.get_rank() :: d.get_world_size()]
    return draws


def token_draws(problem: Problem, start: int, count: int, length: int, m: int,
                seed: int) -> torch.Tensor:
    """Uniforms ``[count, length, m]`` for this process's sequences ``start … start+count−1``:
    each sequence's from a generator of its own, seeded by ``(seed, global position)``, and drawn
    position-major, so a token's draws depend neither on the batches, nor on the padding, nor on
    the number of processes."""
    d = torch.distributed
    rank, world = (d.get_rank(), d.get_world_size()) if d.is_available() and d.is_initialized() \
        else (0, 1)
    out = torch.empty((count, length, m), dtype=torch.float64)
    for j in range(count):
        state = np.random.SeedSequence([int(seed), rank + (start + j) * world]).generate_state(2)
        g = torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))
        out[j] = torch.rand((length, m), generator=g, dtype=torch.float64)
    return out


def sample_tokens(loss, outputs: torch.Tensor, y: torch.Tensor,
                  draws: torch.Tensor) -> torch.Tensor:
    """Label sequences ``[B·m, T]`` (sample-major) drawn from the model, one token per counted
    position from the softmax of the logits that score it (``draws``: ``[B, ≥T, m]`` uniforms);
    the positions the data's labels ignore stay −100."""
    f = outputs[:, :-1] if loss.name == "causal-lm" else outputs
    counted = loss.token_targets(y) != IGNORE  # [B, T']
    cdf = torch.softmax(f.detach().double(), dim=-1).cumsum(-1).cpu()  # [B, T', V]
    u = draws[:, : f.shape[1]].contiguous()  # [B, T', m]
    drawn = torch.searchsorted(cdf, u).clamp_(max=cdf.shape[-1] - 1).to(y.device)
    drawn[~counted] = IGNORE
    full = torch.full((*y.shape, drawn.shape[-1]), IGNORE, dtype=torch.long, device=y.device)
    full[:, y.shape[1] - f.shape[1]:] = drawn
    return full.permute(0, 2, 1).reshape(-1, y.shape[1])


def output_factors(problem: Problem, outputs: torch.Tensor, labels: torch.Tensor,
                   m: int) -> torch.Tensor:
    """``R_i = [r_i1 … r_im]/√m``, ``[B, k, m]``: the output gradients ``r_is = ∂l/∂f`` at the
    drawn labels (sample-major ``[B·m, …]``), k the flattened output size.

    A token loss ``l_i = c Σ_t ℓ_it`` (``c = n/N``) is a sum of log-likelihoods scaled by ``c``,
    so its Fisher is ``c Σ_t E[∇ℓ_it ∇ℓ_itᵀ]``, not ``E[∇l_i ∇l_iᵀ]`` (which has ``c²``): the
    factors are ``r/√c``, and ``E F_mc = GGN`` (docs/algorithms.md §1 "Sequences")."""
    rep = outputs.repeat_interleave(m, dim=0)
    r = fx.loss_output_grad(problem.loss, rep, labels).reshape(outputs.shape[0], m, -1)
    return r.transpose(1, 2).contiguous() / math.sqrt(m * problem.loss.scale)


def sample_predictive(problem: Problem, outputs: torch.Tensor, draws: torch.Tensor) -> torch.Tensor:
    """Labels from the model's predictive distribution, one per draw, in the loss's target format
    and sample-major order (``[B·m]`` classes, or ``[B·m, *out]`` regression targets).

    cross-entropy: categorical ``p(y|x) = softmax(f)`` by inverse CDF of the uniforms ``draws``;
    mse ``½‖f−y‖²``: ``y = f + z ∼ N(f, I)`` (the Gaussian likelihood whose negative log is the
    loss up to a constant)."""
    if problem.loss.name == "cross-entropy":
        cdf = torch.softmax(outputs.detach().double(), dim=-1).cumsum(-1).cpu()
        labels = torch.searchsorted(cdf, draws.contiguous()).clamp_(max=cdf.shape[-1] - 1)  # [B, m]
        return labels.reshape(-1).to(outputs.device)
    y = outputs.detach().unsqueeze(1) + draws.to(device=outputs.device, dtype=outputs.dtype)
    return y.reshape(-1, *outputs.shape[1:])


class Fisher(ProblemOperator):
    """Monte-Carlo true Fisher ``F_mc = (1/n) Σ_i (1/m) Σ_s g_is g_isᵀ`` with
    ``g_is = ∇_θ l(f_i, ŷ_is)`` and ``ŷ_is`` drawn from the model (see :func:`sample_predictive`).

    Since ``g_is = J_iᵀ r_is`` with ``r_is = ∂l/∂f`` at the drawn label, the product is ``J_iᵀ (R_i
    R_iᵀ) J_i v`` with ``R_i = [r_i1 … r_im]/√m`` (:func:`fx.jacobian_sandwich_vp`): one
    Jacobian-vector and one vector-Jacobian product per batch, whatever ``m``. The labels are drawn
    once at construction from ``seed``, per global sample (the same under torch.distributed for any
    number of processes), so repeated products are those of one fixed PSD matrix; ``E F_mc = GGN``
    and ``‖F_mc − GGN‖_F = O(1/√(m))`` (tested)."""

    def __init__(self, model_or_problem, loss=None, data=None, *, mc_samples: int = 1,
                 seed: int = 0,
                 block_size: int | None = None, **kwargs) -> None:
        super().__init__(model_or_problem, loss, data, block_size=block_size, **kwargs)
        if mc_samples < 1:
            raise ConfigError(f"mc_samples must be at least 1, got {mc_samples}",
                              "pass --mc-samples 1 or more")
        self.mc_samples = int(mc_samples)
        self.seed = int(seed)
        pb = self.problem
        m = self.mc_samples
        draws = predictive_draws(pb, m, self.seed)
        self._factors = None
        if draws is None:  # token losses: R_i from the outputs of each product's own batch
            return
        # [n_local, k, m] output-space factors R_i, one row per sample in reading order
        factors = []
        start = 0
        with torch.no_grad():
            for x, _ in pb.batches:
                out = pb.forward(pb.params, x)
                labels = sample_predictive(pb, out, draws[start : start + B.size(x)])
                start += B.size(x)
                factors.append(output_factors(pb, out, labels, m))
        self._factors = torch.cat(factors) if len(factors) > 1 else factors[0]

    def redraw(self, seed: int) -> Fisher:
        """The same Monte-Carlo Fisher with labels drawn anew from ``seed``: an independent draw,
        for estimates of the true Fisher whose error covers the labels' randomness too."""
        return Fisher(self.problem, mc_samples=self.mc_samples, seed=seed,
                      block_size=self._asked["block"])

    def _prepare(self, i: int, start: int, x, y, width: int = 1):
        if self._factors is not None:
            return self._factors[start : start + B.size(x)]
        pb = self.problem
        with torch.no_grad():
            out = pb.forward(pb.params, x)
            draws = token_draws(pb, max(start, 0), B.size(x), y.shape[1], self.mc_samples,
                                self.seed)
            labels = sample_tokens(pb.loss, out, y, draws)
            return output_factors(pb, out, labels, self.mc_samples)

    def _apply(self, R, x, y, V, last=False):
        pb = self.problem
        return fx.jacobian_sandwich_vp(pb.forward, pb.params, x, R, V)


class EmpiricalFisher(ProblemOperator):
    """``F_emp v = (1/n) Σ_i g_i (g_iᵀ v)`` with ``g_i = ∇l_i`` at the dataset labels
    (docs/algorithms.md §1 "empirical Fisher"; in this toolkit "empirical Fisher" never means the
    lecture's G). Per-sample gradients come from vmap in chunks of ``chunk`` samples (default: as
    many as fit in 256 MiB); each product recomputes them, so memory is ``chunk · p``."""

    def __init__(self, model_or_problem, loss=None, data=None, *, chunk: int | None = None,
                 block_size: int | None = None, **kwargs) -> None:
        super().__init__(model_or_problem, loss, data, block_size=block_size, **kwargs)
        require_per_sample(self.problem, type(self).__name__)
        self.chunk = auto_chunk(self.problem, 1, chunk)

    def _calibrate(self, x, y):
        return 0.0, 0.0  # chunks of per-sample gradients are sized by ``auto_chunk``

    def per_sample_gradients(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``[B, p]`` rows ``g_i`` of one chunk."""
        pb = self.problem
        return pb.layout.flatten_rows(fx.per_sample_grads(pb.forward, pb.loss, pb.params, x, y))

    def _second_moment(self, V: torch.Tensor) -> torch.Tensor:
        """``(1/n) Σ_i g_i (g_iᵀ V)`` summed over batches, chunks and ranks."""
        pb = self.problem
        out = torch.zeros_like(V)
        for x, y in pb.batches:
            for xc, yc in _chunks(x, y, self.chunk):
                U = self.per_sample_gradients(xc, yc)
                out += U.T @ (U @ V.to(U.dtype))  # summed in V's dtype (float32 for bfloat16)
        out /= pb.n
        return pb.reduce(out)

    def _pass(self, V: torch.Tensor) -> torch.Tensor:
        return self._second_moment(V)
