"""Several training runs side by side (``landscape compare``): each run's settings and final
values as ``landscape train`` recorded them in ``RUN/run.h5`` (:func:`~.run.read_run`)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from ..results import Table

#: settings shown for each run, in this order
SETTINGS = ("model", "data", "optimizer", "base", "lr", "momentum", "weight_decay", "batch_size",
            "hyper", "seed", "status", "step", "epoch", "passes_per_step")
#: final values shown first (tracked metrics follow)
FINALS = ("train_loss", "train_accuracy", "test_loss", "test_accuracy")
_TIMES = ("train_seconds", "track_seconds", "eval_seconds", "wall_seconds")
_SKIP = {"step", "epoch", "batch_loss", *_TIMES}


def summarize(rec: dict) -> dict:
    """One run's settings and final values (``None`` where never measured)."""
    a, final = rec["attrs"], rec["final"]
    tracked = [k for k in rec["series"] if k not in _SKIP and k not in FINALS
               and not k.endswith(("_stderr", "_residual"))]
    metrics = {}
    for k in tracked:
        m = {"value": final.get(k)}
        for suffix in ("_stderr", "_residual"):
            if final.get(k + suffix) is not None:
                m[suffix[1:]] = final[k + suffix]
        metrics[k] = m
    return {"path": rec["path"], "settings": {k: a.get(k) for k in SETTINGS},
            "final": {k: final.get(k) for k in FINALS}, "metrics": metrics,
            "seconds": {k.replace("_seconds", ""): final.get(k) for k in _TIMES}}


def _fmt(v: Any) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    if isinstance(v, float):
        return f"{v:.6g}"
    if isinstance(v, dict):
        return ", ".join(f"{k}={_fmt(x)}" for k, x in v.items()
                         if not isinstance(x, (dict, list))) or "-"
    return str(v)


def comparison_table(summaries: list[dict]) -> Table:
    """One column per run (:func:`summarize`): settings, final values, every tracked metric (± its
    standard error), training and tracking time."""
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
    rows += [(f"{k} seconds", *[_fmt(s["seconds"].get(k)) for s in summaries])
             for k in ("train", "track")]
    return Table("run comparison (final values)", ["", *names], rows)


__all__ = ["FINALS", "SETTINGS", "comparison_table", "summarize"]
