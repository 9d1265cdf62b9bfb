"""Speed against process count: Hessian trace and top-5 eigenvalues of the digits MLP (p = 26,122,
all 1,797 samples, batches of 256, float32) in 1 and 2 data-parallel processes (gloo on the CPU),
each process one thread; plus one process with 2 threads (the same cores used by intra-op
threads instead of data parallelism).

    python benchmarks/bench_distributed.py [--probes 100] [--repeats 3] [--procs 1,2]

Each configuration is spawned fresh (torch.multiprocessing, TCP rendezvous on localhost); a time
is the slowest rank's, the best of ``--repeats`` runs (a fresh Hessian each time: its gradient
graphs are built inside the timing). ``all-reduce`` is the time the same sequence of all-reduces
(one ``[p, block]`` tensor per block product) takes alone, i.e. the communication part.

Expected scaling: a product of N ranks costs ``C/N`` compute (each rank its ``n/N`` samples) plus
one all-reduce of the ``[p, k]`` block of k probes, i.e. ``2 (N-1)/N · 4p`` bytes sent per rank
and probe (ring all-reduce; 209 KB per probe for p = 26,122 in float32 at N = 2) and a latency
per call, so ``T_N ≈ T_1/N + m (2 (N-1)/N · 4p / bandwidth) + calls · latency``; with ``C`` in the
tens of milliseconds per probe and a memory-speed loopback, the all-reduce is well under 1%
and the speed-up is bounded by the cores actually free.
"""

from __future__ import annotations

import argparse
import os
import socket
import tempfile
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from common import digits, digits_mlp, markdown, pretrain

BATCH = 256


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _timed(fn, repeats: int) -> float:
    """Best of ``repeats`` of the slowest rank's wall time."""
    best = float("inf")
    for _ in range(repeats):
        if dist.is_initialized():
            dist.barrier()
        t = time.perf_counter()
        fn()
        if dist.is_initialized():
            dist.barrier()
        el = torch.tensor([time.perf_counter() - t], dtype=torch.float64)
        if dist.is_initialized():
            dist.all_reduce(el, op=dist.ReduceOp.MAX)
        best = min(best, float(el))
    return best


def worker(rank: int, world: int, port: int, threads: int, probes: int, repeats: int, out: str,
           device: str = "cpu") -> None:
    os.environ.update({"RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(world),
                       "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
    torch.set_num_threads(1)  # the same pretrained model in every configuration
    cuda = device.startswith("cuda")
    if cuda:  # one GPU per rank, NCCL between them
        torch.cuda.set_device(rank)
        device = f"cuda:{rank}"
    if world > 1:
        dist.init_process_group("nccl" if cuda else "gloo", rank=rank, world_size=world,
                                init_method=f"tcp://127.0.0.1:{port}")
    from landscape import Hessian, Problem
    from landscape.estimators import top_eigenvalues, trace

    X, Y = digits()
    model = pretrain(digits_mlp(), X, Y)
    torch.set_num_threads(threads)
    pb = Problem(model, "cross-entropy", (X, Y), batch_size=BATCH, device=device)
    block = Hessian(pb).block_size
    res: dict = {"p": pb.p, "n": pb.n, "block": block}
    res["trace"] = _timed(lambda: trace(Hessian(pb), probes=probes, seed=0), repeats)
    eig = {}

    def run_eig():
        eig["e"] = top_eigenvalues(Hessian(pb), k=5, which="top", tol=1e-6, seed=0)

    res["eig"] = _timed(run_eig, repeats)
    res["eig_matvecs"] = eig["e"].matvecs
    res["lambda_max"] = float(eig["e"].values[0])
    if world > 1:  # the same all-reduces alone: trace's blocks, then one p-vector per Lanczos step
        calls = [min(block, probes - s) for s in range(0, probes, block)] + [1] * eig["e"].matvecs

        def comm():
            for k in calls:
                dist.all_reduce(torch.zeros(k, pb.p, device=pb.device))

        res["allreduce"] = _timed(comm, repeats)
        res["allreduce_bytes"] = sum(calls) * pb.p * 4
        dist.destroy_process_group()
    else:
        res["allreduce"] = 0.0
        res["allreduce_bytes"] = 0
    if rank == 0:
        torch.save(res, out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--probes", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--procs", default="1,2")
    ap.add_argument("--device", default="cpu",
                    help="cpu (gloo), or cuda: one GPU per process (NCCL)")
    args = ap.parse_args()
    configs = [(int(n), 1) for n in args.procs.split(",")] + [(1, 2)]
    rows, base = [], None
    with tempfile.TemporaryDirectory() as tmp:
        for world, threads in configs:
            out = str(Path(tmp) / f"r{world}-{threads}.pt")
            mp.spawn(worker, args=(world, _free_port(), threads, args.probes, args.repeats, out,
                                   args.device),
                     nprocs=world, join=True)
            r = torch.load(out, weights_only=False)
            if base is None:
                base = r
            rows.append(
                [
                    f"{world} x {threads} thread{'s' if threads > 1 else ''}",
                    f"{r['trace']:.2f}",
                    f"{base['trace'] / r['trace']:.2f}x",
                    f"{r['eig']:.2f} ({r['eig_matvecs']} products)",
                    f"{base['eig'] / r['eig']:.2f}x",
                    f"{r['allreduce']:.3f} s ({r['allreduce_bytes'] / 2**20:.0f} MiB)"
                    if world > 1
                    else "-",
                    f"{r['lambda_max']:.5f}",
                ]
            )
    print(
        f"digits MLP: p = {base['p']}, n = {base['n']}, batches of {BATCH}, float32, "
        f"{args.probes} Hutchinson probes in blocks of {base['block']}, top-5 Lanczos tol 1e-6; "
        f"best of {args.repeats}, slowest rank; {os.cpu_count()} CPU cores, load "
        f"{os.getloadavg()[0]:.1f}\n"
    )
    print(markdown(rows, ["processes x threads", "trace (s)", "speed-up", "top-5 eig (s)",
                          "speed-up",
                          "all-reduce alone", "λ_max"]))


if __name__ == "__main__":
    main()
