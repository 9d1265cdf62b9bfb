"""Pure update rules of the sharpness-aware optimizers (no state, no autograd, no side effects).

Every rule takes lists of per-parameter tensors (gradients, parameters, variances), treats them as
ONE flat vector (one global norm across all parameters, as the papers do) and returns new tensors.
The stateful mechanics (two passes, restoring parameters, BatchNorm buffers, base optimizer) live
once in :class:`landscape.optim.wrapper.SharpnessAware`. Formulas follow docs/algorithms.md §3.

>>> g = [torch.tensor([3.0, 4.0])]
>>> sam_eps(g, rho=0.5)[0]
tensor([0.3000, 0.4000])
>>> fisher_sam_eps(g, gamma=0.5, eta_f=0.0)[0]          # eta_f = 0 gives SAM
tensor([0.3000, 0.4000])
>>> round(covariance_noise_scale(4096, 128), 4)
0.087
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

Tensors = Sequence[torch.Tensor]


# ----------------------------------------------------------------------------- helpers
def global_norm(tensors: Tensors) -> torch.Tensor:
    """``sqrt(Σ_t ‖t‖²)`` over all tensors (a 0-dim tensor; 0 for an empty list)."""
    if not tensors:
        return torch.zeros(())
    if len(tensors) == 1:
        return torch.linalg.vector_norm(tensors[0])
    ref = tensors[0]
    dtype = ref.dtype
    for t in tensors[1:]:
        dtype = torch.promote_types(dtype, t.dtype)
    norms = [torch.linalg.vector_norm(t).to(device=ref.device, dtype=dtype) for t in tensors]
    return torch.linalg.vector_norm(torch.stack(norms))


def global_dot(a: Tensors, b: Tensors) -> torch.Tensor:
    """``Σ_t ⟨a_t, b_t⟩`` (a 0-dim tensor)."""
    if len(a) == 1:
        return torch.dot(a[0].reshape(-1), b[0].reshape(-1))
    ref = a[0]
    return torch.stack([torch.dot(x.reshape(-1), y.reshape(-1)).to(ref.device) for x, y in zip(a,
        b)]).sum()


def _safe_div(t: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
    """``t / den`` with ``0 / 0 = 0`` (``den`` ≥ 0 is a norm: it is 0 only when ``t`` is 0)."""
    return t / den.clamp_min(torch.finfo(den.dtype).tiny)


def _inv(den: torch.Tensor) -> torch.Tensor:
    """``1 / den`` for a norm ``den`` ≥ 0, finite when ``den = 0`` (then the numerator is 0)."""
    return den.clamp_min(torch.finfo(den.dtype).tiny).reciprocal()


def num_params(tensors: Tensors) -> int:
    """``p``, the total number of entries."""
    return sum(t.numel() for t in tensors)


# ----------------------------------------------------------------------------- SAM family
def sam_eps(grads: Tensors, rho: float) -> list[torch.Tensor]:
    """SAM's perturbation ``ε = ρ g / ‖g‖`` with one global norm (Foret et al. 2021;
    fisher-sam.md eq. 2). A zero gradient gives ``ε = 0``."""
    scale = rho * _inv(global_norm(grads))
    return [g * scale for g in grads]


def asam_eps(
    params: Tensors, grads: Tensors, rho: float, eta_a: float, adaptive: Sequence[bool]
) -> list[torch.Tensor]:
    """ASAM's perturbation ``ε = ρ T² g / ‖T g‖``, ``T = |θ| + η_a`` elementwise where
    ``adaptive`` is true and ``T = 1`` elsewhere (Kwon et al. 2021; fisher-sam.md eq. 5 prints it
    without the offset η_a, which keeps zero weights perturbable)."""
    ts = [_scale(p, a, eta_a) for p, a in zip(params, adaptive)]
    tg = [g if t is None else t * g for g, t in zip(grads, ts)]
    scale = rho * _inv(global_norm(tg))
    return [x * scale if t is None else t * x * scale for x, t in zip(tg, ts)]


def fisher_sam_eps(grads: Tensors, gamma: float, eta_f: float) -> list[torch.Tensor]:
    """Fisher SAM's perturbation ``ε = γ F⁻¹ g / sqrt(gᵀ F⁻¹ g)`` with the gradient-magnitude
    diagonal Fisher ``f = g²`` (fisher-sam.md eq. 12) and ``F⁻¹ = 1 / (1 + η_f f)`` elementwise
    (fisher-sam.md §5; eq. 10, Alg. 1 step 4). ``η_f = 0`` gives SAM with ``ρ = γ``."""
    fg = [g / (1.0 + eta_f * g * g) for g in grads]
    scale = gamma * _inv(global_dot(grads, fg).clamp_min(0.0).sqrt())
    return [x * scale for x in fg]


# ----------------------------------------------------------------------------- variational
def rsam_eps(like: Tensors, rho: float, generator: torch.Generator) -> list[torch.Tensor]:
    """RandomSAM's perturbation ``ε ∼ N(0, σ² I)``, ``σ = ρ / sqrt(p)`` so that ``E‖ε‖² = ρ²``
    (sam-as-VI §3, MFVI with the fixed ``Σ = ρ²/p I``); ``p`` counts every entry of ``like``."""
    sigma = rho / math.sqrt(num_params(like))
    return [torch.empty_like(t).normal_(0.0, sigma, generator=generator) for t in like]


def mfvi_eps(var: Tensors, generator: torch.Generator) -> list[torch.Tensor]:
    """MFVI's reparameterised sample ``ε = Σ^½ ξ``, ``ξ ∼ N(0, I)`` (sam-as-VI eq. 6-7)."""
    return [v.sqrt() * _randn(v, generator) for v in var]


