"""The one stateful mechanism: :class:`SharpnessAware`, a ``torch.optim.Optimizer`` around a base.

A variant overrides two hooks and sets a few class flags; :meth:`SharpnessAware.step` does the rest:

1. evaluate the closure at θ (grads zeroed first) → loss and ``g_B``;
2. ``eps = perturbation(params, grads)``; if not None: save θ (a copy), ``θ += ε``, snapshot the
   model's buffers, evaluate the closure again, restore θ by ``copy_`` from the saved tensor (never
   ``θ − ε``, inexact in floating point, and never a rebinding of ``.data``), restore the buffers;
   one-pass methods (``perturb_first = True``: rsam, mfvi) draw ε before their only pass instead;
3. ``grads = modify_gradients(params, grads)`` (penalties, priors, noise, the variant's own state);
4. hand the gradients to the base optimizer (SGD with momentum, Adam, ...), which applies the
   learning rate, momentum and weight decay, once.

Closure conventions (both work with every optimizer, except where stated):

- **PyTorch's**: the closure re-evaluates the loss, calls ``loss.backward()`` and returns the loss::

      def closure():
          loss = F.cross_entropy(model(x), y)
          loss.backward()
          return loss
      opt.step(closure)

- **loss closure**: the closure returns the loss tensor WITHOUT calling backward; the wrapper
  differentiates it (``torch.autograd.grad``). G-TRACER needs this form, because its exact
  Hessian-vector product ``H_B v`` differentiates the gradient's graph (``create_graph=True``)::

      opt.step(lambda: F.cross_entropy(model(x), y))

  A closure that called ``backward`` (some parameter has a ``.grad`` after it) is taken to be of
  the first kind. The wrapper zeroes the gradients (``set_to_none``) before every pass, so the
  closure need not call ``zero_grad`` (doing so is harmless).

BatchNorm: pass ``model=`` (the module the closure runs) and the perturbed pass leaves every buffer
of the model as it was (BatchNorm running mean/var and ``num_batches_tracked``: a snapshot and a
copy back). Without ``model=`` the wrapper cannot see the buffers and the perturbed pass updates
them like any forward pass in training mode.

Data parallel: ``opt.set_reducer(reduce, shard=slice(rank, None, world))`` with ``reduce(flat)``
returning the sum of a flat tensor over processes (e.g. :func:`landscape.distributed.all_reduce_`).
The closure then evaluates THIS process's part of the global loss (e.g. the shard's loss sum over
the global batch size ``B``), and every pass sums its gradients and loss over processes in one
all-reduce of a flat ``[p + 1]`` vector: each process gets ``∇L_B`` and ``L_B`` of the global
minibatch and, with identical seeds, takes the identical step. ``shard`` names the rows of a
``batch=`` argument this process's closure evaluates (the covariance-noise optimizers take the
GLOBAL minibatch there); :meth:`SharpnessAware.sum_over_processes` sums a variant's own local
terms (G-TRACER's Hessian-vector product, the per-sample moments of covariance noise). NaN
detection looks at the summed loss, so all processes stop together. ``set_reducer(None)``: one
process again (the default).

``param_groups`` ARE the base optimizer's (torch LR schedulers work on the wrapper);
``state_dict()`` holds the base optimizer's state (momentum buffers, Adam moments) and the
wrapper's own (TRACER's f̄, MFVI/VSAM's log Σ, the step counter and the RNG state), so a resumed
run continues bit-exactly. Variants do their arithmetic on one flat vector ``[p]`` of all trained
parameters (parameter-group order): one global norm, and a few kernels per step whatever the
number of parameter tensors (so all trained parameters share one device and dtype).

A NaN or infinite loss raises :class:`~landscape.errors.NumericalError`. ``passes_per_step``
counts forward/backward passes per step (a Hessian-vector product or a vmapped per-sample-gradient
pass counts as one), so runs can be compute-matched.
"""

from __future__ import annotations

import functools
import inspect
import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from ..errors import CheckpointError, ConfigError, NumericalError

BASES: dict[str, type[torch.optim.Optimizer]] = {
    "sgd": torch.optim.SGD,
    "adam": torch.optim.Adam,
    "adamw": torch.optim.AdamW,
}

