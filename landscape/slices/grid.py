"""Loss and accuracy at many parameter points, several points per forward pass.

A chunk of ``P`` points ``θ_j`` is stacked into ``name -> [P, *shape]`` tensors and pushed through
``torch.func.vmap`` over ``torch.func.functional_call``: one batched forward pass per data batch
gives ``Σ_{i∈batch} l_i(θ_j)`` and the correct counts for all P points at once, with the exact
weights of :class:`~landscape.problem.Problem` (sums over batches divided by n).

Slices (Li et al. 2018; docs/algorithms.md §4): ``L(θ + α d)`` on a line, ``L(θ + α d_1 + β d_2)``
on a plane; the points of a chunk are generated from their coordinates, never all held at once."""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from torch.func import vmap

from ..errors import ConfigError
from ..problem import Problem

Progress = Callable[[int], None]


def _bn_modules(model: nn.Module) -> dict[str, nn.modules.batchnorm._BatchNorm]:
    return {n: m for n, m in model.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
            and m.track_running_stats}


def has_batchnorm(problem: Problem) -> bool:
    return bool(_bn_modules(problem.model))


def float_buffers(problem: Problem) -> list[str]:
    """Names of the floating-point buffers (BatchNorm running statistics)."""
    return [n for n, b in problem.model.named_buffers() if b.is_floating_point()]


