"""G-TRACER (g-tracer.md Alg. 1): ``sgd-tracer`` and ``adam-tracer``.

Minimise ``L_B(w) + ρ ⟨(∇L_B(w))², (f̄ + δ)⁻¹⟩`` (eq. 58) with f̄ held fixed during the step. The
penalty's gradient is ``2ρ H_B (g_B ⊙ (f̄ + δ)⁻¹)``, ``H_B`` the SAME minibatch's Hessian: one exact
Hessian-vector product per step (double backward through the gradient's graph, no finite
differences). Order (Alg. 1): the step uses ``f̄_t``, then ``f̄_{t+1} = (1 − β) f̄_t + β g_B²``
(eq. 57: the minibatch-mean gradient squared). ``f̄_0 = g_0²`` (``f̄_0 = 0`` would give the first
steps the weight ρ/δ and can blow up); an entry whose parameter first gets a gradient later starts
at its first ``g²`` too. On a quadratic ``diag(λ)`` near its minimum it converges iff
``lr (λ + 2ρλ²/δ) < 2`` (:func:`landscape.optim.rules.tracer_stable`).

Closure convention: the closure must RETURN THE LOSS WITHOUT CALLING ``backward``; the optimizer
differentiates it with ``create_graph=True`` and reuses the graph for the Hessian-vector product::

    opt = build_optimizer("sgd-tracer", model.parameters(), lr=0.1)
    for x, y in loader:
        opt.step(lambda: F.cross_entropy(model(x), y))

A closure that calls ``backward()`` raises a ConfigError saying so. Cost: one forward, one backward
that builds the gradient's graph, one double backward (``passes_per_step = 2``). f̄ is stored as
one flat vector over all trained parameters (parameter-group order).

Data parallel (:meth:`~landscape.optim.wrapper.SharpnessAware.set_reducer`): ``g_B`` and the loss
are summed over processes (the global minibatch's), so f̄ and ``v = g_B ⊙ (f̄ + δ)⁻¹`` are the same
on every process; each differentiates its own shard's gradient graph, ``∂(g_shardᵀ v)/∂θ``, and
one more p-vector all-reduce sums these into ``H_B v``.
"""

from __future__ import annotations

from typing import Any

import torch

