"""Shared option aliases of every command (one spelling and one help text each)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from ..metrics import DEFAULT_METRICS, METRICS

KV = Optional[list[str]]  # noqa: UP045  (Typer reads the annotation at run time)

ModelArgOpt = Annotated[KV, typer.Option("--model-arg", help="Model factory option key=value "
                                         "(repeatable; JSON values, e.g. widths=[128,128]).")]
DataArgOpt = Annotated[KV, typer.Option("--data-arg", help="Data factory option key=value "
                                        "(repeatable; e.g. n_train=512, root=/data/cifar).")]
CheckpointArg = Annotated[
    Path,
    typer.Argument(
        help="Checkpoint file: landscape's format, or a state_dict with --model/--data.",
        show_default=False,
    ),
]
DeviceOpt = Annotated[str, typer.Option("--device", help="cpu, cuda, cuda:1, ...")]
DtypeOpt = Annotated[str, typer.Option("--dtype", help="float32 or float64.")]
SeedOpt = Annotated[int, typer.Option("--seed",
                                      help="Seed of probes and subsets: same seed, same numbers.")]
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

MetricOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--metric",
        "-m",
        help=f"Metrics, repeated or comma-separated: {', '.join(METRICS)} (default "
             f"{','.join(DEFAULT_METRICS)}).",
    ),
]
PlanOpt = Annotated[
    bool,
    typer.Option(
        "--plan",
        help="Print the plan (products per metric, memory, estimated time from one timed batch) "
             "and stop before any heavy work.",
    ),
]
ProgressOpt = Annotated[bool, typer.Option("--progress/--no-progress",
                                           help="Progress bars on stderr (when it is a terminal).")]


def names_option(flag: str, help: str) -> Any:
    """A list of names, comma-separated or repeated (``--to sgd,gd``, ``--track a --track b``)."""
    return Annotated[list[str] | None,
                     typer.Option(flag, help=f"{help} (comma-separated or repeated).")]


def kv_option(flag: str, help: str) -> Any:
    """Settings as ``key=value``, repeatable (JSON values): ``--opt-arg rho=0.05``."""
    return Annotated[KV, typer.Option(flag, help=f"{help} (key=value, repeatable).")]


def switch(flags: str, help: str) -> Any:
    """A boolean flag: ``--force``, or ``--plot/--no-plot``."""
    return Annotated[bool, typer.Option(flags, help=help)]


def path_option(flag: str, help: str) -> Any:
    """An optional file path (``--slice s.h5``, ``--animate paths.gif``)."""
    return Annotated[Path | None, typer.Option(flag, help=help)]
