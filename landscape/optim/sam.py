"""The SAM family: ``sam``, ``asam``, ``fsam`` (two forward/backward passes per step).

Each computes the first pass's gradient ``g_B`` at θ, perturbs ``θ + ε`` by its rule, and hands the
gradient at the perturbed point ``∇L_B(θ + ε)`` to the base optimizer, which steps from the
restored θ (fisher-sam.md eq. 3, Alg. 1 steps 5-6; footnote 3: a plain, not a natural, gradient
step). No m-sharpness: one ε for the whole batch, one global norm.
"""

from __future__ import annotations

import torch

from . import rules
from .wrapper import SharpnessAware, check_positive, flat_cat, present, scatter, split_like


class SAM(SharpnessAware):
    """Sharpness-aware minimisation (Foret et al. 2021): ``ε = ρ g_B / ‖g_B‖``, step with
    ``∇L_B(θ + ε)``. Default ``rho = 0.05`` (0.1 for CIFAR-100; docs/algorithms.md §3)."""

    name = "sam"
    two_pass = True
    passes_per_step = 2

    def __init__(self, params=None, base="sgd", *, rho: float = 0.05, model=None,
                 **base_kwargs) -> None:
        super().__init__(params, base, model=model, **base_kwargs)
        self.rho = check_positive("rho", rho)

    def perturbation(self, params, grads):
        idx, _, gs = present(params, grads)
        eps = rules.sam_eps([flat_cat(gs)], self.rho)[0]  # flat: one global norm, few kernels
        return scatter(len(params), idx, split_like(eps, gs))


class ASAM(SharpnessAware):
    """Adaptive SAM (Kwon et al. 2021): ``ε = ρ T² g_B / ‖T g_B‖``, ``T = |θ| + η_a``
    (fisher-sam.md eq. 5 plus the offset η_a, which keeps zero weights perturbable).

    As in the authors' code only weight tensors are scaled: ``T = 1`` for parameters with
    ``ndim ≤ 1`` (biases, normalisation scales) unless ``adaptive_biases=True`` (the authors
    select by the name "weight", which also scales BatchNorm weights; we select by shape).
    Defaults ``rho = 0.5``, ``eta_a = 0.01`` (CIFAR-10; 1.0 / 0.1 for CIFAR-100).
    """

    name = "asam"
    two_pass = True
    passes_per_step = 2

    def __init__(self, params=None, base="sgd", *, rho: float = 0.5, eta_a: float = 0.01,
                 adaptive_biases: bool = False, model=None, **base_kwargs) -> None:
        super().__init__(params, base, model=model, **base_kwargs)
        self.rho = check_positive("rho", rho)
        self.eta_a = check_positive("eta_a", eta_a, allow_zero=True)
        self.adaptive_biases = bool(adaptive_biases)
        self._mask_key: tuple | None = None
        self._mask: torch.Tensor | None = None

    def perturbation(self, params, grads):
        idx, ps, gs = present(params, grads)
        key = tuple(idx)
        if self._mask_key != key:  # which entries are scaled (cached: the same every step)
            self._mask = flat_cat([torch.full_like(p, self.adaptive_biases or p.dim() > 1,
                                                   dtype=torch.bool)
                                   for p in ps])
            self._mask_key = key
        eps = rules.asam_eps([flat_cat(ps)], [flat_cat(gs)], self.rho, self.eta_a, [self._mask])[0]
        return scatter(len(params), idx, split_like(eps, gs))


class FisherSAM(SharpnessAware):
    """Fisher SAM (Kim et al. 2022; fisher-sam.md Alg. 1): ``f = g_B²``,
    ``F⁻¹ = 1/(1 + η_f f)``, ``ε = γ F⁻¹ g_B / sqrt(g_Bᵀ F⁻¹ g_B)`` (eq. 10, 12, §5), step with
    ``∇L_B(θ + ε)`` (footnote 3). Defaults ``gamma = 0.1``, ``eta_f = 1.0``; ``eta_f = 0`` is
    SAM with ``rho = gamma``."""

    name = "fsam"
    two_pass = True
    passes_per_step = 2

    def __init__(self, params=None, base="sgd", *, gamma: float = 0.1, eta_f: float = 1.0,
                 model=None, **base_kwargs) -> None:
        super().__init__(params, base, model=model, **base_kwargs)
        self.gamma = check_positive("gamma", gamma)
        self.eta_f = check_positive("eta_f", eta_f, allow_zero=True)

    def perturbation(self, params, grads):
        idx, _, gs = present(params, grads)
        eps = rules.fisher_sam_eps([flat_cat(gs)], self.gamma, self.eta_f)[0]
        return scatter(len(params), idx, split_like(eps, gs))
