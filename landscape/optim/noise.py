"""Large-batch SGD with covariance noise (sgd-covariance-noise.md Alg. 1, App. E.1, App. F):
``lb-diag-noise`` and ``lb-full-noise``.

``θ ← θ − α ∇L_{M_L}(θ) + α sqrt((M_L − M_S)/(M_L M_S)) C ξ`` (eq. 2, 5), i.e. the gradient handed
to the base optimizer is ``g_B − s C ξ``, ``s = sqrt((M_L − M_S)/(M_L M_S))``, where ``M_L`` is the
batch size actually used (the number of per-sample gradients) and ``M_S`` the small batch to
emulate (``small_batch``). Where the noise enters a momentum/Adam base is unspecified in the paper:
we add it to the gradient handed to the base optimizer (docs/algorithms.md §2).

- ``lb-diag-noise``: ``C ξ = sqrt(diag F_emp) ⊙ ξ``, ``ξ ∼ N(0, I)``, ``diag F_emp = (1/M) Σ g_i²``.
- ``lb-full-noise``: ``C ξ = (1/sqrt M) Σ_i σ_i g_i`` with Rademacher ``σ_i`` (App. F), of
  covariance ``F_emp = (1/M) Σ g_i g_iᵀ``.

Noise only during the first ``noise_fraction = 0.25`` of ``total_steps`` (App. E.1), or the first
``noise_steps``; after that the step is plain large-batch SGD and no per-sample gradients are
computed (``passes_per_step`` drops from 2 to 1).

Per-sample gradients: ``opt.step(closure, batch=(x, y))`` with ``model=`` and ``loss_fn=`` given
at construction computes them by ``torch.func`` (``vmap(grad(functional_call))``, through
:func:`landscape.curvature.functional.per_sample_grads`), at the same θ as the closure, with the
model's buffers as they are. Models with BatchNorm in training mode (per-sample gradients are not
defined there) or dropout must pass them instead: ``opt.step(closure,
per_sample_grads=[...])``, a list (or a callable returning one) of ``[M, *p.shape]`` tensors, one
per trained parameter::

    opt = build_optimizer("lb-diag-noise", model.parameters(), lr=0.1, small_batch=32,
                          total_steps=epochs * len(loader), model=model, loss_fn="cross-entropy")
    for x, y in loader:                                # batches of M_L samples
        opt.step(lambda: F.cross_entropy(model(x), y), batch=(x, y))

Data parallel (:meth:`~landscape.optim.wrapper.SharpnessAware.set_reducer` with
``shard=slice(rank, None, world)``): ``batch=`` is the GLOBAL minibatch of M samples (the same on
every process; ``per_sample_grads=``, if given, are those of ``batch[shard]``) and the closure
evaluates this process's part of the loss. Each process computes its shard's terms only and one
all-reduce sums them: ``Σ_{i∈shard} g_i²`` (diag), or ``Σ_{i∈shard} σ_i g_i`` with the rows
``σ[shard]`` of the M signs drawn for the whole batch (full); M, ``σ`` and ``ξ`` come from the
shared generator, so every process draws the same noise.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from ..errors import ConfigError
from . import rules
from .wrapper import SharpnessAware, check_positive, flat_cat, present, scatter, split_like

_BATCHNORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)


class CovarianceNoise(SharpnessAware):
    """Large-batch step plus Fisher-shaped noise (see the module docstring).

    Args:
        small_batch: ``M_S``, the batch size whose gradient noise is emulated (required).
        total_steps: the run's number of steps (required unless ``noise_steps`` is given).
        noise_fraction: fraction of ``total_steps`` with noise (default 0.25, App. E.1).
        noise_steps: number of noisy steps (overrides ``total_steps`` · ``noise_fraction``).
        model, loss_fn: for per-sample gradients by torch.func (``loss_fn``: ``"cross-entropy"``,
            ``"mse"`` or a mean-reduced callable, as in :mod:`landscape.losses`).
        seed: seed of the noise (its generator state is part of ``state_dict``).
    """

    name = "lb-noise"
    covariance = "diag"
    uses_rng = True

    def __init__(self, params=None, base="sgd", *, small_batch: int | None = None,
                 total_steps: int | None = None, noise_fraction: float = 0.25,
                 noise_steps: int | None = None, loss_fn: Any = None, model=None, seed=None,
                 **base_kwargs) -> None:
        super().__init__(params, base, model=model, seed=seed, **base_kwargs)
        if small_batch is None or not isinstance(small_batch, int) or small_batch < 1:
            raise ConfigError(f"{self.name} needs small_batch, the batch size M_S to emulate "
                              f"(got {small_batch!r})",
                              "pass --small-batch 128 (small_batch=128 in Python)")
        self.small_batch = small_batch
        if noise_steps is None:
            if total_steps is None:
                raise ConfigError(f"{self.name} adds noise during the first part of training and "
                                  "needs the run's length",
                                  "pass total_steps=epochs*steps_per_epoch (or noise_steps=)")
            check_positive("noise_fraction", noise_fraction, allow_zero=True)
            noise_steps = math.ceil(noise_fraction * int(total_steps))
        if not isinstance(noise_steps, int) or noise_steps < 0:
            raise ConfigError(f"noise_steps must be a non-negative integer, got {noise_steps!r}",
                              "pass total_steps= or noise_steps=")
        self.noise_steps = noise_steps
        self.loss_fn = loss_fn
        self.last_noise: list | None = None
        self.last_scale: float | None = None
        self._batch = None
        self._psg = None

    @property
    def noise_active(self) -> bool:
        """Whether the next step adds noise."""
        return self.steps < self.noise_steps

    @property
    def passes_per_step(self) -> int:  # type: ignore[override]
        return 2 if self.noise_active else 1

    def step(
        self,
        closure: Callable | None = None,
        *,
        batch: tuple[torch.Tensor, torch.Tensor] | None = None,
        per_sample_grads: Sequence[torch.Tensor]
        | Callable[[], Sequence[torch.Tensor]]
        | None = None,
    ):
        """One step; while the noise is on, the batch's per-sample gradients come from
        ``per_sample_grads`` or are computed from ``batch=(x, y)`` (module docstring)."""
        self._batch, self._psg = batch, per_sample_grads
        try:
            return super().step(closure)
        finally:
            self._batch = self._psg = None

    def modify_gradients(self, params, grads):
        self.last_noise = None
        if not self.noise_active:
            return grads
        idx, ps, gs = present(params, grads)
        if not idx:
            return grads
        draw = self._full_noise if self.covariance == "full" else self._diag_noise
        noise = draw(params, idx, ps)
        self.last_noise = scatter(len(params), idx, noise)
        return scatter(len(params), idx, [g - n for g, n in zip(gs, noise)])

    def _diag_noise(self, params, idx, ps) -> list[torch.Tensor]:
        """``s sqrt(diag F_emp) ⊙ ξ``, ``diag F_emp = (1/M) Σ_i g_i²`` over the global batch (Alg.
        1;
        as :func:`rules.diag_fisher_noise`): this process's ``Σ_{i∈shard} g_i²``, summed over
        processes, divided by M; ``ξ ∼ N(0, I)`` from the shared generator, one draw per
        parameter."""
        local = self._linear_squares(ps) if self._psg is None and self._batch is not None else None
        per = None
        if local is None:
            per = self._per_sample(params, idx, ps)
            local = [(g * g).sum(0) for g in per]
        m = self._rows(per)
        self.last_scale = scale = rules.covariance_noise_scale(m, self.small_batch)
        squares = split_like(self.sum_over_processes(flat_cat(local)), ps)
        return rules.diag_noise_from_squares(squares, m, scale, self._generator)

    def _linear_squares(self, ps) -> list[torch.Tensor] | None:
        """``Σ_{i∈shard} g_i²`` of a network of ``nn.Linear`` layers in one reverse pass
        (:func:`landscape.curvature.functional.linear_sum_squared_grads`); None otherwise."""
        from ..curvature import functional as fx

        forward, loss, chosen, names = _functional(self.model, self.loss_fn, ps, self.name)
        x, y = self._local_batch()
        squares = fx.linear_sum_squared_grads(self.model, forward, loss, chosen, x, y)
        return None if squares is None else [squares[n] for n in names]

    def _full_noise(self, params, idx, ps) -> list[torch.Tensor]:
        """``(s/sqrt M) Σ_i σ_i g_i`` with Rademacher ``σ_i`` for the M samples of the global batch
        (App. F; as :func:`rules.full_fisher_noise`): this process's rows ``σ[shard]``, from one
        backward of ``Σ_{i∈shard} σ_i l_i`` (or from ``per_sample_grads``), summed over
        processes."""
        per = (
            None
            if self._psg is None and self._batch is not None
            else self._per_sample(params, idx, ps)
        )
        m = self._rows(per)
        self.last_scale = scale = rules.covariance_noise_scale(m, self.small_batch)
        sigma = rules.rademacher_signs(m, self._generator, ps[0])[self.shard]
        if per is None:
            local = _signed_sum_grad(self.model, self.loss_fn, ps, self._local_batch(), self.name,
                                     sigma)
        else:
            local = [torch.tensordot(sigma.to(g.dtype), g, dims=1) for g in per]
        summed = split_like(self.sum_over_processes(flat_cat(local)), ps)
        return [scale / math.sqrt(m) * g for g in summed]

    def _rows(self, per: list[torch.Tensor] | None) -> int:
        """M, the batch size: the rows of the per-sample gradients in one process; with a reducer
        those of ``batch=``, the global minibatch (``per_sample_grads`` hold only
        ``batch[shard]``)."""
        if self.reducer is None and per is not None:
            return int(per[0].shape[0])
        if self._batch is None:
            raise ConfigError(
                f"data-parallel {self.name} needs the global minibatch to count its samples",
                "pass batch=(x, y) (the global minibatch) with per_sample_grads= of its shard",
            )
        m = int(self._batch[0].shape[0])
        if per is not None and per[0].shape[0] != len(range(m)[self.shard]):
            raise ConfigError(
                f"per_sample_grads hold {per[0].shape[0]} samples, but this process's shard "
                f"of the batch has {len(range(m)[self.shard])}",
                "pass those of batch[shard]",
            )
        return m

    def _local_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """This process's rows ``batch[shard]`` of the global minibatch (all of it in one
        process)."""
        x, y = self._batch
        return x[self.shard], y[self.shard]

    def _per_sample(self, params, idx, ps) -> list[torch.Tensor]:
        src = self._psg
        if src is not None:
            if callable(src):
                src = src()
            src = list(src)
            if len(src) == len(params):
                per = [src[i] for i in idx]
            elif len(src) == len(idx):
                per = src
            else:
                raise ConfigError(
                    f"per_sample_grads holds {len(src)} tensors for {len(params)} parameters",
                    "pass one [M, *shape] tensor per trained parameter, in order",
                )
            for t, p in zip(per, ps):
                if t is None or tuple(t.shape[1:]) != tuple(p.shape):
                    raise ConfigError("per_sample_grads do not match the parameters' shapes",
                                      "pass one [M, *p.shape] tensor per trained parameter")
            return [t.detach() for t in per]
        if self._batch is None:
            raise ConfigError(
                f"{self.name} needs the per-sample gradients of the batch",
                "call opt.step(closure, batch=(x, y)) (with model= and loss_fn= given), "
                "or opt.step(closure, per_sample_grads=[...])",
            )
        return _per_sample_grads(self.model, self.loss_fn, ps, self._local_batch(), self.name)


def _functional(model: nn.Module | None, loss_fn: Any, ps: list[torch.Tensor], name: str):
    """``(forward, loss, params dict, names)``: the model in functional form over the parameters
    ``ps`` (the others and the buffers held fixed)."""
    if model is None or loss_fn is None:
        raise ConfigError(
            f"{name} computes per-sample gradients from batch= only with model= and "
            "loss_fn= given at construction",
            "build it with model=model, loss_fn='cross-entropy' (or pass per_sample_grads=)",
        )
    if any(isinstance(m, _BATCHNORMS) and m.training for m in model.modules()):
        raise ConfigError("per-sample gradients are not defined with BatchNorm in training mode",
                          "pass per_sample_grads= yourself (e.g. from a ghost-batch model)")
    from ..losses import get_loss

    named = dict(model.named_parameters())
    by_id = {id(t): n for n, t in named.items()}
    names = []
    for p in ps:
        if id(p) not in by_id:
            raise ConfigError("an optimized parameter is not a parameter of model=",
                              "pass the module whose parameters are optimized")
        names.append(by_id[id(p)])
    chosen = {n: named[n].detach() for n in names}
    frozen = {n: t.detach() for n, t in named.items() if n not in chosen}
    frozen.update(dict(model.named_buffers()))

    def forward(prm: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        return torch.func.functional_call(model, (prm, frozen), (x,))

    return forward, get_loss(loss_fn), chosen, names


def _per_sample_grads(model: nn.Module | None, loss_fn: Any, ps: list[torch.Tensor], batch,
                      name: str
                      ) -> list[torch.Tensor]:
    """``[M, *shape]`` per parameter in ``ps``: torch.func vmap(grad(functional_call)) through
    :func:`landscape.curvature.functional.per_sample_grads`."""
    from ..curvature import functional as fx

    forward, loss, chosen, names = _functional(model, loss_fn, ps, name)
    x, y = batch
    try:
        with torch.enable_grad():
            g = fx.per_sample_grads(forward, loss, chosen, x, y)
    except RuntimeError as e:
        raise ConfigError(
            f"per-sample gradients failed under torch.func: {str(e).splitlines()[0]}",
            "pass per_sample_grads= yourself (dropout and some custom layers do not vmap)",
        ) from e
    return [g[n] for n in names]


def _signed_sum_grad(model: nn.Module | None, loss_fn: Any, ps: list[torch.Tensor], batch,
                     name: str,
                     sigma: torch.Tensor) -> list[torch.Tensor]:
    """``Σ_i σ_i g_i = ∇_θ Σ_i σ_i l_i(θ)`` by ONE reverse pass, without per-sample gradients:
    the full empirical-Fisher noise of sgd-covariance-noise App. F costs a backward, not M."""
    from ..curvature import functional as fx

    forward, loss, chosen, names = _functional(model, loss_fn, ps, name)
    x, y = batch
    with torch.enable_grad():
        g = torch.func.grad(
            lambda prm: (sigma * fx.per_sample_losses(forward, loss, prm, x, y)).sum()
        )(chosen)
    return [g[n] for n in names]


class LBDiagNoise(CovarianceNoise):
    """Large batch + diagonal empirical-Fisher noise (sgd-covariance-noise Alg. 1)."""

    name = "lb-diag-noise"
    covariance = "diag"


class LBFullNoise(CovarianceNoise):
    """Large batch + full empirical-Fisher noise sampled from per-sample gradients with
    Rademacher weights (sgd-covariance-noise eq. 5, App. F)."""

    name = "lb-full-noise"
    covariance = "full"