Grads = list["torch.Tensor | None"]


def make_base(base: str | type | torch.optim.Optimizer, params,
              base_kwargs: dict) -> torch.optim.Optimizer:
    """The base optimizer: a name in :data:`BASES`, an optimizer class, or a built instance."""
    if isinstance(base, torch.optim.Optimizer):
        if params is not None or base_kwargs:
            raise ConfigError(
                "a built base optimizer already holds its parameters and settings",
                "pass either base=<optimizer instance> alone, or params and base='sgd'/'adam'",
            )
        return base
    if isinstance(base, str):
        if base.lower() not in BASES:
            raise ConfigError(f"unknown base optimizer {base!r}",
                              f"choose one of {', '.join(BASES)}")
        cls = BASES[base.lower()]
    elif isinstance(base, type) and issubclass(base, torch.optim.Optimizer):
        cls = base
    else:
        raise ConfigError(
            f"base must be a name, an optimizer class or instance, got {type(base).__name__}",
            "pass base='sgd' or base='adam'",
        )
    if params is None:
        raise ConfigError("no parameters to optimize",
                          "pass model.parameters() as the first argument")
    accepted = set(inspect.signature(cls.__init__).parameters) - {"self", "params"}
    unknown = sorted(set(base_kwargs) - accepted)
    if unknown:
        raise ConfigError(f"{cls.__name__} does not take {', '.join(unknown)}",
                          f"its settings are {', '.join(sorted(accepted))}")
    try:
        return cls(params, **base_kwargs)
    except ValueError as e:
        raise ConfigError(f"bad settings for {cls.__name__}: {e}",
                          "check lr, momentum, weight_decay") from e


