"""``landscape compare``: the final metrics of several training runs side by side (table, JSON,
figure). Reads only what ``landscape train`` recorded in each ``RUN/run.h5``
(:mod:`landscape.train.compare`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from . import output
from .options import DebugOpt, JsonOpt, PlotOpt


@output.handle_errors
def compare(
    runs: Annotated[
        list[Path],
        typer.Argument(help="Run directories written by landscape train --out (or their run.h5).",
                       show_default=False),
    ],
    json_: JsonOpt = False,
    plot: PlotOpt = None,
    debug: DebugOpt = False,
) -> None:
    """The final metrics of training runs side by side (optimizer, lr, losses, accuracy, λ_max,
    trace, ...)."""
    from ..train.compare import comparison_table, summarize
    from ..train.run import read_run

    output.check_writable(plot=plot)
    records = [read_run(r) for r in runs]
    summaries = [summarize(r) for r in records]
    if plot is not None:
        from ..io.run_figures import compare_figure, save

        save(compare_figure(records), plot)
    if json_:
        output.emit_json({"runs": summaries, "plot": None if plot is None else str(plot)})
        return
    output.table(*comparison_table(summaries))
    output.written(plot)
