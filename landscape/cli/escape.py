"""``landscape escape``: from a minimum found by full-batch GD (or a checkpoint), run many
trajectories of SGD and its noise surrogates at once and measure how fast they leave it, beside
the lecture's stability theory (Figure 19, Theorems 3-4; docs/algorithms.md §2). The experiment
is :mod:`landscape.escape.experiment`; this module parses its flags and prints its tables."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..escape.experiment import ESCAPE, START
from ..schema import names
from . import output
from .common import Outputs, Stopwatch, declared_options, join, outputs, parse_kv
from .options import (
    DataArgOpt,
    DeviceOpt,
    DtypeOpt,
    ModelArgOpt,
    ProgressOpt,
    SeedOpt,
    names_option,
)


@output.handle_errors
@declared_options({**START, **ESCAPE})
@outputs(plot=True)
def escape(
    checkpoint: Annotated[
        Path | None,
        typer.Argument(help="Start from this checkpoint (landscape's format, or a state_dict with "
                            "--model/--data). Without it: --model on --data, trained by GD.",
                       show_default=False),
    ] = None,
    to: names_option("--to", "Dynamics: sgd, isotropic, gd, small-noise, lb-diag-noise, "
                             "lb-full-noise (default sgd,gd)") = None,
    model_arg: ModelArgOpt = None,
    data_arg: DataArgOpt = None,
    settings: dict | None = None,
    seed: SeedOpt = 0,
    device: DeviceOpt = "cpu",
    dtype: DtypeOpt = "float32",
    progress: ProgressOpt = True,
    io: Outputs = None,
) -> None:
    """Escape from a GD minimum: many SGD (or noise-model) trajectories at once, measured against
    the stability theory (fraction escaped, median escape step, growth rate vs γ_0)."""
    from ..escape.experiment import prepare, run_escape

    clock = Stopwatch()
    join(device)
    output.check_writable(io.out, io.plot)
    problem, identity, s = prepare(
        checkpoint, settings, to=None if to is None else [n.lower() for n in names(to)],
        model_kwargs=parse_kv(model_arg, "--model-arg"),
        data_kwargs=parse_kv(data_arg, "--data-arg"), seed=seed, device=device, dtype=dtype)
    with output.progress(progress and not io.json) as bar:
        result = run_escape(problem, s, progress=bar, warn=output.warn)
    report = result.report(problem, identity)
    report["seconds"] = clock()
    if io.out is not None:
        result.save(io.out, report)
    if io.plot is not None:
        result.figure(io.plot)
    if io.json:
        output.emit_json(report)
        return
    for table in result.tables(report):
        output.table(*table)
    output.written(io.out, io.plot)