class SharpnessAware(torch.optim.Optimizer):
    """A base optimizer plus a perturbation / gradient rule (see the module docstring).

    Args:
        params: iterable of parameters or parameter groups (as for any torch optimizer); ``None``
            when ``base`` is an optimizer instance.
        base: ``"sgd"`` (torch SGD, momentum and weight decay as given), ``"adam"``, ``"adamw"``,
            an optimizer class, or a built optimizer instance.
        model: the module the closure evaluates; needed to keep BatchNorm statistics out of the
            perturbed pass (and by the covariance-noise optimizers for per-sample gradients).
        seed: seed (or a ``torch.Generator``) of the variant's random draws; ``None``: a fresh
            non-deterministic seed. The generator's state is part of ``state_dict()``.
        **base_kwargs: settings of the base optimizer (``lr``, ``momentum``, ``weight_decay``,
            ``betas``, ``nesterov``, ...).

    Subclasses set ``name``, ``passes_per_step`` and the flags ``two_pass`` (the perturbation uses
    the first pass's gradient), ``perturb_first`` (ε is drawn before the only pass),
    ``needs_graph`` (the first pass keeps the gradient's graph for a Hessian-vector product) and
    ``uses_rng``, and override :meth:`perturbation` and/or :meth:`modify_gradients`.
    """

    name = "sgd"
    passes_per_step: int = 1
    two_pass = False
    perturb_first = False
    needs_graph = False
    uses_rng = False
    #: data parallel (module docstring): the sum over processes, and this process's rows of batch=
    reducer: Callable[[torch.Tensor], torch.Tensor] | None = None
    shard: slice = slice(None)
    #: the last pass's LOCAL gradients with their graph (``create_graph``), for a variant's HVP
    _graph_grads: Grads | None = None

    def __init__(
        self,
        params=None,
        base: str | type | torch.optim.Optimizer = "sgd",
        *,
        model: nn.Module | None = None,
        seed: int | torch.Generator | None = None,
        **base_kwargs: Any,
    ) -> None:
        self._wrapping = False
        self._own_groups: list[dict] = []
        self.base = make_base(base, params, base_kwargs)
        super().__init__([{"params": []}], {})
        self._wrapping = True
        self.defaults = self.base.defaults
        if model is not None and not isinstance(model, nn.Module):
            raise ConfigError(f"model= must be an nn.Module, got {type(model).__name__}",
                              "pass the module your closure evaluates")
        self.model = model
        self.steps = 0
        self.last_perturbation: Grads | None = None
        self._generator = self._make_generator(seed) if self.uses_rng else None

    # ------------------------------------------------------------------ base delegation
    @property
    def param_groups(self) -> list[dict]:  # type: ignore[override]
        return self.base.param_groups if self._wrapping else self._own_groups

    @param_groups.setter
    def param_groups(self, groups: list[dict]) -> None:
        if self.__dict__.get("_wrapping"):
            self.base.param_groups = groups
        else:
            self._own_groups = groups

    def add_param_group(self, param_group: dict) -> None:
        if self.__dict__.get("_wrapping"):
            self.base.add_param_group(param_group)
        else:
            super().add_param_group(param_group)

    def _params(self) -> list[torch.Tensor]:
        """The parameters that train (``requires_grad``), in parameter-group order."""
        return [p for g in self.param_groups for p in g["params"] if p.requires_grad]

    def _all_params(self) -> list[torch.Tensor]:
        return [p for g in self.param_groups for p in g["params"]]

    def _make_generator(self, seed) -> torch.Generator:
        if isinstance(seed, torch.Generator):
            return seed
        ps = self._all_params()
        device = ps[0].device if ps else torch.device("cpu")
        gen = torch.Generator(device=device)
        if seed is None:
            gen.seed()
        else:
            gen.manual_seed(int(seed))
        return gen

    # ------------------------------------------------------------------ hooks
    def perturbation(self, params: list[torch.Tensor], grads: Grads | None) -> Grads | None:
        """ε for each parameter (``None`` entries are not perturbed), or ``None`` for no second
        pass. ``grads`` is the first pass's gradient (``None`` when ``perturb_first``)."""
        return None

    def modify_gradients(self, params: list[torch.Tensor], grads: Grads) -> Grads:
        """The gradients handed to the base optimizer (``None``: parameter skipped). Called with
        the parameters restored; a variant may update its own state here."""
        return grads

    # ------------------------------------------------------------------ the step
    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:  # type: ignore[override]
        """One update; returns the loss of the first pass (of the only, perturbed pass for
        one-pass perturbed methods)."""
        if closure is None:
            raise ConfigError(f"{self.name} needs a closure that evaluates the loss",
                              "call opt.step(closure) with closure() returning the loss "
                              "(see landscape.optim.wrapper)")
        params = self._params()
        eps: Grads | None = None
        if self.perturb_first:
            eps = self.perturbation(params, None)
            loss, grads = self._perturbed_pass(closure, params, eps, freeze_buffers=False)
        else:
            loss, grads = self._pass(closure, params, create_graph=self.needs_graph)
            if self.two_pass:
                eps = self.perturbation(params, grads)
                if eps is not None:
                    _, grads = self._perturbed_pass(closure, params, eps, freeze_buffers=True)
        grads = self.modify_gradients(params, grads)
        for p, g in zip(params, grads):
            p.grad = g.detach() if g is not None and g.requires_grad else g
        self.base.step()
        self.last_perturbation = eps
        self.steps += 1
        return loss.detach() if isinstance(loss, torch.Tensor) else loss

    def set_reducer(self, reduce: Callable[[torch.Tensor], torch.Tensor] | None,
                    shard: slice = slice(None)) -> None:
        """Data parallel (module docstring): ``reduce(flat)`` sums a flat tensor over processes;
        ``shard``: the rows of ``batch=`` this process's closure evaluates. ``None``: one
        process."""
        self.reducer, self.shard = reduce, shard

    def sum_over_processes(self, flat: torch.Tensor) -> torch.Tensor:
        """``Σ_processes flat`` through the reducer (``flat`` itself without one)."""
        return flat if self.reducer is None else self.reducer(flat)

    def _pass(self, closure: Callable, params: list[torch.Tensor], create_graph: bool = False):
        """``(loss, grads)`` of one evaluation of the closure; with a reducer, both summed over
        processes (the local graph, if ``create_graph``, kept in ``_graph_grads``)."""
        for p in params:
            p.grad = None
        with torch.enable_grad():
            loss = closure()
        if self.reducer is None or not isinstance(loss, (torch.Tensor, float, int)):
            self._check_loss(loss)  # with a reducer: the summed loss below, on every process alike
        grads = self._differentiate(loss, params, create_graph)
        self._graph_grads = grads if create_graph else None
        if self.reducer is None:
            return loss, grads
        loss, grads = self._summed(loss, grads)
        self._check_loss(loss)
        return loss, grads

    def _differentiate(self, loss: Any, params: list[torch.Tensor], create_graph: bool) -> Grads:
        """The gradients the closure left in ``.grad``, or ``∂loss/∂θ`` of a loss closure."""
        if any(p.grad is not None for p in params):
            if create_graph:
                raise ConfigError(
                    f"{self.name} needs an exact Hessian-vector product, but the closure called "
                    "backward() (its graph is gone)",
                    "let the closure return the loss without calling backward: "
                    "opt.step(lambda: loss_fn(model(x), y))")
            return [p.grad for p in params]
        if not (isinstance(loss, torch.Tensor) and loss.requires_grad):
            raise ConfigError("the closure neither called backward() nor returned a loss that "
                              "depends on the parameters",
                              "return the loss tensor from the closure (with or without calling "
                              "loss.backward())")
        if loss.numel() != 1:
            raise ConfigError(f"the closure returned a loss of shape {tuple(loss.shape)}",
                              "return a scalar: reduce the per-sample losses with .mean()")
        with torch.enable_grad():
            grads = torch.autograd.grad(loss, params, allow_unused=True, create_graph=create_graph)
        return list(grads)

    def _summed(self, loss: torch.Tensor | float, grads: Grads) -> tuple[torch.Tensor, Grads]:
        """Loss and gradients summed over processes: ONE reduction of ``[g_1, ..., g_k, loss]``
        (the parameters without a gradient are the same on every process: the same model)."""
        idx = [i for i, g in enumerate(grads) if g is not None]
        gs = [grads[i] for i in idx]
        like = gs[0] if gs else torch.zeros(())
        value = torch.as_tensor(loss.detach() if isinstance(loss, torch.Tensor) else loss).to(like)
        if value.numel() != 1:
            raise ConfigError(f"the closure returned a loss of shape {tuple(value.shape)}",
                              "return a scalar loss (this process's part of the global loss)")
        flat = self.sum_over_processes(
            torch.cat([g.detach().reshape(-1) for g in gs] + [value.reshape(1)])
        )
        return flat[-1].clone(), scatter(len(grads), idx, split_like(flat[:-1], gs))

    def _perturbed_pass(self, closure: Callable, params: list[torch.Tensor], eps: Grads | None,
                        freeze_buffers: bool):
        moved = [(p, e) for p, e in zip(params, eps or ()) if e is not None]
        ps, es = [p for p, _ in moved], [e for _, e in moved]
        saved = [p.clone() for p in ps]
        if ps:
            torch._foreach_add_(ps,
                                es)  # one call for all tensors (torch.optim's "foreach" kernels)
        buffers = list(self.model.buffers()) if freeze_buffers and self.model is not None else []
        saved_buffers = [b.clone() for b in buffers]
        try:
            return self._pass(closure, params)
        finally:
            for dst, src in ((ps, saved), (buffers, saved_buffers)):
                if dst:
                    torch._foreach_copy_(dst, src)  # θ restored exactly (never θ − ε)

    def _check_loss(self, loss: Any) -> None:
        if isinstance(loss, torch.Tensor):
            n = loss.numel()
            value = (
                loss.item()
                if n == 1
                else (loss.detach().reshape(-1)[0].item() if n else float("nan"))
            )
            bad = not math.isfinite(value) or (n > 1 and not bool(torch.isfinite(loss).all()))
        elif isinstance(loss, (float, int)):
            value = float(loss)
            bad = not math.isfinite(value)
        else:
            raise ConfigError(f"the closure returned {type(loss).__name__}, not a loss",
                              "return the loss tensor from the closure")
        if bad:
            raise NumericalError(
                f"{self.name}: the loss is {value} at step {self.steps}: training diverged",
                "lower the learning rate (or rho / the noise), or check the data for NaN/inf")

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:  # type: ignore[override]
        """``{"name", "base": base.state_dict(), "wrapper": {steps, state, generator, extra}}``;
        ``wrapper.state`` maps the index of a parameter (in parameter-group order, as torch
        does) to its wrapper tensors (copies)."""
        per = {}
        for i, p in enumerate(self._all_params()):
            st = self.state.get(p)
            if st:
                per[i] = {k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in st.items()}
        return {
            "name": self.name,
            "base": self.base.state_dict(),
            "wrapper": {
                "steps": self.steps,
                "state": per,
                "generator": None if self._generator is None else self._generator.get_state(),
                "extra": self._extra_state(),
            },
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:  # type: ignore[override]
        if not isinstance(state_dict,
                          dict) or "base" not in state_dict or "wrapper" not in state_dict:
            raise CheckpointError("this is not the state of a landscape optimizer",
                                  "load a state saved by the same optimizer's state_dict()")
        if state_dict.get("name") != self.name:
            raise CheckpointError(
                f"the optimizer state is {state_dict.get('name')!r}, not {self.name!r}",
                f"build a {state_dict.get('name')!r} optimizer to resume it",
            )
        self.base.load_state_dict(state_dict["base"])
        w = state_dict["wrapper"]
        ps = self._all_params()
        self.state.clear()
        for i, st in w["state"].items():
            i = int(i)
            if i >= len(ps):
                raise CheckpointError(
                    f"the optimizer state has a parameter #{i} but only {len(ps)} are optimized",
                    "build the optimizer over the same parameters",
                )
            p = ps[i]
            self.state[p] = {k: v.to(p.device) if isinstance(v, torch.Tensor) else v for k,
                             v in st.items()}
        self.steps = int(w["steps"])
        if self._generator is not None and w.get("generator") is not None:
            self._generator.set_state(w["generator"])
        self._load_extra_state(w.get("extra") or {})

    def _extra_state(self) -> dict[str, Any]:
        return {}

    def _load_extra_state(self, extra: dict[str, Any]) -> None:
        pass

    def __getstate__(self) -> dict[str, Any]:  # the whole wrapper (torch's keeps 3 fields only)
        return self.__dict__.copy()

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, base={self.base!r})"


