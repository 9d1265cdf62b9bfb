"""``landscape interpolate``: L((1 − α) θ_A + α θ_B) between two checkpoints of one architecture
(Keskar et al. 2017; the lecture's Figure 6)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..slices.settings import SLICE
from . import output
from .common import Outputs, ProblemSpec, Stopwatch, header, measuring
from .slice import build_problems, emit


@measuring(
    {k: SLICE[k] for k in ("batch_points", "recompute_bn", "test")},
    plot=True,
    split=False,
    params=False,
    product_batch=1024,
)
def interpolate(
    checkpoint_a: Annotated[
        Path,
        typer.Argument(
            help="Checkpoint A (α = 0); its data and loss are used.", show_default=False
        ),
    ],
    checkpoint_b: Annotated[
        Path, typer.Argument(help="Checkpoint B (α = 1), same architecture.", show_default=False)
    ],
    range_: Annotated[tuple[float, float], typer.Option("--range", help="LO HI of α.")] = (
        -0.5,
        1.5,
    ),
    points: Annotated[int, typer.Option("--points", help="Values of α.")] = 81,
    settings: dict | None = None,
    spec: ProblemSpec = None,
    io: Outputs = None,
) -> None:
    """Loss and accuracy on the line (1 − α) θ_A + α θ_B through two checkpoints."""
    batch_points, recompute_bn, test = (settings[k] for k in ("batch_points", "recompute_bn",
                                                              "test"))
    import numpy as np
    import torch

    from ..errors import ConfigError
    from ..slices import axis, check_same_architecture, theta_from_state
    from ..slices import interpolate as interpolate_line
    from ..slices.grid import slice_tree, values_at

    clock = Stopwatch()
    if recompute_bn and spec.train_mode:
        raise ConfigError("--recompute-bn re-estimates running statistics for eval mode",
                          "drop --train-mode")
    output.check_writable(io.out, io.plot)
    ckpt_b = spec.checkpoint(checkpoint_b)
    ckpt_a, problems = build_problems(checkpoint_a, spec, test=test, params=None)
    if ckpt_a.model.get("name") != ckpt_b.model.get("name"):
        raise ConfigError(
            f"the architectures differ: A is a {ckpt_a.model.get('name')!r} model, B a "
            f"{ckpt_b.model.get('name')!r} model",
            "interpolate between checkpoints of the same model",
        )
    ka = {k: v for k, v in (ckpt_a.model.get("kwargs") or {}).items() if k != "seed"}
    kb = {k: v for k, v in (ckpt_b.model.get("kwargs") or {}).items() if k != "seed"}
    if ka != kb:
        diff = sorted(k for k in set(ka) | set(kb) if ka.get(k) != kb.get(k))
        raise ConfigError(
            f"the architectures differ: model options {', '.join(diff[:3])} of A and B differ",
            "interpolate between checkpoints of the same model",
        )
    check_same_architecture(ckpt_a.state_dict, ckpt_b.state_dict, str(checkpoint_a),
                            str(checkpoint_b))
    if ckpt_a.loss != ckpt_b.loss:
        output.info(
            f"note: A was trained with {ckpt_a.loss}, B with {ckpt_b.loss}; using A's "
            f"({ckpt_a.loss})"
        )
    train = problems["train"]
    train.loss_value()
    theta_a = train.theta
    theta_b = theta_from_state(ckpt_b.state_dict, train.layout, like=theta_a,
                               where=str(checkpoint_b))
    if not bool(torch.isfinite(theta_b).all()):
        raise ConfigError(f"{checkpoint_b} holds NaN or infinite weights",
                          "interpolate toward a finite checkpoint")
    alphas = axis(range_[0], range_[1], points)
    with output.progress(not io.json) as start:
        result = interpolate_line(problems, ckpt_b.state_dict, alphas, batch_points=batch_points,
                                  recompute_bn_stats=recompute_bn,
                                  progress=start("interpolation points", points))
    bufs_b = {n: ckpt_b.state_dict[n].to(b) for n,
              b in train.model.named_buffers() if b.is_floating_point()}
    ends = {"a": str(checkpoint_a), "b": str(checkpoint_b),
            "A": values_at(problems, theta_a, recompute_bn_stats=recompute_bn),
            "B": values_at(problems, theta_b, bufs_b or None, recompute_bn_stats=recompute_bn)}
    settings = {"range": list(range_), "points": points, "recompute_bn": recompute_bn,
                "splits": list(problems),
                **spec.settings()}
    head = header(ckpt_a, train)
    head["identity_b"] = ckpt_b.identity()
    distance = float(torch.linalg.vector_norm((theta_b - theta_a).double()))
    tree, attrs = slice_tree(result, kind="interpolation", header=head, settings=settings,
                             endpoints=ends)
    attrs["distance"] = distance
    report = {**head, "kind": "interpolation", "settings": attrs["settings"], "distance": distance,
              **result.to_dict(), "endpoints": ends, "seconds": clock()}
    rows = [(k.replace("_", " "), f"{ends['A'].get(k, float('nan')):.6g}",
             f"{ends['B'].get(k, float('nan')):.6g}",
             f"{np.nanmin(v):.6g}", f"{np.nanmax(v):.6g}") for k, v in result.values.items()]
    caption = (
        f"{points} points, ‖θ_B − θ_A‖ = {distance:.4g}, {result.points_per_second:.1f} points/s, "
        f"{train.count_text()}, {report['seconds']:.2f} s"
    )
    emit(report, tree, attrs, io=io, kind="curve",
         title=f"Interpolation {checkpoint_a} (α = 0) → {checkpoint_b} (α = 1)",
         columns=["quantity", "A", "B", "min on line", "max on line"], rows=rows, caption=caption)
