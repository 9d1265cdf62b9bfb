"""Figures of loss-surface slices and interpolations, and ``render``: re-draw any result file the
toolkit writes (slice, interpolation, sharpness density, training run, escape) from what it holds.

Writers only consume results: every function takes the plain dict a slice file holds
(``read_tree(path)``: root attributes merged with the ``grid``, ``values``, ``directions``,
``trajectory`` groups), or the same dict built in memory before it is written.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import numpy as np

from ..errors import ConfigError
from .figures import plt, save

SLICE_FORMAT = "landscape-slice"
Kind2D = Literal["contour", "heatmap", "surface"]
_SPLIT_STYLE = {"train": "-", "test": "--"}


def _arr(x: Any) -> np.ndarray:
    return np.asarray(x, dtype=np.float64)


def _splits(data: dict, quantity: str) -> list[str]:
    values = data.get("values") or {}
    return [s for s in ("train", "test") if f"{s}_{quantity}" in values]


def _title(data: dict) -> str:
    d = data.get("directions") or {}
    ident = data.get("identity") or {}
    name = Path(str(ident.get("path") or data.get("checkpoint") or "")).name
    if data.get("kind") == "interpolation":
        ends = data.get("endpoints") or {}
        a, b = Path(str(ends.get("a", "A"))).name, Path(str(ends.get("b", "B"))).name
        return f"interpolation (1-α) θ_A + α θ_B, A = {a}, B = {b}"
    kind = d.get("kind", "?")
    what = {"random": f"random directions, {d.get('norm', '?')} normalisation",
            "eigen": "top Hessian eigenvectors",
            "pca": "PCA of the training trajectory" if len(d.get("runs") or []) < 2
            else f"PCA of {len(d['runs'])} runs' trajectories",
            "checkpoints": "toward checkpoints"}.get(kind, str(kind))
    extra = ""
    ev = d.get("eigenvalues")
    if kind == "eigen" and ev is not None:
        extra = ", λ = " + ", ".join(f"{v:.4g}" for v in _arr(ev).ravel())
    if kind == "pca" and d.get("explained_variance") is not None:
        extra = ", explained " + ", ".join(
            f"{100 * v:.1f}%" for v in _arr(d["explained_variance"]).ravel()
        )
    return f"{name}: {what}{extra}".strip(": ")


def _axis_label(data: dict, i: int) -> str:
    if data.get("kind") == "interpolation":
        return "α  (0 = A, 1 = B)"
    return ("α", "β")[i] + f"  (direction {i + 1})"


# ----------------------------------------------------------------------------- 1-D
def curve_figure(data: dict):
    """Loss (left) and accuracy (right, if recorded) along a 1-D slice or an interpolation;
    train solid, test dashed; the origin (or the end points A and B) marked."""
    x = _arr(data["grid"]["alpha"])
    has_acc = bool(_splits(data, "accuracy"))
    fig, axes = plt.subplots(1, 2 if has_acc else 1, figsize=(10 if has_acc else 5.5, 3.8),
                             squeeze=False)
    axes = list(axes.flat)
    for ax, q in zip(axes, ["loss", "accuracy"]):
        for s in _splits(data, q):
            ax.plot(x, _arr(data["values"][f"{s}_{q}"]), _SPLIT_STYLE[s], label=f"{s} {q}")
        marks = [0.0, 1.0] if data.get("kind") == "interpolation" else [0.0]
        for m, lab in zip(marks, ["A", "B"] if len(marks) == 2 else [""]):
            if x.min() <= m <= x.max():
                ax.axvline(m, color="gray", lw=0.8, ls=":")
                if lab:
                    ax.annotate(lab, (m, 1.0), xycoords=("data", "axes fraction"), ha="center",
                                va="bottom")
        ax.set_xlabel(_axis_label(data, 0))
        ax.set_ylabel(q)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    if _finite_positive_span(data, "loss") > 100:
        axes[0].set_yscale("log")
    fig.suptitle(_title(data), fontsize=9)
    fig.tight_layout()
    return fig


def _finite_positive_span(data: dict, quantity: str) -> float:
    vals = [_arr(data["values"][f"{s}_{quantity}"]) for s in _splits(data, quantity)]
    v = np.concatenate([a.ravel() for a in vals]) if vals else np.array([])
    v = v[np.isfinite(v) & (v > 0)]
    return float(v.max() / v.min()) if v.size else 1.0


# ----------------------------------------------------------------------------- 2-D
def _levels(z: np.ndarray, n: int = 14) -> tuple[np.ndarray, bool]:
    """Contour levels from the minimum to the 95th percentile: geometric when the values span
    more than a factor 20 (and are positive), else linear."""
    v = z[np.isfinite(z)]
    if v.size == 0:
        return np.array([0.0, 1.0]), False
    lo, hi = float(v.min()), float(np.percentile(v, 95))
    if hi <= lo:
        hi = float(v.max()) if float(v.max()) > lo else lo + 1.0
    if lo > 0 and hi / lo > 20:
        return np.geomspace(lo, hi, n), True
    return np.linspace(lo, hi, n), False


_COLORS = ["crimson", "tab:blue", "tab:orange", "tab:green", "tab:purple", "tab:brown",
           "tab:pink", "tab:olive", "tab:cyan", "black"]


def paths(data: dict) -> list[tuple[str, slice]]:
    """The runs drawn on a PCA plane: ``(name, rows of trajectory/coords)`` each (one run:
    ``"trajectory"``, all rows)."""
    d = data.get("directions") or {}
    runs = d.get("runs")
    n = len(_arr((data.get("trajectory") or {}).get("coords", [])))
    if not runs:
        return [("trajectory", slice(0, n))]
    return [(str(r["name"]), slice(int(r["start"]), int(r["start"]) + int(r["count"])))
            for r in runs]


def _overlay(ax, data: dict, z: bool = False) -> None:
    """The trajectory (PCA) or the other checkpoints drawn on the plane, and the origin."""
    traj = data.get("trajectory") or {}
    coords = traj.get("coords")
    ax.plot([0], [0], marker="*", color="k", ms=9, ls="none", label="origin")
    if coords is None:
        return
    c = _arr(coords).reshape(-1, 2) if _arr(coords).size % 2 == 0 else None
    if c is None:
        return
    d = data.get("directions") or {}
    if d.get("kind") == "pca":
        for (name, rows), color in zip(paths(data), _COLORS):
            ax.plot(c[rows, 0], c[rows, 1], "o-", color=color, ms=3, lw=1.2, label=name)
    else:
        ax.plot(c[1:, 0], c[1:, 1], "s", color="crimson", ms=6, ls="none", label="checkpoints")
        for (px, py), lab in zip(c[1:], list(traj.get("labels") or [])[1:]):
            ax.annotate(str(lab), (px, py), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.legend(fontsize=7, loc="upper right")


def plane_figure(data: dict, kind: Kind2D = "contour", quantity: str = "loss"):
    """A 2-D slice: ``contour`` (labelled levels), ``heatmap`` or ``surface`` (3-D), one panel per
    split. Contour levels and colours span the minimum to the 95th percentile; a surface is clipped
    at the 98th percentile only where the maximum exceeds it threefold (far corners that would
    flatten the picture)."""
    if kind not in ("contour", "heatmap", "surface"):
        raise ConfigError(f"unknown 2-D figure kind {kind!r}", "choose contour, heatmap or surface")
    a, b = _arr(data["grid"]["alpha"]), _arr(data["grid"]["beta"])
    splits = _splits(data, quantity)
    if not splits:
        raise ConfigError(f"the file holds no {quantity} values", "use --value loss")
    n = len(splits)
    fig = plt.figure(figsize=(6 * n, 5) if kind == "surface" else (5.6 * n, 4.6))
    A, B = np.meshgrid(a, b, indexing="xy")
    for i, s in enumerate(splits):
        Z = _arr(data["values"][f"{s}_{quantity}"]).T  # [beta, alpha]
        if kind == "surface":
            ax = fig.add_subplot(1, n, i + 1, projection="3d")
            v = Z[np.isfinite(Z)]
            cap = float(np.percentile(v, 98)) if v.size else 1.0
            cap = (
                cap
                if v.size and float(v.max()) > 3 * abs(cap)
                else (float(v.max()) if v.size else 1.0)
            )
            Zc = np.where(np.isfinite(Z), np.minimum(Z, cap), cap)
            ax.plot_surface(A, B, Zc, cmap="viridis", linewidth=0, antialiased=True, alpha=0.95)
            from matplotlib.ticker import MaxNLocator

            for a_ in (ax.xaxis, ax.yaxis, ax.zaxis):
                a_.set_major_locator(MaxNLocator(5))
            ax.set_zlabel(quantity)
            ax.set_title(f"{s} {quantity}", fontsize=9)
        else:
            ax = fig.add_subplot(1, n, i + 1)
            levels, geometric = _levels(Z)
            if kind == "contour":
                cs = ax.contour(A, B, Z, levels=levels, cmap="viridis", linewidths=1)
                ax.clabel(cs, inline=True, fontsize=6, fmt="%.3g")
            else:
                from matplotlib.colors import LogNorm, Normalize

                norm = (
                    LogNorm(levels[0], levels[-1])
                    if geometric
                    else Normalize(levels[0], levels[-1])
                )
                mesh = ax.pcolormesh(A, B, np.clip(Z, levels[0], levels[-1]), shading="auto",
                                     cmap="viridis", norm=norm)
                fig.colorbar(mesh, ax=ax, label=quantity)
            _overlay(ax, data)
            ax.set_aspect("auto")
            ax.set_title(f"{s} {quantity}", fontsize=9)
        ax.set_xlabel(_axis_label(data, 0))
        ax.set_ylabel(_axis_label(data, 1))
    fig.suptitle(_title(data), fontsize=9)
    if kind != "surface":
        fig.tight_layout()
    return fig


def slice_figure(data: dict, kind: str = "auto", quantity: str = "loss"):
    """The figure of a slice or interpolation dict: a curve in 1-D, ``kind`` (default contour) in
    2-D."""
    dims = len([k for k in ("alpha", "beta") if k in (data.get("grid") or {})])
    if dims == 1:
        if kind not in ("auto", "curve"):
            raise ConfigError(f"--kind {kind} needs a 2-D slice; this one is 1-D",
                              "use --kind curve")
        return curve_figure(data)
    if kind == "curve":
        raise ConfigError("--kind curve is for 1-D slices and interpolations",
                          "use contour, heatmap or surface")
    return plane_figure(data, "contour" if kind == "auto" else kind, quantity)


def animate_paths(data: dict, path: str | Path, quantity: str = "loss", fps: int = 8) -> Path:
    """The runs' paths drawn step by step over the train loss contours of a PCA plane, written
    as a GIF (Pillow, which matplotlib needs) or an MP4 (ffmpeg, when installed), atomically.
    Frame ``t`` shows every path up to its ``t``-th checkpoint."""
    from matplotlib import animation

    from .atomic import atomic_path

    path = Path(path)
    fmt = path.suffix.lower()
    if fmt not in (".gif", ".mp4"):
        raise ConfigError(f"--animate writes .gif or .mp4, not {path.name}",
                          "name the file paths.gif or paths.mp4")
    if fmt == ".mp4" and not animation.writers.is_available("ffmpeg"):
        raise ConfigError("--animate .mp4 needs ffmpeg, which is not installed",
                          "install ffmpeg, or write a .gif (Pillow, always there)")
    coords = (data.get("trajectory") or {}).get("coords")
    if coords is None or (data.get("directions") or {}).get("kind") != "pca" or \
            "beta" not in (data.get("grid") or {}):
        raise ConfigError("--animate draws the runs' paths on a 2-D PCA plane",
                          "add --dims 2 --directions pca --trajectory RUN[,RUN...]")
    c = _arr(coords).reshape(-1, 2)
    fig = plane_figure({**data, "trajectory": {}}, "contour", quantity)
    ax = fig.axes[0]
    runs = paths(data)
    lines = [ax.plot([], [], "o-", color=col, ms=3, lw=1.4, label=name)[0]
             for (name, _), col in zip(runs, _COLORS)]
    ax.legend(fontsize=7, loc="upper right")
    frames = max(r.stop - r.start for _, r in runs)

    def draw(t: int):
        for line, (_, rows) in zip(lines, runs):
            pts = c[rows][: t + 1]
            line.set_data(pts[:, 0], pts[:, 1])
        return lines

    anim = animation.FuncAnimation(fig, draw, frames=frames, blit=False)
    writer = animation.PillowWriter(fps=fps) if fmt == ".gif" else animation.FFMpegWriter(fps=fps)
    with atomic_path(path, suffix=fmt) as tmp:
        anim.save(str(tmp), writer=writer, dpi=100)
    plt.close(fig)
    return path


__all__ = ["animate_paths", "curve_figure", "paths", "plane_figure", "save", "slice_figure"]
