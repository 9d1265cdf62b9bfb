"""SAM as variational inference (sam-as-variational-inference.md): ``rsam``, ``mfvi``, ``vsam``.

The model's parameters are the variational mean μ; MFVI and VSAM also learn a diagonal covariance
Σ, kept in the optimizer state (``state_dict`` saves it) as ``log Σ`` so that it stays positive
(our choice; the seed descends on Σ directly and says nothing about positivity). The Σ step is
``log Σ ← log Σ − sigma_lr · N Σ ⊙ ∂J/∂Σ`` on the Σ-objective J
(:func:`landscape.optim.rules.mfvi_log_var_grad`, :func:`~landscape.optim.rules.vsam_log_var_grad`):
the factor N makes ``sigma_lr`` a step in ``log Σ`` of order one whatever the dataset size, and
leaves the stationary points unchanged. Σ of a parameter without a gradient in a step is left as is.

Initial ``Σ = ρ²/p I`` with ``ρ = 0.05`` (so VSAM starts as SAM and MFVI as RandomSAM), Σ learning
rate 0.01 (sam-as-VI §6), prior ``N(0, σ₀² I)`` with ``prior_std = σ₀`` (default 1.0, ours: the
seed gives no σ₀) and ``num_data = N`` the training-set size (required). The prior adds
``μ/(N σ₀²)`` to the μ-gradient, an L2 term separate from the base optimizer's weight decay (set
that to 0 if the prior is your only regulariser). p counts every trained parameter entry.

The arithmetic runs on one flat vector ``[p]`` (a few kernels per step whatever the number of
parameter tensors); ``log Σ`` is stored flat, in parameter-group order.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from ..errors import CheckpointError, ConfigError
from . import rules
from .wrapper import SharpnessAware, check_positive, flat_cat, scatter, split_like


class RandomSAM(SharpnessAware):
    """RandomSAM (sam-as-VI Alg. 2): the gradient at ``θ + ε``, ``ε ∼ N(0, σ² I)``,
    ``σ = ρ/sqrt(p)`` (``E‖ε‖² = ρ²``), one draw per step shared by the batch, p = all trained
    parameters. One forward/backward pass (the paper trains one-pass methods for twice the
    epochs). Default ``rho = 0.05``."""

    name = "rsam"
    perturb_first = True
    uses_rng = True
    passes_per_step = 1

    def __init__(self, params=None, base="sgd", *, rho: float = 0.05, seed=None, model=None,
                 **base_kwargs) -> None:
        super().__init__(params, base, model=model, seed=seed, **base_kwargs)
        self.rho = check_positive("rho", rho)

    def perturbation(self, params, grads):
        p = sum(q.numel() for q in params)
        like = torch.empty(p, dtype=params[0].dtype, device=params[0].device)
        return split_like(rules.rsam_eps([like], self.rho, self._generator)[0], params)


class _Variational(SharpnessAware):
    """Shared Σ bookkeeping of MFVI and VSAM (flat ``log Σ`` over all trained parameters)."""

    def __init__(self, params=None, base="sgd", *, num_data: int | None = None, rho: float = 0.05,
                 prior_std: float = 1.0, sigma_lr: float = 0.01, seed=None, model=None,
                 **base_kwargs) -> None:
        super().__init__(params, base, model=model, seed=seed, **base_kwargs)
        if num_data is None:
            raise ConfigError(f"{self.name} needs num_data, the number of training samples N "
                              "(the KL term is divided by it)", "pass num_data=len(train_set)")
        if isinstance(num_data, bool) or not isinstance(num_data, int) or num_data < 1:
            raise ConfigError(f"num_data must be a positive integer, got {num_data!r}",
                              "pass num_data=len(train_set)")
        self.num_data = num_data
        self.rho = check_positive("rho", rho)
        self.prior_std = check_positive("prior_std", prior_std)
        self.sigma_lr = check_positive("sigma_lr", sigma_lr, allow_zero=True)
        self._log_var: torch.Tensor | None = None
        self._mask_key: tuple | None = None
        self._mask: torch.Tensor | None = None

    def num_params(self) -> int:
        """p, the number of trained parameter entries."""
        return sum(q.numel() for q in self._params())

    def log_var(self) -> torch.Tensor:
        """The flat ``log Σ`` ``[p]`` (created at ``log(ρ²/p)`` on first use)."""
        if self._log_var is None:
            ps = self._params()
            p = sum(q.numel() for q in ps)
            self._log_var = torch.full((p,), math.log(self.rho**2 / p), dtype=ps[0].dtype,
                                       device=ps[0].device)
        return self._log_var

    def variance(self) -> list[torch.Tensor]:
        """The current diagonal Σ, one tensor per trained parameter."""
        return split_like(self.log_var().exp(), self._params())

    def _present_mask(self, params, grads) -> torch.Tensor | None:
        """Boolean ``[p]`` of the entries whose parameter has a gradient (None: all have)."""
        key = tuple(g is not None for g in grads)
        if all(key):
            return None
        if self._mask_key != key:
            self._mask = flat_cat(
                [torch.full_like(p, k, dtype=torch.bool) for p, k in zip(params, key)]
            )
            self._mask_key = key
        return self._mask

    def _finish(self, params, grads, log_grad: torch.Tensor):
        """Σ step in log space (entries with a gradient only), and the μ-gradient plus the prior's
        ``μ/(N σ₀²)``."""
        mask = self._present_mask(params, grads)
        new = torch.add(self._log_var, log_grad, alpha=-self.sigma_lr)
        self._log_var = new if mask is None else torch.where(mask, new, self._log_var)
        idx = [i for i, g in enumerate(grads) if g is not None]
        if not idx:
            return grads
        mu_grad = torch._foreach_add([grads[i] for i in idx], [params[i] for i in idx],
                                     alpha=1.0 / (self.prior_std**2 * self.num_data))
        return scatter(len(params), idx, mu_grad)

    @staticmethod
    def _flat_grads(params, grads) -> torch.Tensor:
        return flat_cat(
            [g if g is not None else torch.zeros_like(p) for p, g in zip(params, grads)]
        )

    def _extra_state(self) -> dict[str, Any]:
        return {"log_var": None if self._log_var is None else self._log_var.clone()}

    def _load_extra_state(self, extra: dict[str, Any]) -> None:
        lv = extra.get("log_var")
        if lv is not None and lv.numel() != self.num_params():
            raise CheckpointError(f"the saved Σ has {lv.numel()} entries but {self.num_params()} "
                                  "parameters are optimized",
                                  "build the optimizer over the same parameters")
        ps = self._params()
        self._log_var = None if lv is None else lv.to(ps[0].device)


class MFVI(_Variational):
    """Mean-field variational inference (sam-as-VI eq. 5-7, Alg. 1): one reparameterised sample
    ``ε = Σ^½ ξ``; μ-gradient ``∇L_B(μ + ε) + μ/(N σ₀²)``; Σ-gradient
    ``g̃ ξ/(2 sqrt Σ) + (1/σ₀² − 1/Σ)/(2N)`` (:func:`rules.mfvi_var_grad`), applied in log Σ.
    One forward/backward pass."""

    name = "mfvi"
    perturb_first = True
    uses_rng = True
    passes_per_step = 1

    def perturbation(self, params, grads):
        # ε = Σ^½ ξ with Σ^½ = exp(½ log Σ) (rules.mfvi_eps, without a square root)
        self._std = self.log_var().mul(0.5).exp_()
        self._eps = torch.empty_like(self._std).normal_(generator=self._generator).mul_(self._std)
        return split_like(self._eps, params)

    def modify_gradients(self, params, grads):
        g = self._flat_grads(params, grads)
        var = self._std * self._std
        log_grad = rules.mfvi_log_var_grad([g], [self._eps], [var], self.prior_std,
                                           self.num_data)[0]
        return self._finish(params, grads, log_grad)


class VariationalSAM(_Variational):
    """VariationalSAM (sam-as-VI Alg. 3, App. C eq. 56): ``ε* = sqrt(p) Σ g / sqrt(gᵀΣg)`` from
    the first pass's ``g = ∇L_B(μ)``; μ-gradient ``∇L_B(μ + ε*) + μ/(N σ₀²)``; then Σ descends on
    ``sqrt(p) sqrt(gᵀΣg) + Tr Σ/(2Nσ₀²) + log det Σ⁻¹/(2N)`` (:func:`rules.vsam_var_grad`) in log Σ.
    The Σ step reuses the first pass's g (no third pass: the alternation of Alg. 3 with the
    batch's gradient at the step's start). Two forward/backward passes."""

    name = "vsam"
    two_pass = True
    passes_per_step = 2

    def perturbation(self, params, grads):
        self._var = self.log_var().exp()
        self._g0 = self._flat_grads(params, grads)
        eps = rules.vsam_eps([self._g0], [self._var], self._g0.numel())[0]
        return [e if g is not None else None for e, g in zip(split_like(eps, params), grads)]

    def modify_gradients(self, params, grads):
        log_grad = rules.vsam_log_var_grad([self._g0], [self._var], self.prior_std, self.num_data,
                                           self._g0.numel())[0]
        return self._finish(params, grads, log_grad)
