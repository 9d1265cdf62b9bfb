"""Figures of training runs: ``run.png`` (loss, accuracy and every tracked metric against step)
and the ``landscape compare`` figure (the same quantities of several runs overlaid). Writers only
consume the recorded series (``landscape.train.run.read_run``); they never compute."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from .figures import plt, save  # noqa: F401  (save is re-exported for callers)

_BASE = {"step", "epoch", "wall_seconds", "train_seconds", "eval_seconds", "track_seconds",
         "batch_loss", "train_loss", "train_accuracy", "test_loss", "test_accuracy"}
_ERR = ("_stderr", "_residual")
#: curvatures drawn in one panel with GD's stability bound 2/lr (Cohen et al. 2021, Fig. 1)
CURVATURES = {"lambda_max": "λ_max", "grad_curvature": "gᵀHg/‖g‖²",
              "update_curvature": "uᵀHu/‖u‖²"}


def metric_columns(series: dict) -> list[str]:
    """Tracked columns (not counters, timers, losses or error columns), in recorded order."""
    return [c for c in series if c not in _BASE and not c.endswith(_ERR)]


def _xy(series: dict, col: str):
    step = np.asarray(series["step"], dtype=float)
    y = np.asarray(series.get(col, np.full_like(step, np.nan)), dtype=float)
    keep = ~np.isnan(y)
    return step[keep], y[keep], keep


def _grid(n: int):
    cols = min(3, n)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), squeeze=False)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return fig, list(axes.flat[:n])


def _loss_axis(ax, series: dict, label: str = "", style: dict | None = None) -> None:
    style = style or {}
    for col, ls in (("train_loss", "-"), ("test_loss", "--")):
        x, y, _ = _xy(series, col)
        if len(x):
            ax.plot(x, y, ls, label=f"{label}{col.replace('_', ' ')}", **style)
    if not label:
        x, y, _ = _xy(series, "batch_loss")
        if len(x):
            ax.plot(x, y, ".", ms=2, alpha=0.3, color="gray", label="minibatch loss")
    ax.set_yscale("log")
    ax.set_ylabel("loss")


def run_figure(series: dict, settings: dict | None = None):
    """Loss, accuracy and each tracked metric (± stderr band where recorded) against step, from
    a run's time series (``read_run(path)["series"]``) and settings (its ``"attrs"``)."""
    settings = settings or {}
    metrics = metric_columns(series)
    together = [c for c in CURVATURES if c in metrics]  # one panel, beside 2/lr (EoS)
    metrics = [c for c in metrics if c not in together[1:]]
    has_acc = any(len(_xy(series, c)[0]) for c in ("train_accuracy", "test_accuracy"))
    fig, axes = _grid(1 + int(has_acc) + len(metrics))
    _loss_axis(axes[0], series)
    axes[0].legend(fontsize=7)
    i = 1
    if has_acc:
        for col, ls in (("train_accuracy", "-"), ("test_accuracy", "--")):
            x, y, _ = _xy(series, col)
            if len(x):
                axes[i].plot(x, y, ls, label=col.replace("_", " "))
        axes[i].set_ylabel("accuracy")
        axes[i].legend(fontsize=7)
        i += 1
    for col in metrics:
        ax = axes[i]
        for c in together if col in together else [col]:
            x, y, keep = _xy(series, c)
            ax.plot(x, y, "o-", ms=3, label=CURVATURES.get(c, c))
            err = f"{c}_stderr"
            if err in series:
                e = np.asarray(series[err], dtype=float)[keep]
                ax.fill_between(x, y - e, y + e, alpha=0.25)
        if col in together:
            col = "curvature"
            ax.legend(fontsize=7)
        if col == "curvature" and settings.get("lr") and settings.get("base", "sgd") == "sgd":
            # GD's linear stability bound (docs/algorithms.md §2); heavy-ball momentum β: 2(1 +
            # β)/lr
            # (β, not μ: μ is the noise alignment, drawn in a panel of its own)
            beta = float(settings.get("momentum") or 0.0)
            ax.axhline(2.0 * (1.0 + beta) / float(settings["lr"]), color="k", ls=":", lw=1,
                       label="2/lr" if beta == 0 else f"2(1+β)/lr, momentum β = {beta:g}")
            ax.legend(fontsize=7)
        ax.set_ylabel(col)
        i += 1
    for ax in axes:
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    title = " ".join(str(settings.get(k, "")) for k in ("model", "data", "optimizer")).strip()
    if settings.get("lr") is not None:
        title += f", lr {settings['lr']:g}"
    fig.suptitle(title or "training run", fontsize=10)
    fig.tight_layout()
    return fig


def run_label(rec: dict) -> str:
    """A short legend label: directory name and optimizer."""
    a = rec.get("attrs", {})
    return f"{Path(rec['path']).name} ({a.get('optimizer', '?')})"


def compare_figure(runs: list[dict]):
    """The runs' losses, test accuracy and shared tracked metrics overlaid against step."""
    cols = ["train_loss", "test_loss", "test_accuracy"]
    for rec in runs:
        for c in metric_columns(rec["series"]):
            if c not in cols:
                cols.append(c)
    cols = [c for c in cols if any(len(_xy(r["series"], c)[0]) for r in runs)]
    fig, axes = _grid(max(1, len(cols)))
    palette = plt.rcParams["axes.prop_cycle"].by_key().get("color", ["C0"])
    for ax, col in zip(axes, cols):
        for i, rec in enumerate(runs):
            x, y, keep = _xy(rec["series"], col)
            if not len(x):
                continue
            color = palette[i % len(palette)]  # one colour per run in every panel
            ax.plot(x, y, "-", color=color, label=f"{run_label(rec)}: {y[-1]:.4g}")
            err = f"{col}_stderr"
            if err in rec["series"]:
                e = np.asarray(rec["series"][err], dtype=float)[keep]
                ax.fill_between(x, y - e, y + e, alpha=0.2, color=color)
        if col.endswith("loss"):
            ax.set_yscale("log")
        ax.set_ylabel(col)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6, title="final", title_fontsize=6)
    fig.suptitle("run comparison", fontsize=10)
    fig.tight_layout()
    return fig
