"""G-TRACER (g-tracer.md Alg. 1): ``sgd-tracer`` and ``adam-tracer``.

Minimise ``L_B(w) + ρ ⟨(∇L_B(w))², (f̄ + δ)⁻¹⟩`` (eq. 58) with f̄ held fixed during the step. The
penalty's gradient is ``2ρ H_B (g_B ⊙ (f̄ + δ)⁻¹)``, ``H_B`` the SAME minibatch's Hessian: one exact
Hessian-vector product per step (double backward through the gradient's graph, no finite
differences). Order (Alg. 1): the step uses ``f̄_t``, then ``f̄_{t+1} = (1 − β) f̄_t + β g_B²``
(eq. 57: the minibatch-mean gradient squared). ``f̄_0 = g_0²`` (``f̄_0 = 0`` would give the first
steps the weight ρ/δ and can blow up). On a quadratic ``diag(λ)`` near its minimum it converges iff
``lr (λ + 2ρλ²/δ) < 2`` (:func:`landscape.optim.rules.tracer_stable`).

Closure convention: the closure must RETURN THE LOSS WITHOUT CALLING ``backward``; the optimizer
differentiates it with ``create_graph=True`` and reuses the graph for the Hessian-vector product::

    opt = build_optimizer("sgd-tracer", model.parameters(), lr=0.1)
    for x, y in loader:
        opt.step(lambda: F.cross_entropy(model(x), y))

A closure that calls ``backward()`` raises a ConfigError saying so. Cost: one forward, one backward
that builds the gradient's graph, one double backward (``passes_per_step = 2``).
"""

from __future__ import annotations

import torch

from . import rules
from .wrapper import SharpnessAware, check_positive, present, scatter
from ..errors import ConfigError


class Tracer(SharpnessAware):
    """G-TRACER around a base optimizer.

    Args:
        rho: penalty weight ρ. Default 0.05 (OURS: the paper's values were in a supplement we do
            not have).
        beta: smoothing weight β of the new squared gradient in f̄. Default 0.01 (ours).
        delta: damping δ. Default 1.0 (ours; the paper chooses δ "sufficiently large that the
            preconditioner is the identity", so the penalty acts like ``(ρ/δ) ‖g_B‖²`` where
            ``f̄ ≪ δ``, and the neighbourhood it converges to scales with ρ/δ).
        fbar: ``"own"`` (default) keeps TRACER's own f̄; ``"adam"`` (Adam bases only) uses Adam's
            bias-corrected ``exp_avg_sq`` (which tracks the total, penalised gradient) instead.
    """

    name = "tracer"
    needs_graph = True
    passes_per_step = 2
    default_base = "sgd"

    def __init__(self, params=None, base=None, *, rho: float = 0.05, beta: float = 0.01,
                 delta: float = 1.0, fbar: str = "own", model=None, **base_kwargs) -> None:
        if base is None:
            base = self.default_base
        if type(self) is not Tracer and isinstance(base, str) and base.lower() != self.default_base:
            raise ConfigError(f"{self.name} runs on the {self.default_base} base, not {base!r}",
                              f"use {base.lower()}-tracer" if base.lower() in ("sgd", "adam")
                              else "use sgd-tracer or adam-tracer")
        super().__init__(params, base, model=model, **base_kwargs)
        self.rho = check_positive("rho", rho, allow_zero=True)
        self.beta = check_positive("beta", beta)
        if self.beta > 1:
            raise ConfigError(f"beta must be in (0, 1], got {beta}", "pass e.g. beta=0.01")
        self.delta = check_positive("delta", delta)
        if fbar not in ("own", "adam"):
            raise ConfigError(f"fbar must be 'own' or 'adam', got {fbar!r}", "pass fbar='own'")
        if fbar == "adam" and not isinstance(self.base, torch.optim.Adam):
            raise ConfigError("fbar='adam' shares Adam's second moment, but the base is not Adam",
                              "use adam-tracer, or fbar='own'")
        self.fbar_source = fbar
        self.last_penalty: torch.Tensor | None = None

    def _fbar(self, p: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        st = self.state[p]
        if self.fbar_source == "adam":
            ast = self.base.state.get(p, {})
            if "exp_avg_sq" in ast:
                beta2 = self.base.param_groups[0]["betas"][1]
                for group in self.base.param_groups:
                    if any(q is p for q in group["params"]):
                        beta2 = group["betas"][1]
                step = float(ast["step"])
                return ast["exp_avg_sq"] / (1.0 - beta2**step)
        if "fbar" not in st:
            st["fbar"] = g * g  # f̄_0 = g_0²
        return st["fbar"]

    def modify_gradients(self, params, grads):
        idx, ps, gs = present(params, grads)
        if not idx:
            return grads
        g0 = [g.detach() for g in gs]
        fbar = [self._fbar(p, g) for p, g in zip(ps, g0)]
        v = rules.tracer_direction(g0, fbar, self.delta)
        with torch.enable_grad():
            hv = torch.autograd.grad(gs, ps, grad_outputs=v, allow_unused=True)
        out = [g + 2.0 * self.rho * h if h is not None else g for g, h in zip(g0, hv)]
        self.last_penalty = rules.tracer_penalty(g0, fbar, self.rho, self.delta)
        if self.fbar_source == "own":
            for p, f in zip(ps, rules.tracer_ema(fbar, g0, self.beta)):
                self.state[p]["fbar"] = f
        return scatter(len(params), idx, out)


class SGDTracer(Tracer):
    """SGD-TRACER (g-tracer.md Alg. 1) on torch SGD (momentum and weight decay as given)."""

    name = "sgd-tracer"
    default_base = "sgd"


class AdamTracer(Tracer):
    """Adam-TRACER (g-tracer.md §2.2) on torch Adam; keeps its own f̄ by default (``fbar="own"``),
    ``fbar="adam"`` shares Adam's bias-corrected second moment."""

    name = "adam-tracer"
    default_base = "adam"
