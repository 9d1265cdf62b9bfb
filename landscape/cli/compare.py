"""``landscape compare``: the final metrics of several training runs side by side (table, JSON,
figure). Reads only what ``landscape train`` recorded in each ``RUN/run.h5``."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated

import typer

from . import output
from .options import DebugOpt, JsonOpt, PlotOpt

#: settings shown for each run, in this order
SETTINGS = ("model", "data", "optimizer", "base", "lr", "momentum", "weight_decay", "batch_size",
            "hyper",
            "seed", "status", "step", "epoch", "passes_per_step")
#: final values shown first (tracked metrics follow)
FINALS = ("train_loss", "train_accuracy", "test_loss", "test_accuracy")
_TIMES = ("train_seconds", "track_seconds", "eval_seconds", "wall_seconds")
_SKIP = {"step", "epoch", "batch_loss", *_TIMES}


def summarize(rec: dict) -> dict:
    """One run's settings and final values (``None`` where never measured)."""
    a, final = rec["attrs"], rec["final"]
    tracked = [
        k
        for k in rec["series"]
        if k not in _SKIP and k not in FINALS and not k.endswith(("_stderr", "_residual"))
    ]
    metrics = {}
    for k in tracked:
        m = {"value": final.get(k)}
        for suffix in ("_stderr", "_residual"):
            if final.get(k + suffix) is not None:
                m[suffix[1:]] = final[k + suffix]
        metrics[k] = m
    return {
        "path": rec["path"],
        "settings": {k: a.get(k) for k in SETTINGS},
        "final": {k: final.get(k) for k in FINALS},
        "metrics": metrics,
        "seconds": {k.replace("_seconds", ""): final.get(k) for k in _TIMES},
    }


def _fmt(v) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    if isinstance(v, float):
        return f"{v:.6g}"
    if isinstance(v, dict):
        return (
            ", ".join(f"{k}={_fmt(x)}" for k, x in v.items() if not isinstance(x, (dict, list)))
            or "-"
        )
    return str(v)


@output.handle_errors
def compare(
    runs: Annotated[
        list[Path],
        typer.Argument(
            help="Run directories written by landscape train --out (or their run.h5).",
            show_default=False,
        ),
    ],
    json_: JsonOpt = False,
    plot: PlotOpt = None,
    debug: DebugOpt = False,
) -> None:
    """The final metrics of training runs side by side (optimizer, lr, losses, accuracy, λ_max,
    trace, ...)."""
    output.check_writable(plot=plot)
    from ..train.run import read_run

    records = [read_run(r) for r in runs]
    summaries = [summarize(r) for r in records]
    if plot is not None:
        from ..io.run_figures import compare_figure, save

        save(compare_figure(records), plot)
    if json_:
        output.emit_json({"runs": summaries, "plot": None if plot is None else str(plot)})
        return
    names = [Path(s["path"]).name or s["path"] for s in summaries]
    rows = [(k, *[_fmt(s["settings"].get(k)) for s in summaries]) for k in SETTINGS]
    rows += [(k, *[_fmt(s["final"].get(k)) for s in summaries]) for k in FINALS]
    metric_names: list[str] = []
    for s in summaries:
        metric_names += [m for m in s["metrics"] if m not in metric_names]
    for m in metric_names:
        cells = []
        for s in summaries:
            v = s["metrics"].get(m)
            if v is None or v["value"] is None:
                cells.append("-")
            elif "stderr" in v:
                cells.append(f"{v['value']:.6g} ± {v['stderr']:.2g}")
            else:
                cells.append(_fmt(v["value"]))
        rows.append((m, *cells))
    rows += [(f"{k} seconds", *[_fmt(s["seconds"].get(k)) for s in summaries]) for k in ("train",
                                                                                         "track")]
    output.table("run comparison (final values)", ["", *names], rows)
    output.written(plot)
