"""Matplotlib figures (headless Agg backend), saved atomically. Writers only consume results."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch

from ..results import Density
from .atomic import atomic_path


def save(fig, path: str | Path) -> Path:
    """Save ``fig`` to ``path`` (format from the suffix) atomically and close it."""
    path = Path(path)
    fmt = path.suffix.lstrip(".") or "png"
    with atomic_path(path, suffix="." + fmt) as tmp:
        fig.savefig(tmp, format=fmt, dpi=150, bbox_inches="tight")
    plt.close(fig)
    return path


def density_figure(density: Density | dict, title: str = "Hessian spectral density",
                   sigma: float | None = None):
    """Gaussian-broadened SLQ density on a log scale, with the Ritz nodes marked."""
    if isinstance(density, dict):
        density = Density(
            torch.as_tensor(density["nodes"], dtype=torch.float64),
            torch.as_tensor(density["weights"], dtype=torch.float64),
            int(density["runs"]),
            int(density["steps"]),
            int(density.get("matvecs", 0)),
        )
    nodes = density.nodes.double()
    lo, hi = float(nodes.min()), float(nodes.max())
    pad = 0.05 * max(hi - lo, 1e-12)
    grid = torch.linspace(lo - pad, hi + pad, 2000, dtype=torch.float64)
    curve = Density(nodes, density.weights.double(), density.runs, density.steps,
                    density.matvecs).curve(grid, sigma)
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.semilogy(grid.numpy(), (curve + 1e-12).numpy(), lw=1.2)
    ax.set_xlabel("eigenvalue")
    ax.set_ylabel("density (log scale)")
    ax.set_title(f"{title}\n{density.runs} SLQ runs x {density.steps} Lanczos steps")
    ax.set_ylim(bottom=1e-8)
    ax.grid(alpha=0.3)
    return fig
