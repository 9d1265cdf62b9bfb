"""Grid points per second of a 41x41 loss-surface slice of the digits MLP (64-128-128-10, sklearn
digits, all 1797 samples, float32, filter-normalised random directions): several parameter points
per vmapped forward pass against one point at a time.

    python benchmarks/bench_slice.py [--threads 2] [--points 41] [--samples 1797,256,64] [--repeats
    3]

Columns:
- ``module loop``: the usual script (Li et al.'s loss-landscape code does this): copy θ + αd₁ + βd₂
  into the module's parameters, then forward each data batch of 128 through the module.
- ``one point at a time``: landscape's evaluator with ``batch_points=1`` (a plain
  ``functional_call`` per point, the whole data set in one batch).
- ``batched``: landscape with ``batch_points`` points stacked and pushed through
  ``vmap(functional_call)`` (the best of the listed sizes, which is shown).

Every mode evaluates the loss and the accuracy at every point and must give the same numbers."""

from __future__ import annotations

import argparse
import time

import torch
from common import digits, digits_mlp, markdown, pretrain

from landscape import Problem
from landscape.slices import PointEvaluator, axis, grid_coordinates, random_directions


def module_loop(model, X, Y, theta, D, coords, batch=128):
    """One point at a time through the module itself (the peer scripts' way)."""
    params = list(model.parameters())
    losses, accs = [], []
    with torch.no_grad():
        for c in coords:
            torch.nn.utils.vector_to_parameters(theta + D @ c, params)
            total, correct = 0.0, 0
            for i in range(0, X.shape[0], batch):
                out = model(X[i : i + batch])
                total += float(
                    torch.nn.functional.cross_entropy(out, Y[i : i + batch], reduction="sum")
                )
                correct += int((out.argmax(1) == Y[i : i + batch]).sum())
            losses.append(total / X.shape[0])
            accs.append(correct / X.shape[0])
    return torch.tensor(losses, dtype=torch.float64), torch.tensor(accs, dtype=torch.float64)


def landscape_points(pb, theta, D, coords, batch_points):
    ev = PointEvaluator(pb, batch_points)
    losses, accs = [], []
    for i in range(0, coords.shape[0], batch_points):
        c = coords[i : i + batch_points].to(theta)
        loss, acc = ev.evaluate(theta + c @ D.T)
        losses.append(loss)
        accs.append(acc)
    return torch.cat(losses), torch.cat(accs)


def timed(fn, repeats):
    best, out = float("inf"), None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--points", type=int, default=41)
    ap.add_argument("--samples", default="1797,256,64")
    ap.add_argument("--batch-points", default="4,16,64")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    X, Y = digits()
    model = pretrain(digits_mlp(), X, Y)
    X, Y, model = X.to(args.device), Y.to(args.device), model.to(args.device)
    rows = []
    for n in [int(s) for s in args.samples.split(",")]:
        idx = (
            torch.randperm(X.shape[0], generator=torch.Generator().manual_seed(0))[:n]
            .sort()
            .values.to(X.device)
        )
        Xn, Yn = X[idx], Y[idx]
        pb = Problem(model, "cross-entropy", (Xn, Yn), batch_size=n, device=args.device)
        theta = pb.theta
        D = random_directions(theta, pb.layout, 2, seed=0)
        coords = grid_coordinates([axis(-1, 1, args.points)] * 2).to(theta)
        m = coords.shape[0]
        net = digits_mlp().to(args.device)
        t_mod, ref = timed(lambda: module_loop(net, Xn, Yn, theta, D, coords),  # noqa: B023
                           args.repeats)
        t_one, one = timed(lambda: landscape_points(pb, theta, D, coords, 1),  # noqa: B023
                           args.repeats)
        best = (float("inf"), None)
        for bp in [int(b) for b in args.batch_points.split(",")]:
            t, out = timed(lambda: landscape_points(pb, theta, D, coords, bp),  # noqa: B023
                           args.repeats)
            assert torch.allclose(out[0], one[0],
                                  rtol=1e-4) and (out[1] - one[1]).abs().max() < 2e-3
            best = min(best, (t, bp), key=lambda r: r[0])
        assert torch.allclose(one[0], ref[0], rtol=1e-4)
        t_b, bp = best
        rows.append([n, f"{m / t_mod:.0f}", f"{m / t_one:.0f}",
                     f"{m / t_b:.0f} (batch_points={bp})",
                     f"{t_one / t_b:.2f}x", f"{t_mod / t_b:.2f}x"])
        print(
            f"samples={n}: module {m / t_mod:.0f}/s, one-at-a-time {m / t_one:.0f}/s, batched "
            f"{m / t_b:.0f}/s",
            flush=True,
        )
    print()
    print(
        f"{args.points}x{args.points} slice, digits MLP 64-128-128-10, float32, {args.device}, "
        f"{args.threads} thread(s), "
        f"best of {args.repeats}; grid points per second"
    )
    print()
    print(markdown(rows, ["samples", "module loop (batches of 128)", "one point at a time",
                          "batched (vmap)",
                          "batched / one at a time", "batched / module loop"]))


if __name__ == "__main__":
    main()
