"""Write one figure of each kind of `landscape slice` / `interpolate` into docs/figures/, and
issue 16's: optimizers on one PCA plane, and curvature along the gradient at the edge of stability.

    python scripts/make_readme_figures.py [--checkpoints checkpoints] [--out docs/figures] [--points
    41]

Uses the shipped checkpoints (``checkpoints/digits-mlp-sgd.pt`` for the slices, and
``digits-mlp-gd.pt`` -> ``digits-mlp-sgd.pt`` for the interpolation: the lecture's Figure 6). The
PCA plane needs a run's trajectory, which the shipped files do not hold: a short SGD run of the
same MLP is trained with the library's loop (``landscape train``'s code) into ``--work`` with
checkpoints every 30 steps. Where the shipped checkpoints are absent, two digits MLPs are trained
first. Every figure is made by the CLI, with the command printed above its table.
"""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def trajectory_run(work: Path) -> Path:
    """Minibatch SGD on digits (MLP 64-128-128-10, batch 32, lr 0.1, 8 epochs), checkpoints every 30
    steps."""
    from landscape.train import TrainConfig, train

    cfg = TrainConfig(model="mlp", model_kwargs={"widths": [128, 128]}, data="digits",
                      optimizer="sgd", lr=0.1,
                      momentum=0.0, batch_size=32, epochs=8, seed=0, checkpoint_every=30,
                      plot=False)
    return train(cfg, work / "sgd-digits", force=True).path


def train_fallback(work: Path) -> tuple[Path, Path, Path]:
    """Full-batch GD and minibatch SGD on digits (MLP 64-64-64-10); the SGD run saves its
    trajectory."""
    import torch

    from landscape.data import load_dataset
    from landscape.io.checkpoint import make_checkpoint
    from landscape.models import build_model, model_kwargs_for

    split = load_dataset("digits")
    kw = model_kwargs_for("mlp", split, widths=[64, 64])
    X, Y = split.train

    def train(batch: int | None, lr: float, steps: int, run: Path | None) -> Path:
        model = build_model("mlp", seed=0, **kw)
        opt = torch.optim.SGD(model.parameters(), lr=lr)
        g = torch.Generator().manual_seed(0)
        for t in range(steps + 1):
            if run is not None and t % 25 == 0:
                make_checkpoint("mlp", kw, "digits", {}, "cross-entropy", model, {"step": t,
                    "optimizer": "sgd"},
                                split=split).save(run / f"step-{t:06d}.pt")
            if t == steps:
                break
            idx = torch.arange(X.shape[0]) if batch is None else torch.randint(0, X.shape[0],
                (batch,), generator=g)
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(X[idx]), Y[idx]).backward()
            opt.step()
        name = "sgd" if batch else "gd"
        out = (run / "final.pt") if run is not None else work / f"{name}.pt"
        make_checkpoint("mlp", kw, "digits", {}, "cross-entropy", model,
                        {"step": steps, "optimizer": name, "lr": lr,
                         "batch_size": batch or X.shape[0]},
                        split=split).save(out)
        return out

    run = work / "sgd-digits"
    run.mkdir(parents=True, exist_ok=True)
    gd = train(None, 0.5, 400, None)
    sgd = train(16, 0.1, 400, run)
    return run, gd, sgd


def optimizers_and_edge_of_stability(work: Path, fig: Path, n: int) -> None:
    """Issue 16's figures: four optimizers' paths on one PCA plane (with the VTK/CSV export and
    the animation), and the curvature along the gradient and the update during a GD run at the
    edge of stability, beside λ_max and 2/lr."""
    runs = []
    for opt in ("gd", "sgd", "sam", "fsam"):
        cli("train", "--optimizer", opt, "--lr", "0.1", "--momentum", "0", "--batch-size", "64",
            "--steps", "150", "--checkpoint-every", "15", "--no-plot", "--out", work / opt,
            "--force")
        runs.append(work / opt)
    cli("slice", work / "sgd" / "final.pt", "--dims", "2", "--directions", "pca",
        "--trajectory", ",".join(map(str, runs)), "--points", n, "--out", work / "plane.h5",
        "--plot", fig / "optimizers-plane.png", "--export", "vtk,csv",
        "--animate", fig / "optimizers-paths.gif")
    cli("train", "--optimizer", "gd", "--lr", "0.4", "--steps", "400", "--track",
        "eig,grad-curvature,update-curvature", "--every", "5", "--track-arg", "tol=1e-4",
        "--out", work / "eos", "--force", "--no-plot")
    cli("plot", work / "eos" / "run.h5", "--out", fig / "eos-curvature.png")


def cli(*args) -> None:
    from landscape.cli.app import app

    print("$ landscape " + " ".join(shlex.quote(str(a)) for a in args), flush=True)
    app([str(a) for a in args], standalone_mode=False)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--checkpoints", type=Path, default=ROOT / "checkpoints")
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "figures")
    ap.add_argument("--work", type=Path, default=ROOT / "out" / "readme-figures")
    ap.add_argument("--points", type=int, default=41)
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    a, b = args.checkpoints / "digits-mlp-gd.pt", args.checkpoints / "digits-mlp-sgd.pt"
    if a.is_file() and b.is_file():
        print(f"training a short SGD run for the PCA plane into {args.work}", flush=True)
        run = trajectory_run(args.work)
    else:
        print(
            f"no shipped checkpoints in {args.checkpoints}: training two digits MLPs into "
            f"{args.work}",
            flush=True,
        )
        run, a, b = train_fallback(args.work)
    final, fig, n = b, args.out, args.points
    h5 = args.work / "slice-2d.h5"
    h5.parent.mkdir(parents=True, exist_ok=True)
    cli("slice", final, "--dims", "1", "--directions", "random", "--filter-norm", "--range", "-1",
        "1",
        "--points", 51, "--plot", fig / "slice-1d.png")
    cli("slice", final, "--dims", "2", "--directions", "random", "--filter-norm", "--range", "-1",
        "1",
        "--points", n, "--out", h5, "--plot", fig / "slice-2d-contour.png")
    cli("plot", h5, "--kind", "heatmap", "--out", fig / "slice-2d-heatmap.png")
    cli("plot", h5, "--kind", "surface", "--out", fig / "slice-2d-surface.png")
    cli("slice", final, "--dims", "2", "--directions", "eigen", "--range", "-0.5", "0.5",
        "--points", n,
        "--plot", fig / "slice-eigen.png")
    cli("slice", run / "final.pt", "--dims", "2", "--directions", "pca", "--trajectory", run,
        "--points", n,
        "--plot", fig / "slice-pca.png")
    cli("interpolate", a, b, "--range", "-0.5", "1.5", "--points", 81, "--plot",
        fig / "interpolation.png")
    optimizers_and_edge_of_stability(args.work, fig, n)


if __name__ == "__main__":
    main()
