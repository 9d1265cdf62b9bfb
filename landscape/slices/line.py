"""1-D interpolation between two checkpoints: ``L((1 − α) θ_A + α θ_B)``.

Keskar et al. 2017 (the lecture's Figure 6, GD against SGD solutions; docs/algorithms.md §4). The
line is the slice through θ_A along ``d = θ_B − θ_A``, so α = 0 is A and α = 1 is B. Floating
buffers (BatchNorm running statistics) are interpolated the same way, running variances clipped at 0
outside [0, 1]; ``recompute_bn`` re-estimates them at every point instead."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..errors import CheckpointError, ConfigError
from ..problem import Problem
from .directions import theta_from_state
from .grid import GridResult, evaluate_grid, values_at


def check_same_architecture(a: dict, b: dict, name_a: str = "A", name_b: str = "B") -> None:
    """Raise CheckpointError unless the two state_dicts have the same names and shapes."""
    from ..io.checkpoint import state_dict_mismatch

    parts = state_dict_mismatch(b, a, (f"only in {name_a}:", f"only in {name_b}:",
                                       f"shapes differ ({name_b} vs {name_a}):"))
    if parts:
        raise CheckpointError(
            f"the architectures of {name_a} and {name_b} differ ({'; '.join(parts)})",
            "interpolate between checkpoints of the same model (same layers and widths)",
        )


def interpolate(
    problems: dict[str, Problem],
    state_b: dict[str, torch.Tensor],
    alphas: np.ndarray,
    *,
    batch_points: int | None = None,
    recompute_bn_stats: bool = False,
    progress: Callable[[int], None] | None = None,
) -> GridResult:
    """Loss (and accuracy) of each split at ``(1 − α) θ_A + α θ_B`` for every α.

    ``problems`` are built at checkpoint A (``{"train": ..., "test": ...}``); ``state_b`` is B's
    ``state_dict``. Every parameter of the problems' layout is interpolated; floating buffers too.
    """
    first = problems.get("train") or next(iter(problems.values()))
    theta_a = first.theta
    theta_b = theta_from_state(state_b, first.layout, like=theta_a, where="checkpoint B")
    named_bufs = dict(first.model.named_buffers())
    buf_names = [n for n, b in named_bufs.items() if b.is_floating_point()]
    missing = [n for n in buf_names if n not in state_b]
    if missing:
        raise CheckpointError(f"the architectures differ: checkpoint B has no buffer {missing[0]}",
                              "interpolate between checkpoints of the same model")
    bufs_a = {n: named_bufs[n].detach() for n in buf_names}
    bufs_b = {n: state_b[n].to(bufs_a[n]) for n in buf_names}
    for n in buf_names:
        if bufs_a[n].shape != bufs_b[n].shape:
            raise CheckpointError(
                f"the architectures differ: buffer {n} {list(bufs_b[n].shape)} vs "
                f"{list(bufs_a[n].shape)}",
                "interpolate between checkpoints of the same model",
            )

    def buffers(c: torch.Tensor) -> dict[str, torch.Tensor]:
        a = c[:, 0]
        out = {}
        for n in buf_names:
            s = (-1,) + (1,) * bufs_a[n].dim()
            v = (1 - a).reshape(s).to(bufs_a[n]) * bufs_a[n] + a.reshape(s).to(bufs_a[n]) * bufs_b[
                n
            ]
            out[n] = v.clamp_min(0) if n.endswith("running_var") else v
        return out

    return evaluate_grid(problems, theta_a, (theta_b - theta_a)[:, None], [np.asarray(alphas,
        dtype=np.float64)],
                         batch_points=batch_points, recompute_bn_stats=recompute_bn_stats,
                         buffers=buffers if buf_names else None, progress=progress)


def check_same_model(ckpt_a: Any, ckpt_b: Any, name_a: str = "A", name_b: str = "B") -> None:
    """Raise unless two checkpoints hold the same model: its name, its options (the seed aside)
    and its parameters' names and shapes."""
    if ckpt_a.model.get("name") != ckpt_b.model.get("name"):
        raise ConfigError(f"the architectures differ: A is a {ckpt_a.model.get('name')!r} model, "
                          f"B a {ckpt_b.model.get('name')!r} model",
                          "interpolate between checkpoints of the same model")
    ka, kb = ({k: v for k, v in (c.model.get("kwargs") or {}).items() if k != "seed"}
              for c in (ckpt_a, ckpt_b))
    if ka != kb:
        diff = sorted(k for k in set(ka) | set(kb) if ka.get(k) != kb.get(k))
        raise ConfigError(
            f"the architectures differ: model options {', '.join(diff[:3])} of A and B differ",
            "interpolate between checkpoints of the same model")
    check_same_architecture(ckpt_a.state_dict, ckpt_b.state_dict, name_a, name_b)


@dataclass
class Interpolation:
    """What :func:`interpolate_checkpoints` measured: the values on the line, at the two ends
    (``{"a": path, "b": path, "A": values, "B": values}``) and ``‖θ_B − θ_A‖``."""

    result: GridResult
    ends: dict
    distance: float


def interpolate_checkpoints(problems: dict[str, Problem], ckpt_b: Any, alphas: np.ndarray, *,
                            names: tuple[str, str] = ("A", "B"), batch_points: int | None = None,
                            recompute_bn: bool = False,
                            progress: Callable[[int], None] | None = None) -> Interpolation:
    """:func:`interpolate` from the problems of checkpoint A to checkpoint ``ckpt_b``, and the
    values at both ends (B with its own buffers)."""
    train = problems["train"]
    theta_a = train.theta
    theta_b = theta_from_state(ckpt_b.state_dict, train.layout, like=theta_a, where=names[1])
    if not bool(torch.isfinite(theta_b).all()):
        raise ConfigError(f"{names[1]} holds NaN or infinite weights",
                          "interpolate toward a finite checkpoint")
    result = interpolate(problems, ckpt_b.state_dict, alphas, batch_points=batch_points,
                         recompute_bn_stats=recompute_bn, progress=progress)
    bufs_b = {n: ckpt_b.state_dict[n].to(b) for n, b in train.model.named_buffers()
              if b.is_floating_point()}
    ends = {"a": names[0], "b": names[1],
            "A": values_at(problems, theta_a, recompute_bn_stats=recompute_bn),
            "B": values_at(problems, theta_b, bufs_b or None, recompute_bn_stats=recompute_bn)}
    distance = float(torch.linalg.vector_norm((theta_b - theta_a).double()))
    return Interpolation(result, ends, distance)

