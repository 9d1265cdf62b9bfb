"""SAM as variational inference (sam-as-variational-inference.md): ``rsam``, ``mfvi``, ``vsam``.

The model's parameters are the variational mean μ; MFVI and VSAM also learn a diagonal covariance
Σ, kept in the optimizer state (``state_dict`` saves it) as ``log Σ`` so that it stays positive
(our choice; the seed descends on Σ directly and says nothing about positivity). The Σ step is
``log Σ ← log Σ − sigma_lr · N · Σ ⊙ ∂J/∂Σ`` on the Σ-objective J (see
:func:`landscape.optim.rules.log_var_step`): the factor N makes ``sigma_lr`` a step in ``log Σ``
of order one whatever the dataset size, and leaves the stationary points unchanged.

Initial ``Σ = ρ²/p I`` with ``ρ = 0.05`` (so VSAM starts as SAM and MFVI as RandomSAM), Σ learning
rate 0.01 (sam-as-VI §6), prior ``N(0, σ₀² I)`` with ``prior_std = σ₀`` (default 1.0, ours: the
seed gives no σ₀) and ``num_data = N`` the training-set size (required). The prior adds
``μ/(N σ₀²)`` to the μ-gradient, an L2 term separate from the base optimizer's weight decay (set
that to 0 if the prior is your only regulariser).
"""

from __future__ import annotations

import math

import torch

from . import rules
from .wrapper import SharpnessAware, check_positive, present, scatter
from ..errors import ConfigError


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
        return rules.rsam_eps(params, self.rho, self._generator)


class _Variational(SharpnessAware):
    """Shared Σ bookkeeping of MFVI and VSAM."""

    def __init__(self, params=None, base="sgd", *, num_data: int | None = None, rho: float = 0.05,
                 prior_std: float = 1.0, sigma_lr: float = 0.01, seed=None, model=None,
                 **base_kwargs) -> None:
        super().__init__(params, base, model=model, seed=seed, **base_kwargs)
        if num_data is None:
            raise ConfigError(f"{self.name} needs num_data, the number of training samples N "
                              "(the KL term is divided by it)", "pass num_data=len(train_set)")
        if not (isinstance(num_data, int) and num_data > 0):
            raise ConfigError(f"num_data must be a positive integer, got {num_data!r}",
                              "pass num_data=len(train_set)")
        self.num_data = num_data
        self.rho = check_positive("rho", rho)
        self.prior_std = check_positive("prior_std", prior_std)
        self.sigma_lr = check_positive("sigma_lr", sigma_lr, allow_zero=True)

    def num_params(self) -> int:
        """p, the number of trained parameter entries."""
        return rules.num_params(self._params())

    def _log_var(self, params) -> list[torch.Tensor]:
        init = math.log(self.rho**2 / self.num_params())
        out = []
        for q in params:
            st = self.state[q]
            if "log_var" not in st:
                st["log_var"] = torch.full_like(q, init)
            out.append(st["log_var"])
        return out

    def variance(self) -> list[torch.Tensor]:
        """The current diagonal Σ of each trained parameter."""
        ps = self._params()
        return [s.exp() for s in self._log_var(ps)]

    def _prior_and_var_step(self, params, grads, var_grad_of):
        idx, ps, gs = present(params, grads)
        if not idx:
            return grads
        logv = [self.state[p]["log_var"] for p in ps]
        var = [s.exp() for s in logv]
        dvar = var_grad_of(idx, gs, var)
        for p, s in zip(ps, rules.log_var_step(logv, dvar, self.sigma_lr, self.num_data)):
            self.state[p]["log_var"] = s
        s2n = self.prior_std**2 * self.num_data
        return scatter(len(params), idx, [g + p / s2n for g, p in zip(gs, ps)])


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
        var = [s.exp() for s in self._log_var(params)]
        self._eps = rules.mfvi_eps(var, self._generator)
        return self._eps

    def modify_gradients(self, params, grads):
        def dvar(idx, gs, var):
            eps = [self._eps[i] for i in idx]
            return rules.mfvi_var_grad(gs, eps, var, self.prior_std, self.num_data)

        return self._prior_and_var_step(params, grads, dvar)


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
        idx, ps, gs = present(params, grads)
        var = [s.exp() for s in self._log_var(ps)]
        self._g0 = {i: g.detach() for i, g in zip(idx, gs)}
        return scatter(len(params), idx, rules.vsam_eps(list(self._g0.values()), var, self.num_params()))

    def modify_gradients(self, params, grads):
        def dvar(idx, gs, var):
            g0 = [self._g0[i] if i in self._g0 else torch.zeros_like(g) for i, g in zip(idx, gs)]
            return rules.vsam_var_grad(g0, var, self.prior_std, self.num_data, self.num_params())

        return self._prior_and_var_step(params, grads, dvar)
