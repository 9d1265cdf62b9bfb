"""``landscape plot``: re-draw the figure of any result file (slice, interpolation, sharpness
density, training run, escape) from what it holds, without recomputing."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from . import output
from .options import DebugOpt


@output.handle_errors
def plot(
    file: Annotated[
        Path,
        typer.Argument(
            help="A result file: slice/interpolate --out, sharpness --out, RUN/run.h5 (or RUN), "
                 "escape --out.",
            show_default=False,
        ),
    ],
    kind: Annotated[
        str,
        typer.Option(
            "--kind",
            help="auto (from the file), curve, contour, heatmap, surface, density, run or escape.",
        ),
    ] = "auto",
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            help="Figure file (.png, .pdf, .svg); default FILE.png, or FILE-KIND.png with --kind.",
            show_default=False,
        ),
    ] = None,
    value: Annotated[
        str, typer.Option("--value", help="2-D slices: draw the loss or the accuracy.")
    ] = "loss",
    debug: DebugOpt = False,
) -> None:
    """Re-draw a result file's figure without recomputing anything."""
    from ..io.render import render

    output.check_writable(plot=out)
    if file.is_dir() and (file / "run.h5").is_file():
        file = file / "run.h5"
    for path in render(file, kind, out, value):
        output.info(f"wrote {path}")
