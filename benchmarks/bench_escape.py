"""Escape runs, trajectories x steps per second: ``landscape.escape.simulate`` with T trajectories
vectorised (parameters stacked ``[T, p]``, ``torch.func.vmap`` over the trajectory axis) against
the same engine run one trajectory at a time (one seed per call: the reproducibility reference)
and against a plain PyTorch loop (an ``nn.Module`` per trajectory, autograd, a manual SGD step;
timed on one thread and on ``--threads``, the faster counts).

Model and data: the digits MLP 64-128-128-10 (p = 26,122) on all 1797 sklearn digits,
cross-entropy, float32, CPU. Every step of every method: one SGD step with a minibatch of B = 10
drawn without replacement, then the loss on a fixed evaluation subset (``--eval-samples``; the
escape run's per-step record) and the distance from the start.

    python benchmarks/bench_escape.py [--trajectories 200] [--steps 20] [--loop-trajectories 16]
                                      [--eval-samples 256] [--dynamics sgd,isotropic] [--threads N]
                                      [--repeats 3]
"""

from __future__ import annotations

import argparse
import copy
import time

import torch
from common import digits, digits_mlp, markdown, pretrain
from torch import nn

from landscape.escape import eval_subset, simulate, trajectory_seeds
from landscape.problem import Problem

LR, B = 0.1, 10


def plain_loop(model: nn.Module, X, Y, ev, seeds, steps: int, every: int) -> float:
    """One trajectory after another with ordinary PyTorch; returns seconds."""
    Xe, Ye = (X, Y) if ev is None else (X[ev.to(X.device)], Y[ev.to(X.device)])
    t = time.perf_counter()
    for s in seeds:
        m = copy.deepcopy(model)
        params = list(m.parameters())
        start = nn.utils.parameters_to_vector(params).detach().clone()
        g = torch.Generator().manual_seed(s)
        for step in range(steps):
            if step % every == 0:
                with torch.no_grad():
                    nn.functional.cross_entropy(m(Xe), Ye)
                    (nn.utils.parameters_to_vector(params) - start).norm()
            idx = torch.randperm(X.shape[0], generator=g)[:B].to(X.device)
            m.zero_grad(set_to_none=True)
            nn.functional.cross_entropy(m(X[idx]), Y[idx]).backward()
            with torch.no_grad():
                for p in params:
                    p.sub_(LR * p.grad)
    return time.perf_counter() - t


def with_threads(n: int, fn):
    """``fn()`` with ``n`` torch threads (restored after)."""
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        return fn()
    finally:
        torch.set_num_threads(old)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trajectories", type=int, default=200)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--loop-trajectories", type=int, default=16,
                    help="trajectories timed one at a time")
    ap.add_argument("--eval-samples", type=int, default=256, help="0: the loss on all 1797 samples")
    ap.add_argument("--eval-every", default="1,10",
                    help="record the loss every K steps (comma list: one table block each)")
    ap.add_argument("--dynamics", default="sgd")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--repeats", type=int, default=3, help="best of this many runs of each method")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    X, Y = digits()
    model = pretrain(digits_mlp(0), X, Y, steps=100)
    pb = Problem(model, "cross-entropy", (X, Y), device=args.device)
    ev = eval_subset(pb.n, args.eval_samples or None, 0)
    T, steps, k = args.trajectories, args.steps, args.loop_trajectories
    seeds = trajectory_seeds(0, T)
    simulate(pb, pb.theta, "sgd", lr=LR, batch_size=B, steps=2, seeds=seeds[:2],
             eval_idx=ev)  # warm-up

    rows = []
    for every in [int(e) for e in args.eval_every.split(",")]:
        for dyn in args.dynamics.split(","):
            kw = {"lr": LR, "batch_size": B, "steps": steps, "eval_idx": ev, "eval_every": every}
            R = range(args.repeats)  # best of R: the shared machine's noise only ever slows a run
            r_vec = max(simulate(pb, pb.theta, dyn, seeds=seeds, **kw).throughput for _ in R)
            t_one = min(sum(simulate(pb, pb.theta, dyn, seeds=[s],
                                     **kw).seconds for s in seeds[:k]) for _ in R)
            r_one = k * steps / t_one
            r_plain = None
            if dyn == "sgd":  # at its best: small products often run faster on one thread
                X, Y = pb.tensors()
                def loop(X=X, Y=Y, k=k, every=every):
                    return plain_loop(pb.model, X, Y, ev, seeds[:k], steps, every)

                t_plain = min(with_threads(n, loop)
                              for n in {1, torch.get_num_threads()} for _ in R)
                r_plain = k * steps / t_plain
            vs_plain = "-" if r_plain is None else f"{r_vec / r_plain:.1f}x"
            rows.append([every, dyn, f"vectorised, T = {T}", f"{r_vec:.0f}",
                         f"{r_vec / r_one:.1f}x", vs_plain])
            rows.append([every, dyn, "landscape, one trajectory per call", f"{r_one:.0f}", "1.0x",
                         "-" if r_plain is None else f"{r_one / r_plain:.1f}x"])
            if r_plain is not None:
                rows.append([every, dyn,
                             "plain PyTorch loop (nn.Module + autograd, best of 1 and N threads)",
                             f"{r_plain:.0f}",
                             f"{r_plain / r_one:.1f}x", "1.0x"])
    ev_txt = "all 1797" if ev is None else f"{ev.numel()}"
    print(
        f"digits MLP 64-128-128-10 (p = {pb.p}), n = {pb.n}, B = {B}, lr = {LR}, {steps} steps, "
        "loss "
        f"recorded on {ev_txt} samples every K steps, float32, {args.device}, "
        f"{torch.get_num_threads()} threads; one-at-a-time "
        f"rows time {k} trajectories\n"
    )
    print(markdown(rows, ["record every K", "dynamics", "method", "traj x steps / s",
                          "vs one per call",
                          "vs plain loop"]))


if __name__ == "__main__":
    main()