# ---------------------------------------------------------------------- helpers for variants
def present(
    params: Sequence[torch.Tensor], grads: Grads
) -> tuple[list[int], list[torch.Tensor], list[torch.Tensor]]:
    """Indices, parameters and gradients of the parameters that have a gradient."""
    idx = [i for i, g in enumerate(grads) if g is not None]
    return idx, [params[i] for i in idx], [grads[i] for i in idx]  # type: ignore[misc]


def scatter(n: int, idx: Sequence[int], values: Sequence[torch.Tensor]) -> Grads:
    """A list of length n with ``values`` at ``idx`` and ``None`` elsewhere."""
    out: Grads = [None] * n
    for i, v in zip(idx, values):
        out[i] = v
    return out


def flat_cat(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    """One flat vector ``[p]`` of the tensors (a copy)."""
    return torch.cat([t.reshape(-1) for t in tensors])


def split_like(flat: torch.Tensor, like: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """Views of ``flat`` shaped like ``like`` (inverse of :func:`flat_cat`)."""
    if not flat.is_contiguous():
        flat = flat.contiguous()
    base = flat.storage_offset()
    return [flat.as_strided(shape, stride, base + offset)  # as_strided: the cheapest view op
            for shape, stride, offset in _layout(tuple(t.shape for t in like))]


@functools.lru_cache(maxsize=64)
def _layout(shapes: tuple[torch.Size, ...]) -> list[tuple[torch.Size, tuple[int, ...], int]]:
    """``(shape, contiguous strides, offset)`` of each tensor packed one after another."""
    out, offset = [], 0
    for shape in shapes:
        strides, step = [], 1
        for n in reversed(shape):
            strides.append(step)
            step *= n
        out.append((shape, tuple(reversed(strides)), offset))
        offset += step
    return out


def check_positive(name: str, value: float, allow_zero: bool = False) -> float:
    """A user-facing error for a hyperparameter that must be positive (or non-negative)."""
    ok = value >= 0 if allow_zero else value > 0
    if not (isinstance(value, (int, float)) and math.isfinite(value) and ok):
        raise ConfigError(
            f"{name} must be {'non-negative' if allow_zero else 'positive'}, got {value!r}",
            f"pass a {'non-negative' if allow_zero else 'positive'} {name}",
        )
    return float(value)
