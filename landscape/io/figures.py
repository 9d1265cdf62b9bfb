"""Matplotlib figures (headless Agg backend), saved atomically. Writers only consume results."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
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


def _density(density: Density | dict) -> Density:
    if isinstance(density, dict):
        return Density(torch.as_tensor(density["nodes"], dtype=torch.float64),
                       torch.as_tensor(density["weights"], dtype=torch.float64),
                       int(density["runs"]), int(density["steps"]),
                       int(density.get("matvecs", 0)))
    return density


def _draw_density(ax, density: Density, sigma: float | None = None) -> None:
    """The Gaussian-broadened SLQ density on a log scale."""
    nodes = density.nodes.double()
    lo, hi = float(nodes.min()), float(nodes.max())
    pad = 0.05 * max(hi - lo, 1e-12)
    grid = torch.linspace(lo - pad, hi + pad, 2000, dtype=torch.float64)
    curve = Density(nodes, density.weights.double(), density.runs, density.steps,
                    density.matvecs).curve(grid, sigma)
    ax.semilogy(grid.numpy(), (curve + 1e-12).numpy(), lw=1.2)
    ax.set_ylim(bottom=1e-8)
    ax.grid(alpha=0.3)


def density_figure(density: Density | dict, title: str = "Hessian spectral density",
                   sigma: float | None = None):
    """Gaussian-broadened SLQ density on a log scale."""
    density = _density(density)
    fig, ax = plt.subplots(figsize=(6, 4))
    _draw_density(ax, density, sigma)
    ax.set_xlabel("eigenvalue")
    ax.set_ylabel("density (log scale)")
    ax.set_title(f"{title}\n{density.runs} SLQ runs x {density.steps} Lanczos steps")
    return fig


def blocks_density_figure(densities: dict[str, Density | dict],
                          title: str = "Hessian spectral density by block"):
    """The densities of the Hessian's diagonal blocks side by side, one small panel each with
    its own eigenvalue axis (as in Zhang et al. 2024, Fig. 3)."""
    names = list(densities)
    cols = min(4, len(names))
    rows = -(-len(names) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.4 * rows), squeeze=False)
    for ax, name in zip(axes.flat, names):
        _draw_density(ax, _density(densities[name]))
        ax.set_title(name, fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(names):]:
        ax.set_visible(False)
    first = _density(densities[names[0]])
    fig.suptitle(f"{title} ({first.runs} SLQ runs x {first.steps} Lanczos steps; "
                 "density on a log scale)", fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.35 / fig.get_figheight()))  # room for the title
    return fig


def overlap_figure(matrix, cosines, labels: tuple[str, str] = ("A", "B"),
                   title: str = "Overlap of two Hessian eigenspaces"):
    """The squared overlaps ``(a_iᵀb_j)²`` of two sets of eigenvectors as a heat map (values
    written in the cells up to 12 × 12), and the principal angles' cosines."""
    m = torch.as_tensor(matrix, dtype=torch.float64).numpy()
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(9, 4), gridspec_kw={"width_ratios": [3, 2]})
    im = ax.imshow(m, vmin=0.0, vmax=1.0, cmap="viridis")
    if max(m.shape) <= 12:
        for (i, j), v in np.ndenumerate(m):
            ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=7,
                    color="white" if v < 0.6 else "black")
    ax.set_xticks(range(m.shape[1]), [str(j + 1) for j in range(m.shape[1])])
    ax.set_yticks(range(m.shape[0]), [str(i + 1) for i in range(m.shape[0])])
    ax.set_xlabel(f"eigenvector of {labels[1]}")
    ax.set_ylabel(f"eigenvector of {labels[0]}")
    fig.colorbar(im, ax=ax, label="squared overlap")
    c = torch.as_tensor(cosines, dtype=torch.float64).numpy()
    bx.bar(range(1, len(c) + 1), c)
    bx.set_ylim(0, 1.05)
    bx.set_xlabel("principal angle")
    bx.set_ylabel("cosine")
    bx.grid(alpha=0.3)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig
