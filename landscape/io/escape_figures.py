"""The lecture's Figure 19 for an escape run: every trajectory's training loss thin, their mean
bold, on a log scale, one panel per dynamics (writers only consume results)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .figures import plt, save


def _panel(ax, steps: np.ndarray, losses: np.ndarray, summary: dict, max_lines: int) -> None:
    with np.errstate(invalid="ignore", divide="ignore"):
        shown = np.where(np.isfinite(losses) & (losses > 0), losses, np.nan)
        mean = losses.mean(0)
    mean = np.where(np.isfinite(mean) & (mean > 0), mean, np.nan)
    for row in shown[:max_lines]:
        ax.plot(steps, row, color="tab:blue", lw=0.5, alpha=0.25)
    ax.plot(steps, mean, color="tab:red", lw=2.2, label="mean")
    start = float(summary.get("start_loss") or losses[0, 0])
    factor = summary.get("escape_factor")
    if factor and start > 0:
        ax.axhline(start * factor, color="k", ls="--", lw=0.8, label=f"escape: {factor:g} x start")
    rate, pred = summary.get("growth_rate"), summary.get("predicted_growth")
    if (
        rate
        and summary.get("fit_last") is not None
        and start > 0
        and math.isfinite(rate)
        and rate > 0
    ):
        t = np.linspace(summary.get("fit_first") or 0, summary["fit_last"], 50)
        ax.plot(t, mean[0] * rate ** (t - t[0]), color="tab:orange", lw=1.2, ls="-.",
                label=f"fit {rate:.3g}/step")
    if (
        pred and math.isfinite(pred) and pred > 1 and start > 0
    ):  # γ_0 ≤ 1 bounds nothing (Theorem 4)
        end = summary.get("fit_last") or steps[-1]
        t = np.linspace(0, max(end, 1), 50)
        ax.plot(t, start * pred**t, color="tab:green", lw=1.2, ls=":",
                label=f"predicted {pred:.3g}/step")
    ax.set_yscale("log")
    finite = shown[np.isfinite(shown)]
    if finite.size:  # the data (and the escape threshold) decide the range, not the guide lines
        top = max(finite.max(), start * factor if factor and start > 0 else 0.0)
        ax.set_ylim(finite.min() / 3, top * 3)
    frac = summary.get("fraction_escaped")
    med = summary.get("median_step")
    sub = f"{summary.get('trajectories', losses.shape[0])} trajectories"
    if frac is not None:
        sub += f", {100 * frac:.0f}% escaped"
    if med is not None:
        sub += f", median step {med:g}"
    ax.set_title(f"{summary.get('dynamics', '')}\n{sub}", fontsize=9)
    ax.set_xlabel("step")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")


def escape_figure(runs: Sequence[tuple], title: str | None = None, max_lines: int = 200):
    """``runs``: ``(record_steps [R], losses [T, R], summary dict)`` per dynamics (arrays or
    lists; ``summary`` as :meth:`EscapeSummary.to_dict`). One panel each (three to a row), log y
    axis over the data's range; the escape threshold, the fitted growth and the prediction
    ``L_0 γ^t`` (where given) as guide lines."""
    k = max(1, len(runs))
    cols = min(k, 3)
    rows = (k + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4.4 * cols, 3.8 * rows), squeeze=False)
    flat = axes.reshape(-1)
    for ax, (steps, losses, summary) in zip(flat, runs):
        _panel(ax, np.asarray(steps, dtype=float), np.asarray(losses, dtype=float), dict(summary),
               max_lines)
    for ax in flat[len(runs):]:
        ax.set_visible(False)
    for r in range(rows):
        axes[r][0].set_ylabel("training loss (log scale)")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def save_escape_figure(runs: Sequence[tuple], path: str | Path, title: str | None = None) -> Path:
    """Draw :func:`escape_figure` and save it atomically (format from the suffix)."""
    return save(escape_figure(runs, title), path)