def recompute_bn(problem: Problem, params: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """BatchNorm running statistics re-estimated at ``params`` over ALL of the problem's samples:
    one forward pass over the batches with BatchNorm in training mode (later layers see
    batch-normalised activations, as in ``torch.optim.swa_utils.update_bn``), while hooks sum each
    BatchNorm input's per-channel values and squares; then ``running_mean = S₁/N`` and ``running_var
    = (S₂ − N·mean²)/(N − 1)`` (unbiased, as BatchNorm keeps it). The sums are exact whatever the
    batch sizes and are added over ranks under torch.distributed, so the statistics are the whole
    data's. Returns the floating buffers ``name -> tensor``. One point at a time (slower)."""
    model = copy.deepcopy(problem.model)
    model.eval()
    bns = _bn_modules(model)
    sums: dict[str, list] = {}

    def hook(name):
        def record(module, inputs):
            x = inputs[0].detach().double()
            dims = [0, *range(2, x.dim())]
            acc = sums.setdefault(name, [0.0, 0.0, 0])
            acc[0] = acc[0] + x.sum(dim=dims)
            acc[1] = acc[1] + x.square().sum(dim=dims)
            acc[2] += x.numel() // x.shape[1]
        return record

    handles = [m.register_forward_pre_hook(hook(n)) for n, m in bns.items()]
    for m in bns.values():
        m.reset_running_stats()
        m.train()
    frozen = {n: t for n, t in problem.frozen.items() if n not in dict(model.named_buffers())}
    try:
        with torch.no_grad():
            for x, _ in problem.batches:
                problem.call((params, frozen), x, model)
    finally:
        for h in handles:
            h.remove()
    for name, m in bns.items():
        if name not in sums:
            continue
        s1, s2, count = sums[name]
        total = problem.reduce(torch.cat([s1, s2, torch.tensor([float(count)], dtype=torch.float64,
                                                               device=s1.device)]))
        c = s1.numel()
        s1, s2, count = total[:c], total[c : 2 * c], float(total[-1])
        mean = s1 / count
        var = (s2 - count * mean.square()) / max(count - 1.0, 1.0)
        m.running_mean.copy_(mean.to(m.running_mean.dtype))
        m.running_var.copy_(var.clamp_min(0).to(m.running_var.dtype))
    return {n: b.detach().clone() for n, b in model.named_buffers() if b.is_floating_point()}


def auto_batch_points(problem: Problem, rows: int = 16384, cap: int = 64) -> int:
    """Points per vmapped pass when none is given: about ``rows`` sample-rows per forward pass,
    ``clamp(rows // batch rows, 1, cap)``. On a CPU a forward over a large data batch is already
    compute-bound (stacking points then gains nothing: see benchmarks/bench_slice.py); stacking
    pays where batches are small (``--samples``) and on GPUs."""
    per = min(problem.batch_size, max(1, len(problem.source)))
    return int(min(cap, max(1, rows // max(per, 1))))


class PointEvaluator:
    """``L(θ_j)`` and accuracy at a block of points on one problem (one data split).

    ``evaluate(thetas [m, p], buffers=None)`` -> ``(loss [m], accuracy [m] | None)`` as float64 CPU
    tensors. ``batch_points`` points share each vmapped forward pass; ``batch_points=1`` uses a
    plain functional call per point (the reference the batched path is tested against). ``buffers``
    (``name -> [m, *shape]``) gives per-point floating buffers (BatchNorm statistics)."""

    def __init__(self, problem: Problem, batch_points: int | None = None) -> None:
        if batch_points is None:
            batch_points = auto_batch_points(problem)
        if batch_points < 1:
            raise ConfigError(f"--batch-points must be at least 1, got {batch_points}",
                              "pass e.g. --batch-points 32")
        self.problem = problem
        self.batch_points = batch_points
        x, y = problem.batches_of(1).first()
        with torch.no_grad():
            self.with_accuracy = problem.loss.correct(problem.forward(problem.params, x),
                                                      y) is not None
        #: what the accuracy counts: samples, or the tokens of a token loss
        self.counted = problem.tokens or problem.n

    def _one(self, params, bufs, x, y):
        pb = self.problem
        frozen = {n: t for n, t in pb.frozen.items() if n not in bufs}
        out = pb.call((params, frozen, bufs), x)
        loss = pb.loss.sum(out, y)
        correct = pb.loss.correct(out, y) if self.with_accuracy else loss.new_zeros(())
        return loss, correct.to(loss.dtype)

    def _chunk(
        self, thetas: torch.Tensor, bufs: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        pb = self.problem
        P = thetas.shape[0]
        total = torch.zeros(P, dtype=torch.float64, device=pb.device)
        correct = torch.zeros(P, dtype=torch.float64, device=pb.device)
        with torch.no_grad():
            if P == 1:
                params = pb.layout.unflatten(thetas[0])
                b1 = {n: t[0] for n, t in bufs.items()}
                for x, y in pb.batches:
                    lv, c = self._one(params, b1, x, y)
                    total += lv.double()
                    correct += c.double()
            else:
                stacked = pb.layout.unflatten_rows(thetas)
                f = vmap(self._one, in_dims=(0, 0, None, None))
                for x, y in pb.batches:
                    lv, c = f(stacked, bufs, x, y)
                    total += lv.double()
                    correct += c.double()
        total, correct = pb.reduce(total), pb.reduce(correct)
        return (total / pb.n).cpu(), (correct / self.counted).cpu()

    def evaluate(self, thetas: torch.Tensor, buffers: dict[str, torch.Tensor] | None = None,
                 progress: Progress | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        pb = self.problem
        thetas = thetas.to(device=pb.device, dtype=pb.dtype)
        losses, accs = [], []
        for i in range(0, thetas.shape[0], self.batch_points):
            chunk = thetas[i : i + self.batch_points]
            bufs = {n: t[i : i + self.batch_points].to(device=pb.device, dtype=pb.dtype)
                    for n, t in (buffers or {}).items()}
            lv, acc = self._chunk(chunk, bufs)
            losses.append(lv)
            accs.append(acc)
            if progress is not None:
                progress(chunk.shape[0])
        loss = torch.cat(losses)
        return loss, (torch.cat(accs) if self.with_accuracy else None)


@dataclass
class GridResult:
    """Values on a grid: ``axes`` (one array per dimension), ``values`` name -> array of the
    grid's shape (``train_loss``, ``train_accuracy``, ``test_loss``, ``test_accuracy``; entry
    ``[i, j]`` is at ``(axes[0][i], axes[1][j])``), ``points`` evaluated and ``seconds``."""

    axes: list[np.ndarray]
    values: dict[str, np.ndarray]
    points: int
    seconds: float
    settings: dict = field(default_factory=dict)

    @property
    def points_per_second(self) -> float:
        return self.points / max(self.seconds, 1e-12)

    def to_dict(self) -> dict:
        names = ["alpha", "beta"][: len(self.axes)]
        return {"grid": {n: a.tolist() for n, a in zip(names, self.axes)},
                "values": {k: v.tolist() for k, v in self.values.items()},
                "points": self.points, "seconds": self.seconds,
                "points_per_second": self.points_per_second}


def grid_coordinates(axes: Iterable[np.ndarray]) -> torch.Tensor:
    """``[m, k]`` coordinates of every grid point, the last axis fastest (``ij`` order)."""
    mesh = np.meshgrid(*[np.asarray(a, dtype=np.float64) for a in axes], indexing="ij")
    return torch.as_tensor(np.stack([m.reshape(-1) for m in mesh], axis=1))


def evaluate_grid(
    problems: dict[str, Problem],
    theta: torch.Tensor,
    directions: torch.Tensor,
    axes: list[np.ndarray],
    *,
    batch_points: int | None = None,
    recompute_bn_stats: bool = False,
    buffers: Callable[[torch.Tensor], dict[str, torch.Tensor]] | None = None,
    progress: Progress | None = None,
) -> GridResult:
    """Loss (and accuracy) of each split at ``θ + Σ_i c_i d_i`` for every grid point ``c``.

    ``problems``: ``{"train": Problem, "test": Problem}`` (any subset; same model and parameters).
    ``directions``: ``[p, k]`` with ``k = len(axes)``. ``recompute_bn_stats``: BatchNorm running
    statistics re-estimated at every point on the ``train`` problem's data (one point at a time,
    then evaluated batched). ``batch_points``: points per vmapped pass (None:
    :func:`auto_batch_points`). ``buffers(coords [P, k]) -> name -> [P, ...]`` supplies per-point
    buffers otherwise (interpolation uses it); by default the checkpoint's buffers are used."""
    if directions.dim() != 2 or directions.shape[1] != len(axes):
        raise ValueError(f"directions {tuple(directions.shape)} do not fit {len(axes)} axes")
    first = problems.get("train") or next(iter(problems.values()))
    if recompute_bn_stats and first.train_mode:
        raise ConfigError("--recompute-bn re-estimates running statistics for eval mode",
                          "drop --train-mode (or --recompute-bn)")
    if batch_points is None:
        batch_points = auto_batch_points(first)
    coords = grid_coordinates(axes)
    D = directions.to(device=first.device, dtype=first.dtype)
    theta = theta.to(device=first.device, dtype=first.dtype)
    evaluators = {s: PointEvaluator(pb, batch_points) for s, pb in problems.items()}
    do_bn = recompute_bn_stats and has_batchnorm(first)
    out: dict[str, list[torch.Tensor]] = {}
    t0 = time.perf_counter()
    for i in range(0, coords.shape[0], batch_points):
        c = coords[i : i + batch_points].to(device=first.device, dtype=first.dtype)
        thetas = theta + c @ D.T
        bufs = buffers(c) if buffers is not None else None
        if do_bn:
            per = [recompute_bn(first, first.layout.unflatten(t)) for t in thetas]
            bufs = {n: torch.stack([b[n] for b in per]) for n in per[0]}
        for split, ev in evaluators.items():
            loss, acc = ev.evaluate(thetas, bufs)
            out.setdefault(f"{split}_loss", []).append(loss)
            if acc is not None:
                out.setdefault(f"{split}_accuracy", []).append(acc)
        if progress is not None:
            progress(thetas.shape[0])
    seconds = time.perf_counter() - t0
    shape = tuple(len(a) for a in axes)
    values = {k: torch.cat(v).numpy().reshape(shape) for k, v in out.items()}
    return GridResult([np.asarray(a, dtype=np.float64) for a in axes], values, int(coords.shape[0]),
                      seconds,
                      {"batch_points": batch_points, "recompute_bn": bool(do_bn)})


def axis(lo: float, hi: float, points: int) -> np.ndarray:
    """``points`` evenly spaced values from ``lo`` to ``hi`` (both included)."""
    if points < 2:
        raise ConfigError(f"--points must be at least 2, got {points}", "pass e.g. --points 51")
    if not hi > lo:
        raise ConfigError(f"--range needs LO < HI, got {lo} {hi}", "pass e.g. --range -1 1")
    return np.linspace(lo, hi, points)


SLICE_FORMAT = "landscape-slice"
SLICE_VERSION = 1


def slice_tree(
    result: GridResult,
    *,
    kind: str = "slice",
    directions=None,
    header: dict | None = None,
    settings: dict | None = None,
    origin: dict | None = None,
    endpoints: dict | None = None,
    save_vectors: bool = True,
) -> tuple[dict, dict]:
    """``(tree, attrs)`` of a slice or interpolation file: groups ``grid`` (alpha[, beta]),
    ``values`` (``train_loss`` ... of the grid's shape), ``directions`` (description and, with
    ``save_vectors``, the ``[p, k]`` vectors), ``trajectory`` (coords ``[T, k]``, labels),
    ``origin`` / ``endpoints`` (values there); root attributes: format, kind, dims, the header
    (checkpoint identity, ...), settings, timing. ``{**attrs, **tree}`` is what the figures read,
    in memory or from ``read_tree(path)``."""
    d = result.to_dict()
    tree: dict = {"grid": {k: np.asarray(v) for k, v in d["grid"].items()},
                  "values": {k: np.asarray(v, dtype=np.float64) for k, v in result.values.items()}}
    if directions is not None:
        desc = {k: v for k, v in directions.describe().items() if not k.startswith("trajectory")}
        if save_vectors:
            desc["vectors"] = directions.vectors.detach().double().cpu().numpy()
        tree["directions"] = desc
        if directions.trajectory is not None:
            tree["trajectory"] = {"coords": directions.trajectory.double().cpu().numpy(),
                                  "labels": list(directions.labels)}
    if origin:
        tree["origin"] = origin
    if endpoints:
        tree["endpoints"] = endpoints
    attrs = {"format": SLICE_FORMAT, "version": SLICE_VERSION, "kind": kind,
             "dims": len(result.axes),
             **(header or {}), "settings": {**(settings or {}), **result.settings},
             "points": result.points, "seconds": round(result.seconds, 4),
             "points_per_second": round(result.points_per_second, 2)}
    return tree, attrs


def values_at(problems: dict[str, Problem], theta: torch.Tensor, buffers: dict | None = None,
              recompute_bn_stats: bool = False) -> dict[str, float]:
    """``{"train_loss": ..., "train_accuracy": ..., ...}`` at one parameter vector (with the given
    floating buffers, or BatchNorm statistics re-estimated there)."""
    first = problems.get("train") or next(iter(problems.values()))
    theta = theta.to(device=first.device, dtype=first.dtype)
    if recompute_bn_stats and has_batchnorm(first):
        buffers = recompute_bn(first, first.layout.unflatten(theta))
    out = {}
    for split, pb in problems.items():
        bufs = {n: b[None] for n, b in (buffers or {}).items()}
        loss, acc = PointEvaluator(pb, 1).evaluate(theta[None], bufs or None)
        out[f"{split}_loss"] = float(loss[0])
        if acc is not None:
            out[f"{split}_accuracy"] = float(acc[0])
    return out
