"""``landscape interpolate``: L((1 − α) θ_A + α θ_B) between two checkpoints of one architecture
(Keskar et al. 2017; the lecture's Figure 6)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..results import Table
from ..slices.settings import SLICE
from . import output
from .common import Outputs, ProblemSpec, Stopwatch, build_problems, emit, header, measuring


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
    from ..errors import ConfigError
    from ..slices import axis, check_same_model, interpolate_checkpoints, value_rows
    from ..slices.grid import slice_tree

    batch_points, recompute_bn, test = (settings[k] for k in ("batch_points", "recompute_bn",
                                                              "test"))
    clock = Stopwatch()
    if recompute_bn and spec.train_mode:
        raise ConfigError("--recompute-bn re-estimates running statistics for eval mode",
                          "drop --train-mode")
    output.check_writable(io.out, io.plot)
    ckpt_b = spec.checkpoint(checkpoint_b)
    ckpt_a, problems = build_problems(checkpoint_a, spec, test=test, params=None)
    check_same_model(ckpt_a, ckpt_b, str(checkpoint_a), str(checkpoint_b))
    if ckpt_a.loss != ckpt_b.loss:
        output.info(f"note: A was trained with {ckpt_a.loss}, B with {ckpt_b.loss}; using A's "
                    f"({ckpt_a.loss})")
    train = problems["train"]
    train.loss_value()
    with output.progress(not io.json) as start:
        line = interpolate_checkpoints(problems, ckpt_b, axis(range_[0], range_[1], points),
                                       names=(str(checkpoint_a), str(checkpoint_b)),
                                       batch_points=batch_points, recompute_bn=recompute_bn,
                                       progress=start("interpolation points", points))
    head = {**header(ckpt_a, train), "identity_b": ckpt_b.identity()}
    settings = {"range": list(range_), "points": points, "recompute_bn": recompute_bn,
                "splits": list(problems), **spec.settings()}
    tree, attrs = slice_tree(line.result, kind="interpolation", header=head, settings=settings,
                             endpoints=line.ends)
    attrs["distance"] = line.distance
    report = {**head, "kind": "interpolation", "settings": attrs["settings"],
              "distance": line.distance, **line.result.to_dict(), "endpoints": line.ends,
              "seconds": clock()}
    table = Table(f"Interpolation {checkpoint_a} (α = 0) → {checkpoint_b} (α = 1)",
                  ["quantity", "A", "B", "min on line", "max on line"],
                  value_rows(line.result.values, [line.ends["A"], line.ends["B"]]),
                  f"{points} points, ‖θ_B − θ_A‖ = {line.distance:.4g}, "
                  f"{line.result.points_per_second:.1f} points/s, {train.count_text()}, "
                  f"{report['seconds']:.2f} s")
    emit(report, tree, attrs, table, io=io, kind="curve")
