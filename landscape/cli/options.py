"""Shared option aliases of every command (one spelling and one help text each)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..metrics import DEFAULT_METRICS, METRICS

CheckpointArg = Annotated[
    Path,
    typer.Argument(
        help="Checkpoint file: landscape's format, or a state_dict with --model/--data.",
        show_default=False,
    ),
]
ModelOpt = Annotated[
    str | None,
    typer.Option(
        "--model",
        help="Model factory for a foreign state_dict: FILE.py:FUNCTION or package.module:FUNCTION "
             "(returns an nn.Module).",
    ),
]
DataOpt = Annotated[
    str | None,
    typer.Option(
        "--data",
        help="Data factory for a foreign state_dict: FILE.py:FUNCTION (returns a Dataset or "
             "(inputs, targets)).",
    ),
]
LossOpt = Annotated[
    str | None,
    typer.Option(
        "--loss", help="cross-entropy or mse (½‖f−y‖² per sample); defaults to the checkpoint's."
    ),
]
SplitOpt = Annotated[str, typer.Option("--split",
                                       help="Which data split to measure on: train or test.")]
SamplesOpt = Annotated[
    int | None,
    typer.Option(
        "--samples", help="Use a seeded random subset of this many samples (default: all)."
    ),
]
BatchOpt = Annotated[
    int,
    typer.Option(
        "--batch-size",
        help="Samples per product batch (memory only; the estimate uses all samples with exact "
             "weights).",
    ),
]
ParamsOpt = Annotated[
    str | None,
    typer.Option(
        "--params",
        help="Regular expression: restrict to the matching parameters (others held fixed).",
    ),
]
DeviceOpt = Annotated[str, typer.Option("--device", help="cpu, cuda, cuda:1, ...")]
DtypeOpt = Annotated[str, typer.Option("--dtype", help="float32 or float64.")]
SeedOpt = Annotated[int, typer.Option("--seed",
                                      help="Seed of probes and subsets: same seed, same numbers.")]
TrainModeOpt = Annotated[
    bool,
    typer.Option(
        "--train-mode",
        help="Evaluate with BatchNorm batch statistics and dropout on (default: eval mode, "
             "running statistics).",
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json",
                                       help="Print one JSON object on stdout instead of a table.")]
OutOpt = Annotated[
    Path | None,
    typer.Option("--out", help="Also write the results to this HDF5 file (atomically)."),
]
PlotOpt = Annotated[
    Path | None, typer.Option("--plot", help="Write a figure to this file (.png, .pdf, .svg).")
]
DebugOpt = Annotated[bool, typer.Option("--debug", help="Show full tracebacks on errors.")]

# metric settings shared by ``sharpness`` and ``info --plan``
MetricOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--metric",
        "-m",
        help=f"Metrics, repeated or comma-separated: {', '.join(METRICS)} (default "
             f"{','.join(DEFAULT_METRICS)}).",
    ),
]
ProbesOpt = Annotated[int, typer.Option("--probes",
                                        help="Random probe vectors for trace and Frobenius norm.")]
TopKOpt = Annotated[int, typer.Option("--top-k", help="How many eigenvalues at each end.")]
WhichOpt = Annotated[
    str,
    typer.Option("--which", help="Eigenvalues at the top, bottom or both ends of the spectrum."),
]
RunsOpt = Annotated[int, typer.Option("--runs", help="Spectral density: SLQ runs.")]
StepsOpt = Annotated[int, typer.Option("--steps", help="Spectral density: Lanczos steps per run.")]
PlanOpt = Annotated[
    bool,
    typer.Option(
        "--plan",
        help="Print the plan (products per metric, memory, estimated time from one timed batch) "
             "and stop before any heavy work.",
    ),
]
