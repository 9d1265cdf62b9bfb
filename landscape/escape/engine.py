"""The escape engine: T trajectories of a stochastic gradient method from one starting point, run
together.

The parameters of all trajectories are one ``[T, p]`` tensor; every gradient is a
``torch.func.vmap`` over the trajectory axis of a per-sample loss ``loss_i(params, idx) -> [m]``
(:mod:`landscape.curvature.functional`), so one Python step moves every trajectory. The loss is
anything with ``n`` samples: a :class:`~landscape.problem.Problem` (wrapped in
:class:`ProblemObjective`, parameters as the problem's layout) or a plain function of a flat vector
``loss_i(theta[p], idx[m]) -> [m]`` (wrapped in :class:`FlatObjective`; the lecture's 1-D toys in
:mod:`landscape.escape.toys`). ``L(θ) = (1/n) Σ_i l_i(θ)``.

Dynamics (all with the same learning rate η; ``g = ∇L`` the full-batch gradient; docs/algorithms.md
§2):

==================  ===========================================================================
``gd``              ``θ ← θ − η g`` (deterministic: computed once and replicated).
``sgd``             ``θ ← θ − η (1/B) Σ_{i∈B_t} ∇l_i``, ``B_t`` drawn WITHOUT replacement.
``isotropic``       ``θ ← θ − η (g + σ_t z)``, ``z ∼ N(0, I_p)``, ``σ_t² = c_B tr Σ(θ_t) / p``:
                    Gaussian noise with SGD's total variance ``E‖ξ‖² = c_B tr Σ`` at every step
                    (lecture, "The importance of noise structure": ``σ² = tr(G)/m`` so that
                    isotropic and geometry-aware noise have the same total variance; here it is
                    matched to SGD's actual noise, of which ``2L·G`` is the slides' model).
                    ``c_B = (n−B)/(B(n−1))``, ``Σ = (1/n) Σ_i (g_i − g)(g_i − g)ᵀ``; ``tr Σ`` is
                    estimated without bias from the per-sample gradients of a fresh random
                    subset S of ``m`` samples: ``tr Σ ≈ (n−1)/n · (1/(m−1)) Σ_{i∈S} ‖g_i − ḡ_S‖²``
                    (exact when ``m = n``), independent of ``z``, so ``E[ξξᵀ] = c_B tr Σ / p · I``.
``small-noise``     control: ``θ ← θ − η (g + κ (g_B − g))``: SGD's noise, same structure,
                    variance ``κ²`` times smaller (``κ = control_scale``, default 0.1).
``lb-diag-noise``   ``θ ← θ − η (g + s sqrt(diag F̂) ⊙ z)``, ``s = sqrt((n−B)/(nB))``: the
                    covariance-noise optimizer (sgd-covariance-noise Alg. 1, eq. 5) with the
                    full batch as the large batch ``M_L = n`` and ``M_S = B``;
                    ``diag F̂ = (1/m) Σ_{i∈S} g_i²`` over a random subset (unbiased for
                    ``diag F_emp``). Noise at every step (the paper's first-quarter schedule does
                    not apply to an escape run).
``lb-full-noise``   ``θ ← θ − η (g + s (1/√m) Σ_{i∈S} σ_i g_i)``, Rademacher ``σ_i`` (App. F):
                    covariance ``s² F̂`` with ``E F̂ = F_emp``; ``S`` all n samples by default,
                    when it costs one weighted gradient pass ``Σ_i (1/n + s σ_i/√n) ∇l_i``.
==================  ===========================================================================

Reproducibility: trajectory j draws everything (minibatch indices, noise subsets, ``z``, ``σ``)
from its own CPU ``torch.Generator`` seeded with ``seeds[j]``, in a fixed order per step, and no
per-trajectory floating-point operation depends on T (samples are summed in chunks of a size that
depends on n only), so trajectory j of a run of T equals a run of that trajectory alone with
``seeds=[seeds[j]]`` (tested to 1e-12 in float64). ``trajectory_seeds(seed, T)`` derives the
seeds by ``numpy.random.SeedSequence(seed).spawn``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from torch.func import vmap

from ..curvature import functional as fx
from ..curvature.operator import LinearOperator
from ..errors import ConfigError, NumericalError
from ..metrics.stability import sgd_noise_factor
from ..optim import rules

Dynamics = Literal["gd", "sgd", "isotropic", "small-noise", "lb-diag-noise", "lb-full-noise"]
DYNAMICS: tuple[str, ...] = ("gd", "sgd", "isotropic", "small-noise", "lb-diag-noise",
                             "lb-full-noise")
#: dynamics that need per-sample gradients of a random subset every step
_PER_SAMPLE = ("isotropic", "lb-diag-noise")
#: default chunk: (trajectory, sample) pairs per vmapped call
CHUNK = 1 << 17
#: default memory for per-sample gradients held at once
MEMORY = 256 << 20


# ----------------------------------------------------------------------------- objectives
class Objective:
    """Per-sample losses ``l_i(θ)``, ``i < n``, of a parameter vector with ``p`` entries.

    ``self(params, idx) -> [m]`` takes parameters in the objective's own structure (``one`` and
    ``rows`` make it from flat vectors; ``flatten_rows`` goes back) and a LongTensor of sample
    indices. Subclasses: :class:`FlatObjective`, :class:`ProblemObjective`.
    """

    n: int
    p: int
    dtype: torch.dtype
    device: torch.device
    name: str = "objective"

    def __call__(self, params: Any,
                 idx: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def one(self, flat: torch.Tensor) -> Any:
        """Parameters for one flat vector ``[p]``."""
        return flat

    def rows(self, flat: torch.Tensor) -> Any:
        """Parameters with a leading axis for a block ``[k, p]`` (views of it)."""
        return flat

    def flatten_rows(self, params: Any) -> torch.Tensor:
        """Inverse of :meth:`rows`: ``[k, p]``."""
        return params

    def leaves(self, params: Any) -> list[torch.Tensor]:
        """The tensors of ``params`` in flat order."""
        return [params]

    def loss(self, theta: torch.Tensor, idx: torch.Tensor | None = None,
             chunk: int = CHUNK) -> float:
        """``(1/|idx|) Σ_{i∈idx} l_i(θ)`` (all n samples by default)."""
        idx = torch.arange(self.n, device=self.device) if idx is None else idx
        total = 0.0
        with torch.no_grad():
            for s in range(0, idx.numel(), chunk):
                total += float(self(self.one(theta), idx[s : s + chunk]).double().sum())
        return total / idx.numel()


class FlatObjective(Objective):
    """``fn(theta[p], idx[m]) -> [m]`` per-sample losses of a flat vector (any differentiable
    torch function; it is vmapped over trajectories and differentiated by ``torch.func``).

    >>> quad = FlatObjective(lambda th, i: 0.5 * torch.tensor([1.0, 3.0])[i] * th[0] ** 2, n=2, p=1)
    >>> quad.loss(torch.tensor([2.0]))          # (1/2n) Σ a_i x² = (1 + 3)/4 · 4
    4.0
    """

    def __init__(self, fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], n: int, p: int,
                 dtype: torch.dtype = torch.float64, device: str | torch.device = "cpu",
                 name: str = "custom") -> None:
        if n < 1 or p < 1:
            raise ConfigError(f"a loss needs n ≥ 1 samples and p ≥ 1 parameters, got n={n}, p={p}",
                              "pass n= and p= for a plain function")
        self.fn, self.n, self.p = fn, int(n), int(p)
        self.dtype, self.device, self.name = dtype, torch.device(device), name

    def __call__(self, params: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        return self.fn(params, idx)


class ProblemObjective(Objective):
    """The per-sample losses of a :class:`~landscape.problem.Problem` (eval mode): parameters as
    the problem's layout (dicts of views), so that gradients come back per parameter tensor and
    are never scattered into a ``[T, p]`` buffer of zeros."""

    def __init__(self, problem) -> None:
        if problem.train_mode:
            raise ConfigError(
                "escape runs need per-sample losses, undefined with BatchNorm batch statistics",
                "build the problem in eval mode (train_mode=False)",
            )
        self.problem = problem
        self.layout = problem.layout
        self.X, self.Y = problem.tensors()  # trajectories draw their minibatches at random
        self.n, self.p = int(self.X.shape[0]), problem.p
        self.dtype, self.device = problem.dtype, problem.device
        self.name = f"problem({problem.loss.name})"

    def __call__(self, params: dict, idx: torch.Tensor) -> torch.Tensor:
        pb = self.problem
        return fx.per_sample_losses(pb.forward, pb.loss, params, self.X[idx], self.Y[idx])

    def one(self, flat: torch.Tensor) -> dict:
        return self.layout.unflatten(flat)

    def rows(self, flat: torch.Tensor) -> dict:
        return self.layout.unflatten_rows(flat)

    def flatten_rows(self, params: dict) -> torch.Tensor:
        return self.layout.flatten_rows(params)

    def leaves(self, params: dict) -> list[torch.Tensor]:
        return [params[k] for k in self.layout.names]


def as_objective(loss: Any, n: int | None = None, p: int | None = None, **kwargs) -> Objective:
    """An :class:`Objective` from an Objective, a Problem, or a function ``loss_i(theta, idx)``
    (which needs ``n`` and ``p``)."""
    from ..problem import Problem

    if isinstance(loss, Objective):
        return loss
    if isinstance(loss, Problem):
        return ProblemObjective(loss)
    if callable(loss):
        if n is None or p is None:
            raise ConfigError("a per-sample loss function needs n (samples) and p (parameters)",
                              "call simulate(loss_i, theta0, n=..., ...)")
        return FlatObjective(loss, n, p, **kwargs)
    raise ConfigError(f"cannot run trajectories on a {type(loss).__name__}",
                      "pass a Problem, an Objective or a function loss_i(theta, idx) -> [m]")


# ----------------------------------------------------------------------------- seeds and subsets
def trajectory_seeds(seed: int, trajectories: int) -> list[int]:
    """One 63-bit seed per trajectory, ``numpy.random.SeedSequence(seed).spawn(T)``: the first k
    seeds do not depend on T, and different ``seed`` give unrelated streams."""
    return [int(c.generate_state(1, np.uint64)[0] >> np.uint64(1))
            for c in np.random.SeedSequence(int(seed)).spawn(int(trajectories))]


def eval_subset(n: int, samples: int | None, seed: int) -> torch.Tensor | None:
    """Sorted indices of a seeded random subset of ``samples`` of ``n`` (None: all samples)."""
    if samples is None or samples >= n:
        return None
    if samples < 1:
        raise ConfigError(f"--eval-samples must be positive, got {samples}",
                          "pass e.g. --eval-samples 256")
    g = torch.Generator().manual_seed(int(seed))
    return torch.randperm(n, generator=g)[:samples].sort().values


# ----------------------------------------------------------------------------- results
@dataclass(frozen=True)
class Trajectories:
    """T trajectories of one dynamics: the loss ``L(θ_t)`` (on the evaluation subset) and the
    distance ``‖θ_t − θ_0‖`` of each trajectory at each recorded step (``[T, R]``, float64), and
    optionally ``λ_max`` of the Hessian at a few trajectories every K steps (``eig_values[E, k]``).
    ``computed`` is how many trajectories were actually simulated (1 for deterministic ``gd``)."""

    dynamics: str
    record_steps: torch.Tensor
    losses: torch.Tensor
    distances: torch.Tensor
    seeds: tuple[int, ...]
    settings: dict
    seconds: float
    computed: int
    eig_steps: torch.Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.int64))
    eig_values: torch.Tensor = field(default_factory=lambda: torch.zeros(0, 0, dtype=torch.float64))
    final: torch.Tensor | None = None

    @property
    def trajectories(self) -> int:
        return int(self.losses.shape[0])

    @property
    def steps(self) -> int:
        return int(self.record_steps[-1])

    @property
    def start_loss(self) -> float:
        return float(self.losses[0, 0])

    @property
    def mean_loss(self) -> torch.Tensor:
        """Mean over trajectories at each recorded step (inf once any trajectory diverged)."""
        return self.losses.mean(0)

    @property
    def throughput(self) -> float:
        """Trajectories × steps per second (of the trajectories actually computed)."""
        return self.computed * self.steps / self.seconds if self.seconds > 0 else math.inf

    def to_dict(self) -> dict:
        return {"dynamics": self.dynamics, "trajectories": self.trajectories,
                "computed": self.computed,
                "steps": self.steps, "record_steps": self.record_steps.tolist(),
                "losses": self.losses.tolist(), "distances": self.distances.tolist(),
                "seeds": list(self.seeds), "settings": dict(self.settings), "seconds": self.seconds,
                "trajectory_steps_per_second": self.throughput,
                "eig_steps": self.eig_steps.tolist(), "eig_values": self.eig_values.tolist()}


@dataclass(frozen=True)
class Descent:
    """Full-batch gradient descent to a tolerance: the final parameters, the steps taken, the loss
    at each step (``losses[t] = L(θ_t)``, the last one at ``theta``) and whether the loss fell below
    the tolerance."""

    theta: torch.Tensor
    steps: int
    losses: torch.Tensor
    converged: bool
    seconds: float

    @property
    def loss(self) -> float:
        return float(self.losses[-1])


# ----------------------------------------------------------------------------- vectorised kernels
def _slice(obj: Objective, params: Any, a: int, b: int) -> Any:
    if isinstance(params, dict):
        return {k: v[a:b] for k, v in params.items()}
    return params[a:b]


def _cat(chunks: list[list[torch.Tensor]]) -> list[torch.Tensor]:
    """Concatenate per-trajectory-chunk lists of leaves (no copy for a single chunk)."""
    return list(chunks[0]) if len(chunks) == 1 else [torch.cat(parts) for parts in zip(*chunks)]


def _add(acc: list | None, new: list) -> list:
    return list(new) if acc is None else [x + y for x, y in zip(acc, new)]


class _Kernels:
    """The batched products of one run: everything vmapped over the trajectory axis, chunked over
    trajectories (memory) and over samples in chunks of a size fixed by n (reproducibility)."""

    def __init__(self, obj: Objective, chunk: int = CHUNK, memory: int = MEMORY) -> None:
        self.obj = obj
        self.chunk = int(chunk)
        self.sample_chunk = max(1, min(obj.n, int(chunk)))
        self.traj_chunk = max(1, int(chunk) // self.sample_chunk)
        self.memory = memory
        self.itemsize = torch.empty((), dtype=obj.dtype).element_size()
        self.all = torch.arange(obj.n, device=obj.device)

    def _traj(self, T: int, per: int | None = None) -> list[tuple[int, int]]:
        c = self.traj_chunk if per is None else per
        return [(a, min(T, a + c)) for a in range(0, T, c)]

    def full_grad(
        self, P: Any, T: int, W: torch.Tensor | None
    ) -> tuple[list[torch.Tensor], torch.Tensor]:
        """``Σ_i w_ti ∇l_i(θ_t)`` (``w = 1/n`` when W is None) and ``Σ_i l_i(θ_t)`` per
        trajectory."""
        obj = self.obj
        uniform = torch.full((obj.n,), 1.0 / obj.n, dtype=obj.dtype, device=obj.device)
        grads, sums = [], []
        for a, b in self._traj(T):
            Pc = _slice(obj, P, a, b)
            acc, tot = None, None
            for s in range(0, obj.n, self.sample_chunk):
                idx = self.all[s : s + self.sample_chunk]
                if W is None:
                    g, ls = vmap(lambda q, i, w: fx.weighted_loss_grad(obj, q, i, w),
                                 in_dims=(0, None, None))(Pc, idx,
                                                          uniform[s : s + self.sample_chunk])
                else:
                    g, ls = vmap(lambda q, i, w: fx.weighted_loss_grad(obj, q, i, w),
                                 in_dims=(0, None, 0))(Pc, idx, W[a:b, s : s + self.sample_chunk])
                acc = _add(acc, obj.leaves(g))
                tot = ls if tot is None else tot + ls
            grads.append(acc)
            sums.append(tot)
        return _cat(grads), (sums[0] if len(sums) == 1 else torch.cat(sums))

    def batch_grad(self, P: Any, T: int, idx: torch.Tensor) -> list[torch.Tensor]:
        """``(1/B) Σ_{i∈B_t} ∇l_i(θ_t)`` for the per-trajectory indices ``idx[T, B]``."""
        obj = self.obj
        w = torch.full((idx.shape[1],), 1.0 / idx.shape[1], dtype=obj.dtype, device=obj.device)
        per = max(1, self.chunk // idx.shape[1])
        out = []
        for a, b in self._traj(T, per):
            g, _ = vmap(lambda q, i: fx.weighted_loss_grad(obj, q, i, w))(
                _slice(obj, P, a, b), idx[a:b]
            )
            out.append(obj.leaves(g))
        return _cat(out)

    def sample_grads(
        self, P: Any, T: int, idx: torch.Tensor, reduce: Callable[[list[torch.Tensor]], list]
    ) -> list:
        """``reduce`` applied to the per-sample gradients ``[t, m, *shape]`` of ``idx[T, m]``,
        chunked over trajectories so that at most ``memory`` bytes of them exist at once."""
        obj = self.obj
        m = idx.shape[1]
        per = max(1, min(self.chunk // m, self.memory // max(1, m * obj.p * self.itemsize)))
        out = []
        for a, b in self._traj(T, per):
            g = vmap(lambda q, i: fx.per_sample_param_grads(obj, q, i))(
                _slice(obj, P, a, b), idx[a:b]
            )
            out.append(reduce(obj.leaves(g)))
        return _cat(out)

    def losses(self, P: Any, T: int, idx: torch.Tensor | None) -> torch.Tensor:
        """``(1/|S|) Σ_{i∈S} l_i(θ_t)`` per trajectory, S = ``idx`` (all samples when None)."""
        obj = self.obj
        idx = self.all if idx is None else idx
        out = []
        with torch.no_grad():
            for a, b in self._traj(T):
                Pc = _slice(obj, P, a, b)
                tot = None
                for s in range(0, idx.numel(), self.sample_chunk):
                    v = vmap(lambda q, i: obj(q, i).sum(), in_dims=(0, None))(Pc,
                        idx[s : s + self.sample_chunk])
                    tot = v if tot is None else tot + v
                out.append(tot)
        return (out[0] if len(out) == 1 else torch.cat(out)).double() / idx.numel()


# ----------------------------------------------------------------------------- Hessian at one point
class ObjectiveHessian(LinearOperator):
    """``H = (1/|S|) Σ_{i∈S} ∇²l_i(θ)`` of an objective at a fixed θ (S: all samples or ``idx``),
    by forward-over-reverse products (:func:`landscape.curvature.functional.loss_hvp`)."""

    block_size = 16

    def __init__(self, obj: Objective, theta: torch.Tensor, idx: torch.Tensor | None = None,
                 chunk: int = 4096) -> None:
        super().__init__(obj.p, obj.dtype, obj.device)
        self.obj, self.theta = obj, theta.detach()
        self.idx = torch.arange(obj.n, device=obj.device) if idx is None else idx
        self.chunk = chunk

    def _matmat(self, V: torch.Tensor) -> torch.Tensor:
        obj = self.obj
        rows = V.T.contiguous()
        Vp = obj.rows(rows)
        params = obj.one(self.theta)
        out = torch.zeros_like(rows)
        for s in range(0, self.idx.numel(), self.chunk):
            out += obj.flatten_rows(fx.loss_hvp(obj, params, self.idx[s : s + self.chunk], Vp))
        return (out / self.idx.numel()).T


def lambda_max(obj: Objective, theta: torch.Tensor, idx: torch.Tensor | None = None,
               tol: float = 1e-4,
               seed: int = 0) -> float:
    """The largest Hessian eigenvalue at ``theta`` (dense ``eigvalsh`` for p ≤ 64, else Lanczos)."""
    op = ObjectiveHessian(obj, theta, idx)
    if obj.p <= 64:
        return float(torch.linalg.eigvalsh(op.dense().double()).max())
    from ..estimators import top_eigenvalues

    return float(top_eigenvalues(op, k=1, tol=tol, seed=seed).values[0])


# ----------------------------------------------------------------------------- gradient descent
def descend(loss: Any, theta0: torch.Tensor, lr: float, *, tol: float, max_steps: int = 10000,
            n: int | None = None, chunk: int = CHUNK, progress: Callable[[int],
                None] | None = None) -> Descent:
    """Full-batch gradient descent ``θ ← θ − η ∇L(θ)`` from ``theta0`` until ``L(θ) < tol`` or
    ``max_steps`` steps (the lecture's Figure 19 protocol: GD to near convergence first).
    A loss that turns NaN or infinite raises :class:`~landscape.errors.NumericalError`."""
    obj = as_objective(loss, n=n, p=theta0.numel())
    _check_positive("lr", lr)
    t0 = time.perf_counter()
    flat = theta0.detach().to(device=obj.device, dtype=obj.dtype).reshape(1, -1).clone()
    obj.rows(flat)
    one = obj.one(flat[0])
    size = max(1, min(obj.n, int(chunk)))
    idx = torch.arange(obj.n, device=obj.device)
    w = torch.full((obj.n,), 1.0 / obj.n, dtype=obj.dtype, device=obj.device)
    losses: list[float] = []
    converged = False
    for step in range(int(max_steps) + 1):
        g, total = None, 0.0
        for s in range(0, obj.n, size):  # one trajectory: no vmap, same chunking as simulate
            gs, ls = fx.weighted_loss_grad(obj, one, idx[s : s + size], w[s : s + size])
            g = _add(g, obj.leaves(gs))
            total += float(ls)
        value = total / obj.n
        losses.append(value)
        if not math.isfinite(value):
            raise NumericalError(f"gradient descent diverged at step {step} (loss {value})",
                                 "lower --lr: the minimum GD reaches must satisfy λ_max ≤ 2/η")
        if value < tol:
            converged = True
            break
        if step == max_steps:
            break
        for leaf, d in zip(obj.leaves(obj.one(flat[0])), g):
            leaf.sub_(d.mul_(lr))
        if progress is not None:
            progress(1)
    return Descent(flat[0].clone(), len(losses) - 1, torch.tensor(losses, dtype=torch.float64),
                   converged,
                   time.perf_counter() - t0)


# ----------------------------------------------------------------------------- the simulation
def _check_positive(name: str, v: float) -> None:
    if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
        raise ConfigError(f"{name} must be a positive number, got {v!r}", f"pass a positive {name}")


def default_noise_samples(dynamics: str, n: int) -> int:
    """Samples whose per-sample gradients set each step's noise: all n for ``lb-full-noise``
    (one weighted pass), ``min(n, 64)`` for ``isotropic`` and ``lb-diag-noise``."""
    return n if dynamics == "lb-full-noise" else min(n, 64)


def simulate(
    loss: Any,
    theta0: torch.Tensor,
    dynamics: str = "sgd",
    *,
    lr: float,
    batch_size: int = 1,
    steps: int = 100,
    trajectories: int = 100,
    seed: int = 0,
    seeds: Sequence[int] | None = None,
    n: int | None = None,
    noise_samples: int | None = None,
    control_scale: float = 0.1,
    eval_idx: torch.Tensor | None = None,
    eval_every: int = 1,
    track_eig_every: int | None = None,
    eig_trajectories: int = 3,
    chunk: int = CHUNK,
    memory: int = MEMORY,
    keep_final: bool = False,
    progress: Callable[[int], None] | None = None,
) -> Trajectories:
    """Run ``trajectories`` trajectories of ``dynamics`` from ``theta0`` for ``steps`` steps, all
    at once (see the module docstring for the dynamics and the reproducibility contract).

    ``loss``: a Problem, an :class:`Objective`, or ``loss_i(theta[p], idx[m]) -> [m]`` with ``n``.
    ``seeds`` (one per trajectory) override ``trajectory_seeds(seed, trajectories)``.
    ``eval_idx``: the fixed evaluation subset of the recorded loss (all samples by default).
    Records every ``eval_every`` steps and at the last step; ``track_eig_every=K`` adds ``λ_max``
    of the Hessian (on the evaluation subset) at the first ``eig_trajectories`` trajectories
    every K steps. ``chunk``: (trajectory, sample) pairs per vmapped call; ``memory``: bytes of
    per-sample gradients held at once.
    """
    obj = as_objective(loss, n=n, p=theta0.numel(), dtype=theta0.dtype, device=theta0.device)
    if dynamics not in DYNAMICS:
        raise ConfigError(f"unknown dynamics {dynamics!r}", f"choose from {', '.join(DYNAMICS)}")
    _check_positive("lr", lr)
    for name, v in (("steps", steps), ("eval_every", eval_every)):
        if not isinstance(v, int) or v < 1:
            raise ConfigError(f"{name} must be a positive integer, got {v!r}",
                              f"pass a positive --{name.replace('_', '-')}")
    if seeds is None:
        if not isinstance(trajectories, int) or trajectories < 1:
            raise ConfigError(f"trajectories must be a positive integer, got {trajectories!r}",
                              "pass e.g. --trajectories 200")
        seeds = trajectory_seeds(seed, trajectories)
    seeds = tuple(int(s) for s in seeds)
    if not seeds:
        raise ConfigError("no trajectories to run", "pass at least one seed")
    N, B = obj.n, int(batch_size)
    if not 1 <= B <= N:
        raise ConfigError(f"batch size {B} is not between 1 and the {N} samples",
                          f"pass --batch-size in 1..{N}")
    m = default_noise_samples(dynamics, N) if noise_samples is None else int(min(noise_samples, N))
    if dynamics == "isotropic" and m < 2:
        raise ConfigError(
            "isotropic noise estimates tr Σ from per-sample gradients and needs ≥ 2 samples, got "
            f"{m}",
            "pass --noise-samples 2 or more",
        )
    if m < 1:
        raise ConfigError(f"noise samples must be positive, got {m}",
                          "pass --noise-samples 1 or more")
    if not (math.isfinite(control_scale) and control_scale >= 0):
        raise ConfigError(f"control scale must be ≥ 0, got {control_scale}",
                          "pass e.g. --control-scale 0.1")
    if track_eig_every is not None and track_eig_every < 1:
        raise ConfigError(f"--track-eig-every must be positive, got {track_eig_every}",
                          "pass e.g. 50")

    t_start = time.perf_counter()
    T_all = len(seeds)
    deterministic = dynamics == "gd"
    run_seeds = seeds[:1] if deterministic else seeds
    T = len(run_seeds)
    gens = [torch.Generator().manual_seed(s) for s in run_seeds]
    kern = _Kernels(obj, chunk, memory)
    dev, dt = obj.device, obj.dtype

    theta0 = theta0.detach().to(device=dev, dtype=dt).reshape(-1)
    flat = theta0.expand(T, -1).clone()
    delta = torch.empty_like(flat)
    P = obj.rows(flat)
    leaves = obj.leaves(P)
    c_B = sgd_noise_factor(N, B)
    lb_scale = _lb_scale(N, B)

    record = sorted(set(range(0, steps, eval_every)) | {steps})
    rec_at = {s: k for k, s in enumerate(record)}
    losses = torch.full((T, len(record)), math.nan, dtype=torch.float64)
    dists = torch.zeros(T, len(record), dtype=torch.float64)
    eig_steps: list[int] = []
    eig_vals: list[list[float]] = []
    k_eig = min(eig_trajectories, T_all)

    def rows_of(draws: list[torch.Tensor]) -> torch.Tensor:
        return torch.stack(draws).to(dev)

    def subset(g: torch.Generator, size: int) -> torch.Tensor:
        return torch.arange(N) if size >= N else torch.randperm(N, generator=g)[:size]

    def observe(step: int, full_sums: torch.Tensor | None) -> None:
        if step in rec_at:
            k = rec_at[step]
            if full_sums is not None and eval_idx is None:
                losses[:, k] = full_sums.double().cpu() / N
            else:
                losses[:, k] = kern.losses(P, T, eval_idx).cpu()
            torch.sub(flat, theta0, out=delta)  # in place: no fresh [T, p] buffer per record
            dists[:, k] = torch.linalg.vector_norm(delta, dim=1).double().cpu()
        if track_eig_every is not None and step % track_eig_every == 0:
            eig_steps.append(step)
            vals = [lambda_max(obj, flat[j], eval_idx,
                               tol=1e-3) if bool(torch.isfinite(flat[j]).all()) else math.nan
                    for j in range(min(k_eig, T))]
            eig_vals.append(
                vals + vals[-1:] * (k_eig - len(vals))
            )  # gd: one trajectory, replicated

    for step in range(steps):
        full_sums = None
        noise: list[torch.Tensor] | None = None
        if dynamics == "sgd":
            idx = rows_of([torch.randperm(N, generator=g)[:B] for g in gens])
            observe(step, None)
            direction = kern.batch_grad(P, T, idx)
        elif dynamics == "gd":
            direction, full_sums = kern.full_grad(P, T, None)
            observe(step, full_sums)
        elif dynamics == "small-noise":
            # weights (1−κ)/n + κ/B·1[i∈B_t]: g + κ(g_B − g) in one weighted pass
            W = torch.full((T, N), (1.0 - control_scale) / N, dtype=dt)
            for j, g in enumerate(gens):
                W[j, torch.randperm(N, generator=g)[:B]] += control_scale / B
            direction, _ = kern.full_grad(P, T, W.to(dev))
            observe(step, None)
        elif dynamics == "lb-full-noise":
            # weights 1/n + s σ_i/√m on the subset S: g + s (1/√m) Σ_{i∈S} σ_i g_i in one pass
            W = torch.full((T, N), 1.0 / N, dtype=dt)
            for j, g in enumerate(gens):
                S = subset(g, m)
                sigma = rules.rademacher_signs(S.numel(), g, W)  # as lb-full-noise draws them
                W[j, S] += lb_scale / math.sqrt(m) * sigma
            direction, _ = kern.full_grad(P, T, W.to(dev))
            observe(step, None)
        # isotropic, lb-diag-noise: full gradient + noise from per-sample gradients of a subset
        else:
            S_list, z_list = [], []
            for g in gens:
                S_list.append(subset(g, m))
                z_list.append(torch.randn(obj.p, generator=g, dtype=dt))
            S = rows_of(S_list)
            Z = obj.leaves(obj.rows(rows_of(z_list)))
            direction, full_sums = kern.full_grad(P, T, None)
            observe(step, full_sums)
            if dynamics == "isotropic":
                ss = kern.sample_grads(P, T, S, _centered_square_sum)[0]  # [T]
                # σ² = c_B · tr Σ̂ / p,  tr Σ̂ = (n−1)/n · ss/(m−1)   (unbiased; exact for m = n)
                var = c_B * (N - 1) / N * ss / (m - 1) / obj.p
                sd = var.clamp_min(0).sqrt()
                noise = [z.mul_(sd.reshape(-1, *([1] * (z.dim() - 1)))) for z in Z]
            else:
                # s · sqrt(diag F̂) ⊙ z,  diag F̂ = (1/m) Σ_{i∈S} g_i²
                # (sgd-covariance-noise Alg. 1)
                noise = rules.diag_noise(kern.sample_grads(P, T, S, _mean_square), lb_scale, Z)
        if noise is not None:
            direction = [d.add_(e) for d, e in zip(direction, noise)]
        for leaf, d in zip(leaves, direction):
            leaf.sub_(d.mul_(lr))  # θ ← θ − η d, in place (same rounding as θ − (η d))
        if progress is not None:
            progress(1)
    observe(steps, None)

    seconds = time.perf_counter() - t_start
    if deterministic and T_all > 1:
        losses, dists = losses.expand(T_all, -1).clone(), dists.expand(T_all, -1).clone()
    final = None
    if keep_final:
        final = flat.detach().clone() if not deterministic else flat.expand(T_all, -1).clone()
    settings = {"lr": float(lr), "batch_size": B, "steps": steps, "trajectories": T_all, "n": N,
                "p": obj.p,
                "noise_samples": m if dynamics in ("isotropic", "lb-diag-noise",
                                                   "lb-full-noise") else None,
                "control_scale": float(control_scale) if dynamics == "small-noise" else None,
                "eval_samples": None if eval_idx is None else int(eval_idx.numel()),
                "eval_every": eval_every,
                "sgd_noise_factor": c_B,
                "lb_noise_scale": lb_scale if dynamics.startswith("lb-") else None,
                "dtype": str(dt).replace("torch.", ""), "device": str(dev)}
    return Trajectories(dynamics, torch.tensor(record, dtype=torch.int64), losses, dists, seeds,
                        settings,
                        seconds, T, torch.tensor(eig_steps, dtype=torch.int64),
                        torch.tensor(eig_vals, dtype=torch.float64).reshape(len(eig_steps), k_eig),
                        final)


def _lb_scale(n: int, batch_size: int) -> float:
    """``sqrt((M_L − M_S)/(M_L M_S))`` with ``M_L = n``, ``M_S = B`` (sgd-covariance-noise eq.
    5)."""
    return rules.covariance_noise_scale(n, batch_size)


def _centered_square_sum(grads: list[torch.Tensor]) -> list[torch.Tensor]:
    """``Σ_{i∈S} ‖g_i − ḡ_S‖²`` per trajectory from leaves ``[t, m, *shape]``."""
    total = None
    for g in grads:
        g = g.reshape(g.shape[0], g.shape[1], -1)
        v = (g - g.mean(1, keepdim=True)).pow(2).sum((1, 2))
        total = v if total is None else total + v
    return [total]


def _mean_square(grads: list[torch.Tensor]) -> list[torch.Tensor]:
    """``(1/m) Σ_{i∈S} g_i²`` elementwise per trajectory: leaves ``[t, *shape]``."""
    return [g.pow(2).mean(1) for g in grads]
