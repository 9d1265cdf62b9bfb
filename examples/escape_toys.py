"""The lecture's one-dimensional escape examples, run through landscape's escape engine.

1. ``f1 = min(x², 0.1(x−1)²)``, ``f2 = min(x², 1.9(x−1)²)`` (no ½), ``L = ½(f1 + f2)``, η = 0.7,
   ``x0 = 1 − 1e-5`` (lecture "An illustrative example", Figure 15): GD stays at the minimum
   ``x = 1`` while SGD (one function per step) leaves it for ``x = 0``. The version printed with ½
   is stable for SGD too.
2. The quadratic family ``f = (1/2n) Σ a_i x²`` (slides eqs. 2-6): the measured ``E x_t²`` over
   many SGD trajectories against ``r^t``, ``r = (1 − ηa)² + η²(n−B)/(B(n−1)) s²``, on both sides of
   the stability boundary ``r = 1``.

    python examples/escape_toys.py [--out-dir escape-toys] [--trajectories 200]
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import torch

from landscape.escape import (
    quadratic_family,
    second_moment_factor,
    sharpness_nonuniformity,
    simulate,
    slides_pair,
)
from landscape.escape.analysis import summarize
from landscape.escape.toys import slides_pair_curvatures
from landscape.io.escape_figures import save_escape_figure
from landscape.io.figures import plt, save

F64 = torch.float64


def slides_example(out: Path, T: int) -> None:
    x0 = torch.tensor([1 - 1e-5], dtype=F64)
    r = second_moment_factor(slides_pair_curvatures(), 0.7, 1)
    runs = []
    print("f1 = min(x², 0.1(x−1)²), f2 = min(x², 1.9(x−1)²), η = 0.7, x0 = 1 − 1e-5")
    for label, f, dyn in [("GD", slides_pair(), "gd"), ("SGD", slides_pair(), "sgd"),
                          ("SGD, version with ½", slides_pair(half=True), "sgd")]:
        traj = simulate(f, x0, dyn, lr=0.7, batch_size=1, steps=200, trajectories=T, seed=0)
        s = summarize(traj, escape_factor=10.0, predicted=r if label == "SGD" else None,
                      prediction="exact 1-D factor at x = 1" if label == "SGD" else None)
        left = traj.distances > 0.5  # crossed into the basin of x = 0
        frac = float(left.any(1).double().mean())
        med = (
            float(left.double().argmax(1)[left.any(1)].double().median())
            if bool(left.any())
            else math.nan
        )
        print(
            f"  {label:22s} left x = 1: {100 * frac:5.1f}% (median step {med:g}); loss > 10x "
            "start: "
            f"{100 * s.fraction_escaped:5.1f}%; mean-loss growth {s.growth_rate:.3f}/step"
        )
        runs.append((traj.record_steps, traj.losses, {**s.to_dict(), "dynamics": label}))
    print(f"  linearised at x = 1: GD factor (1 − 0.7·2)² = 0.16, SGD E(x−1)² factor {r:.4f}")
    path = save_escape_figure(runs, out / "slides_pair.png",
                              "f1 = min(x², 0.1(x−1)²), f2 = min(x², 1.9(x−1)²), η = 0.7")
    print(f"  wrote {path}")


def quadratic_example(out: Path, T: int) -> None:
    """Sweep η across the boundary: the measured per-step factor ``E x²_{t+1} / E x²_t`` (the mean
    of the iid factors ``x²_{t+1}/x²_t`` over trajectories and steps; ``E x_t²`` itself is
    heavy-tailed over many steps) against slides eq. 6, for B = 1 and 2."""
    a = [1.0, 2.0, 3.0, 10.0]
    mean, s = sharpness_nonuniformity(a)
    print(f"\nf = (1/2n) Σ a_i x², a = {a}: sharpness a = {mean:g}, non-uniformity s = {s:.4g}")
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    grid = torch.linspace(0.05, 0.48, 12).tolist()
    fine = torch.linspace(0.02, 0.5, 400).tolist()
    ax.plot(fine, [(1 - lr * mean) ** 2 for lr in fine], color="gray", lw=1, ls="--",
            label="GD (1 − ηa)²")
    for B, color in [(1, "tab:blue"), (2, "tab:red")]:
        ax.plot(fine, [second_moment_factor(a, lr, B) for lr in fine], color=color, lw=1,
                label=f"eq. 6, B = {B}")
        meas, err = [], []
        for lr in grid:
            traj = simulate(quadratic_family(a), torch.tensor([1.0], dtype=F64), "sgd", lr=lr,
                            batch_size=B,
                            steps=5, trajectories=10 * T, seed=1)
            ratios = (traj.losses[:, 1:] / traj.losses[:, :-1]).reshape(-1)
            meas.append(float(ratios.mean()))
            err.append(2 * float(ratios.std()) / math.sqrt(ratios.numel()))
        ax.errorbar(grid, meas, yerr=err, fmt="o", ms=3, capsize=2, color=color,
                    label=f"measured, B = {B} (±2 se)")
        worst = max(
            abs(m - second_moment_factor(a, lr, B)) / (e / 2) for m, e, lr in zip(meas, err, grid)
        )
        cross = next((lr for lr in torch.linspace(0.02, 0.5,
                                                  2000).tolist() if second_moment_factor(a, lr,
                                                      B) > 1), None)
        print(
            f"  B = {B}: SGD unstable for η > {cross:.4f} (GD for η > {2 / mean:g}); measured "
            "factor within "
            f"{worst:.1f} standard errors of eq. 6 at all {len(grid)} learning rates"
        )
    ax.axhline(1.0, color="k", lw=0.8)
    ax.set_yscale("log")
    ax.set_xlabel("learning rate η")
    ax.set_ylabel("per-step factor E x²(t+1) / E x²(t)")
    ax.set_title("quadratic family a = [1, 2, 3, 10]: SGD leaves x* = 0 where the factor exceeds 1",
                 fontsize=9)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    print(f"  wrote {save(fig, out / 'quadratic_family.png')}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out-dir", type=Path, default=Path("escape-toys"))
    ap.add_argument("--trajectories", type=int, default=200)
    args = ap.parse_args()
    args.out_dir.mkdir(parents=True, exist_ok=True)
    slides_example(args.out_dir, args.trajectories)
    quadratic_example(args.out_dir, args.trajectories)


if __name__ == "__main__":
    main()