def vsam_eps(grads: Tensors, var: Tensors, p: int | None = None) -> list[torch.Tensor]:
    """VariationalSAM's perturbation ``ε* = sqrt(p) Σ g / sqrt(gᵀ Σ g)``, the maximiser of
    ``gᵀε`` subject to ``εᵀ Σ⁻¹ ε ≤ p`` (sam-as-VI App. C eq. 50). With ``Σ = ρ²/p I`` it is
    SAM's ``ρ g / ‖g‖``. ``p`` defaults to the number of entries of ``grads``."""
    p = num_params(grads) if p is None else p
    sg = [v * g for v, g in zip(var, grads)]
    scale = math.sqrt(p) * _inv(global_dot(grads, sg).clamp_min(0.0).sqrt())
    return [x * scale for x in sg]


def gaussian_kl(mu: Tensors, var: Tensors, prior_std: float) -> torch.Tensor:
    """``KL(N(μ, diag Σ) ‖ N(0, σ₀² I)) = ½ Σ_k [Σ_k/σ₀² + μ_k²/σ₀² − 1 − log Σ_k + log σ₀²]``
    (sam-as-VI App. C eq. 53)."""
    s2 = prior_std**2
    return 0.5 * torch.stack(
        [(v / s2 + m * m / s2 - 1.0 - v.log() + math.log(s2)).sum() for m, v in zip(mu, var)]
    ).sum()