from ..errors import CheckpointError, ConfigError
from . import rules
from .wrapper import SharpnessAware, check_positive, flat_cat, split_like


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
            bias-corrected ``exp_avg_sq`` (which tracks the total, penalised gradient) instead,
            and ``g_0²`` before Adam's first step.
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
        self._fbar: torch.Tensor | None = None     # flat f̄ over all trained parameters
        self._seen: torch.Tensor | None = None     # entries whose f̄ was initialised (None: all)
        self._last = None

    # ---------------------------------------------------------------- f̄
    def fbar(self) -> list[torch.Tensor] | None:
        """The current f̄, one tensor per trained parameter (None before the first step)."""
        return None if self._fbar is None else split_like(self._fbar, self._params())

    def _current_fbar(self, params, present: list[bool], g: torch.Tensor) -> torch.Tensor:
        """f̄_t as a flat vector, initialising entries seen for the first time at g²."""
        if self.fbar_source == "adam" and all(
            self.base.state.get(p, {}).get("exp_avg_sq") is not None
            for p, k in zip(params, present)
            if k
        ):
            parts = []
            for p, k in zip(params, present):
                st = self.base.state.get(p, {})
                if k:
                    beta2 = next(grp["betas"][1] for grp in self.base.param_groups
                                 if any(q is p for q in grp["params"]))
                    parts.append(st["exp_avg_sq"] / (1.0 - beta2 ** float(st["step"])))
                else:
                    parts.append(torch.zeros_like(p))
            return flat_cat(parts)
        mask = None if all(present) else flat_cat([torch.full_like(p, k, dtype=torch.bool)
                                                   for p, k in zip(params, present)])
        if self._fbar is None:
            self._fbar = g * g  # f̄_0 = g_0²
            self._seen = mask
        elif self._seen is not None and mask is not None:
            new = mask & ~self._seen
            if bool(new.any()):
                self._fbar = torch.where(new, g * g, self._fbar)
            self._seen = self._seen | mask
        elif self._seen is not None:  # every parameter has a gradient now
            self._fbar = torch.where(self._seen, self._fbar, g * g)
            self._seen = None
        return self._fbar

    # ---------------------------------------------------------------- the hook
    def modify_gradients(self, params, grads):
        graph, self._graph_grads = (
            self._graph_grads,
            None,
        )  # this process's gradient, with its graph
        present = [g is not None for g in grads]
        if not any(present):
            return grads
        g = flat_cat(
            [t.detach() if t is not None else torch.zeros_like(p) for p, t in zip(params, grads)]
        )
        fbar = self._current_fbar(params, present, g)
        v = rules.tracer_direction([g], [fbar], self.delta)[0]
        hv = self._hvp(params, graph, split_like(v, params))
        out = torch.add(g, hv, alpha=2.0 * self.rho)  # g + 2ρ H_B v
        self._last = (g, v)
        if self.fbar_source == "own":
            new = rules.tracer_ema([fbar], [g], self.beta)[0]
            mask = None if all(present) else flat_cat([torch.full_like(p, k, dtype=torch.bool)
                                                       for p, k in zip(params, present)])
            self._fbar = new if mask is None else torch.where(mask, new, fbar)
        return [o if k else None for o, k in zip(split_like(out, params), present)]

    def _hvp(self, params, graph, vs: list[torch.Tensor]) -> torch.Tensor:
        """``H_B v = ∂(g_Bᵀ v)/∂θ`` as a flat vector, by double backward through the first pass's
        graph. Data parallel: ``Σ_processes ∂(g_shardᵀ v)/∂θ`` (each process differentiates its own
        part of ``g_B`` and one all-reduce sums them). A gradient without graph (constant in θ)
        contributes nothing."""
        idx = [i for i, t in enumerate(graph) if t is not None]
        outs = [i for i in idx if graph[i].requires_grad]
        full = [torch.zeros_like(p) for p in params]
        if outs:
            with torch.enable_grad():
                hv = torch.autograd.grad([graph[i] for i in outs], [params[i] for i in idx],
                                         grad_outputs=[vs[i] for i in outs], allow_unused=True)
            for i, h in zip(idx, hv):
                if h is not None:
                    full[i] = h
        return self.sum_over_processes(flat_cat(full))

    @property
    def last_penalty(self) -> torch.Tensor | None:
        """The penalty ``ρ ⟨g_B², (f̄ + δ)⁻¹⟩`` of the last step (``ρ ⟨g_B, v⟩``)."""
        if self._last is None:
            return None
        g, v = self._last
        return self.rho * torch.dot(g, v)

    # ---------------------------------------------------------------- state
    def _extra_state(self) -> dict[str, Any]:
        return {"fbar": None if self._fbar is None else self._fbar.clone(),
                "seen": None if self._seen is None else self._seen.clone()}

    def _load_extra_state(self, extra: dict[str, Any]) -> None:
        fb, seen = extra.get("fbar"), extra.get("seen")
        p = sum(q.numel() for q in self._params())
        if fb is not None and fb.numel() != p:
            raise CheckpointError(
                f"the saved f̄ has {fb.numel()} entries but {p} parameters are optimized",
                "build the optimizer over the same parameters",
            )
        dev = self._params()[0].device
        self._fbar = None if fb is None else fb.to(dev)
        self._seen = None if seen is None else seen.to(dev)


class SGDTracer(Tracer):
    """SGD-TRACER (g-tracer.md Alg. 1) on torch SGD (momentum and weight decay as given)."""

    name = "sgd-tracer"
    default_base = "sgd"


class AdamTracer(Tracer):
    """Adam-TRACER (g-tracer.md §2.2) on torch Adam; keeps its own f̄ by default (``fbar="own"``),
    ``fbar="adam"`` shares Adam's bias-corrected second moment."""

    name = "adam-tracer"
    default_base = "adam"