def gaussian_kl_grads(
    mu: Tensors, var: Tensors, prior_std: float
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Gradients of :func:`gaussian_kl`: ``∂/∂μ = μ/σ₀²``, ``∂/∂Σ_k = ½ (1/σ₀² − 1/Σ_k)``.

    The MFVI / VSAM objective carries ``KL/N`` (sam-as-VI eq. 5), so the μ-gradient gets
    ``μ/(N σ₀²)``, the prior's L2 term."""
    s2 = prior_std**2
    return [m / s2 for m in mu], [0.5 * (1.0 / s2 - 1.0 / v) for v in var]


def mfvi_var_grad(
    grads: Tensors, eps: Tensors, var: Tensors, prior_std: float, num_data: int
) -> list[torch.Tensor]:
    """``∂/∂Σ_k`` of the single-sample MFVI objective ``L_B(μ + Σ^½ ξ) + KL/N`` (sam-as-VI eq. 5):
    ``g̃_k ξ_k / (2 sqrt Σ_k) + (1/σ₀² − 1/Σ_k) / (2N)`` with ``g̃ = ∇L_B(μ + ε)``, ``ε = Σ^½ ξ``
    (so ``ξ_k / sqrt Σ_k = ε_k / Σ_k``)."""
    s2 = prior_std**2
    return [g * e / (2.0 * v) + 0.5 * (1.0 / s2 - 1.0 / v) / num_data
            for g, e, v in zip(grads, eps, var)]


def vsam_var_grad(
    grads: Tensors, var: Tensors, prior_std: float, num_data: int, p: int | None = None
) -> list[torch.Tensor]:
    """``∂/∂Σ_kk`` of the VSAM objective ``L(μ) + sqrt(p) sqrt(gᵀΣg) + Tr Σ/(2Nσ₀²)
    + log det Σ⁻¹/(2N) + ‖μ‖²/(2Nσ₀²)`` (sam-as-VI App. C eq. 56):
    ``sqrt(p) g_k² / (2 sqrt(gᵀΣg)) + 1/(2Nσ₀²) − 1/(2NΣ_kk)``. For fixed g its zero is
    ``1/Σ_k = 1/σ₀² + N sqrt(p) g_k² / sqrt(gᵀΣg)``. ``p`` defaults to the entries of ``grads``."""
    p = num_params(grads) if p is None else p
    quad = global_dot(grads, [v * g for v, g in zip(var, grads)]).clamp_min(0.0).sqrt()
    s2 = prior_std**2
    return [math.sqrt(p) * _safe_div(g * g, 2.0 * quad) + 0.5 * (1.0 / s2 - 1.0 / v) / num_data
            for g, v in zip(grads, var)]


def mfvi_log_var_grad(
    grads: Tensors, eps: Tensors, var: Tensors, prior_std: float, num_data: int
) -> list[torch.Tensor]:
    """``N Σ ⊙ ∂J/∂Σ = (N/2) g̃ ⊙ ε + Σ/(2σ₀²) − ½``: the gradient of ``N·J`` in ``s = log Σ``
    (J the MFVI objective of :func:`mfvi_var_grad`). The optimizer steps ``s ← s − lr · this``:
    log Σ keeps Σ positive and the factor N makes the step O(lr) whatever the dataset size; the
    stationary points are those of J. This parameterisation is ours: the seed descends on Σ
    directly and gives no rule for keeping it positive (docs/algorithms.md §3)."""
    s2 = prior_std**2
    return [(v * (0.5 / s2)).sub_(0.5).addcmul_(g, e, value=0.5 * num_data)
            for g, e, v in zip(grads, eps, var)]


def vsam_log_var_grad(
    grads: Tensors, var: Tensors, prior_std: float, num_data: int, p: int | None = None
) -> list[torch.Tensor]:
    """``N Σ ⊙ ∂J/∂Σ = N sqrt(p) Σ g² / (2 sqrt(gᵀΣg)) + Σ/(2σ₀²) − ½``: the gradient of ``N·J``
    in ``s = log Σ`` for the VSAM objective of :func:`vsam_var_grad` (same parameterisation as
    :func:`mfvi_log_var_grad`)."""
    p = num_params(grads) if p is None else p
    quad = global_dot(grads, [v * g for v, g in zip(var, grads)]).clamp_min(0.0).sqrt()
    c = (0.5 * num_data * math.sqrt(p)) * _inv(quad)
    s2 = prior_std**2
    return [(v * (0.5 / s2)).sub_(0.5).addcmul_(v * g, g * c) for g, v in zip(grads, var)]


# ----------------------------------------------------------------------------- G-TRACER
def tracer_penalty(grads: Tensors, fbar: Tensors, rho: float, delta: float) -> torch.Tensor:
    """The TRACER penalty ``ρ ⟨g_B², (f̄ + δ)⁻¹⟩`` (g-tracer Alg. 1, eq. 58)."""
    return rho * torch.stack([(g * g / (f + delta)).sum() for g, f in zip(grads, fbar)]).sum()


def tracer_direction(grads: Tensors, fbar: Tensors, delta: float) -> list[torch.Tensor]:
    """``v = g_B ⊙ (f̄ + δ)⁻¹``: with f̄ held fixed, the penalty's gradient is ``2ρ H_B v``
    (one Hessian-vector product of the same minibatch)."""
    return [g / (f + delta) for g, f in zip(grads, fbar)]


def tracer_ema(fbar: Tensors, grads: Tensors, beta: float) -> list[torch.Tensor]:
    """``f̄ ← (1 − β) f̄ + β g_B²`` with the minibatch-mean gradient squared (g-tracer eq. 57-58;
    applied AFTER the step that used the old f̄, Alg. 1)."""
    return [(1.0 - beta) * f + beta * g * g for f, g in zip(fbar, grads)]


def tracer_stable(curvature: float, lr: float, rho: float, delta: float) -> bool:
    """Whether (SGD-)TRACER converges on a quadratic of curvature λ near its minimum (f̄ → 0):
    ``lr (λ + 2ρλ²/δ) < 2`` (docs/algorithms.md §3)."""
    return lr * (curvature + 2.0 * rho * curvature**2 / delta) < 2.0


# ----------------------------------------------------------------------------- covariance noise
def covariance_noise_scale(large_batch: int, small_batch: int) -> float:
    """``sqrt((M_L − M_S) / (M_L M_S))``: the factor that turns ``C = sqrt(F)`` into the extra
    noise of batch ``M_S`` over batch ``M_L`` (sgd-covariance-noise eq. 5, Alg. 1).
    0 when ``M_L ≤ M_S`` (the batch used is already as noisy as the one to emulate)."""
    if large_batch <= 0 or small_batch <= 0:
        raise ValueError(f"batch sizes must be positive, got {large_batch}, {small_batch}")
    if large_batch <= small_batch:
        return 0.0
    return math.sqrt((large_batch - small_batch) / (large_batch * small_batch))


def diag_fisher_noise(
    per_sample: Tensors, scale: float, generator: torch.Generator
) -> list[torch.Tensor]:
    """``scale · sqrt(diag F_emp) ⊙ ξ``, ``ξ ∼ N(0, I)``, with ``diag F_emp = (1/M) Σ_i g_i²``
    (the mean of per-example SQUARED gradients; sgd-covariance-noise Alg. 1).
    ``per_sample``: ``[M, *shape]`` per parameter."""
    return diag_noise_from_squares([(g * g).sum(0) for g in per_sample], per_sample[0].shape[0],
                                   scale, generator)


def diag_noise_from_squares(
    squares: Tensors, m: int, scale: float, generator: torch.Generator
) -> list[torch.Tensor]:
    """:func:`diag_fisher_noise` from the summed squares ``Σ_i g_i²`` of ``m`` samples (sums that
    may come from several processes): ``scale · sqrt(Σ_i g_i² / m) ⊙ ξ``, one ``ξ`` per
    parameter, drawn in parameter order."""
    return diag_noise([f / m for f in squares], scale, [_randn(f, generator) for f in squares])


def diag_noise(mean_squares: Tensors, scale: float, xi: Tensors) -> list[torch.Tensor]:
    """``scale · sqrt(diag F) ⊙ ξ`` for ``diag F`` = ``mean_squares`` and given standard normal
    draws ``ξ`` (sgd-covariance-noise Alg. 1), computed in place in ``ξ`` (and in
    ``mean_squares``): the rule of ``lb-diag-noise``, shared by the optimizer (one ``ξ`` per
    parameter) and the escape engine (``[T, ...]`` leaves, one draw per trajectory)."""
    return [z.mul_(f.sqrt_().mul_(scale)) for f, z in zip(mean_squares, xi)]


def full_fisher_noise(
    per_sample: Tensors, scale: float, generator: torch.Generator
) -> list[torch.Tensor]:
    """``scale · (1/sqrt M) Σ_i σ_i g_i`` with Rademacher ``σ_i`` shared by all parameters: a
    vector of covariance ``scale² F_emp``, ``F_emp = (1/M) Σ_i g_i g_iᵀ`` (sgd-covariance-noise
    App. F, "Sampling Empirical Fisher Random Vector")."""
    ref = per_sample[0]
    m = ref.shape[0]
    sigma = rademacher_signs(m, generator, ref)
    return [scale / math.sqrt(m) * torch.tensordot(sigma.to(g.dtype), g,
                                                   dims=1) for g in per_sample]


def rademacher_signs(m: int, generator: torch.Generator, like: torch.Tensor) -> torch.Tensor:
    """``m`` Rademacher signs ``σ_i ∈ {±1}`` in ``like``'s dtype and device."""
    return torch.randint(0, 2, (m,), generator=generator, device=like.device).to(like.dtype) * 2 - 1


def _scale(p: torch.Tensor, adaptive, eta_a: float) -> torch.Tensor | None:
    if isinstance(adaptive, torch.Tensor):
        return torch.where(
            adaptive, p.abs() + eta_a, torch.ones((), dtype=p.dtype, device=p.device)
        )
    return p.abs() + eta_a if adaptive else None


def _randn(like: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    return torch.randn(like.shape, generator=generator, dtype=like.dtype, device=like.device)
