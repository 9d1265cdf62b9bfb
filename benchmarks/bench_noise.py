"""``landscape noise`` on the digits MLP (64-128-128-10, all 1797 samples, cross-entropy, float32):
time and peak memory of landscape's computation against a naive per-sample-gradient loop.

    python benchmarks/bench_noise.py [--samples 1797] [--methods landscape,landscape-rtol,naive]

- landscape: ``alignment(problem)`` (exact α, β, μ, tr(ΣG), ‖Σ‖_F, ‖G‖_F by n x n Gram blocks of
  vmapped per-sample rows, memory bounded by the 512 MiB budget) and ``nonuniformity(problem)``
  (Lanczos on Σ_H with vmapped per-sample Hessian-vector products).
- landscape-rtol: the same with ``rtol=1e-3`` (drops each sample's output-space curvature
  directions below 1e-3 of its largest; reports the dropped trace that bounds the error).
- naive: a Python loop of per-sample backward passes for every g_i and every Jacobian row, all
  stacked (n x p and n(k-1) x p), Σ and G formed as p x p matrices, tr(ΣG) and the norms from
  them; s by the same Lanczos on a product that loops over samples (double backward each).

Each method runs in a fresh process; peak memory is the growth of the resident set during the
computation (VmHWM after resetting it, minus VmRSS before). Times are single runs: wall seconds and
CPU seconds (user + system, all threads), the latter less sensitive to a shared machine."""

from __future__ import annotations

import argparse
import math
import multiprocessing as mp
import os
import resource
import time

import torch
from common import digits, digits_mlp, markdown, pretrain

THREADS = int(os.environ.get("BENCH_THREADS", "2"))


def _status(key: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024  # MiB
    return math.nan


def _reset_peak() -> None:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def setup(samples: int, device: str = "cpu"):
    torch.manual_seed(0)
    X, Y = digits()
    model = pretrain(digits_mlp(), X, Y)
    if samples < X.shape[0]:
        idx = torch.randperm(X.shape[0], generator=torch.Generator().manual_seed(0))[:samples]
        X, Y = X[idx], Y[idx]
    return model.to(device), X.to(device), Y.to(device)


def run_landscape(model, X, Y, rtol: float) -> dict:
    import landscape
    from landscape.estimators.alignment import alignment
    from landscape.metrics.stability import nonuniformity

    pb = landscape.Problem(model, "cross-entropy", (X, Y), batch_size=256, device=X.device)
    t = time.perf_counter()
    al = alignment(pb, rtol=rtol)
    t_al = time.perf_counter() - t
    s = nonuniformity(pb, tol=1e-4)
    return {"alpha": al.alpha, "beta": al.beta, "mu": al.mu, "s": s.value, "t_align": t_al,
            "t_s": time.perf_counter() - t - t_al, "s_products": s.matvecs, "g_rows": al.g_rows,
            "g_truncation_rel": al.g_truncation / al.trace_g}


def run_naive(model, X, Y) -> dict:
    from landscape.curvature.operator import LinearOperator
    from landscape.estimators import top_eigenvalues

    params = list(model.parameters())
    p = sum(q.numel() for q in params)
    n = X.shape[0]
    t = time.perf_counter()
    U, V, total = [], [], 0.0
    for i in range(n):  # per-sample gradients and Jacobian rows, one backward pass each
        out = model(X[i : i + 1])[0]
        li = torch.nn.functional.cross_entropy(out[None], Y[i : i + 1])
        total += float(li.detach())
        U.append(
            torch.cat([g.reshape(-1) for g in torch.autograd.grad(li, params, retain_graph=True)])
        )
        J = torch.stack(
            [
                torch.cat(
                    [g.reshape(-1) for g in torch.autograd.grad(out[c], params, retain_graph=True)]
                )
                for c in range(out.numel())
            ]
        )
        pi = torch.softmax(out.detach().double(), 0)
        lam, Q = torch.linalg.eigh(torch.diag(pi) - torch.outer(pi, pi))
        keep = lam > 1e-12
        V.append(((lam[keep].sqrt()[:, None] * Q[:, keep].T).float()) @ J)
    U, V = torch.stack(U), torch.cat(V)
    L = total / n
    g = U.mean(0)
    Ut = U - g
    Sigma = (Ut.T @ Ut).div_(n)  # p x p
    G = (V.T @ V).div_(n)  # p x p
    g_rows = int(V.shape[0])
    del U, V, Ut
    tr = ss = gg = 0.0  # float64 sums over row blocks (float32 sums of 7e8 terms lose digits)
    for a in range(0, p, 2048):
        Sa, Ga = Sigma[a : a + 2048], G[a : a + 2048]
        tr += float((Sa * Ga).sum(dtype=torch.float64))
        ss += float(Sa.square().sum(dtype=torch.float64))
        gg += float(Ga.square().sum(dtype=torch.float64))
    sf, gf = math.sqrt(ss), math.sqrt(gg)
    t_al = time.perf_counter() - t
    del Sigma, G

    class LoopNonUniformity(LinearOperator):
        def _matmat(self, Vb):
            out = torch.zeros_like(Vb)
            for j in range(Vb.shape[1]):
                v = Vb[:, j]

                def hv(loss_fn, v):
                    ps = [q.detach().requires_grad_(True) for q in params]
                    loss = loss_fn(ps)
                    gr = torch.autograd.grad(loss, ps, create_graph=True)
                    flat = torch.cat([x.reshape(-1) for x in gr])
                    return torch.cat([x.reshape(-1) for x in torch.autograd.grad(flat @ v, ps)])

                def sample_loss(i):
                    return lambda ps: torch.nn.functional.cross_entropy(
                        torch.func.functional_call(model, dict(zip([k for k,
                            _ in model.named_parameters()], ps)),
                                                   (X[i : i + 1],)), Y[i : i + 1])

                acc = torch.zeros_like(v)
                for i in range(n):
                    acc += hv(sample_loss(i), hv(sample_loss(i), v))
                full = lambda ps: torch.nn.functional.cross_entropy(
                    torch.func.functional_call(model, dict(zip([k for k,
                        _ in model.named_parameters()], ps)), (X,)), Y)
                out[:, j] = acc / n - hv(full, hv(full, v))
            return out

    t2 = time.perf_counter()
    e = top_eigenvalues(LoopNonUniformity(p, torch.float32, X.device), k=1, tol=1e-4, seed=0)
    return {"alpha": tr / (sf * gf), "beta": sf / (2 * L * gf), "mu": tr / (2 * L * gf**2),
            "s": math.sqrt(max(float(e.values[0]), 0.0)), "t_align": t_al,
            "t_s": time.perf_counter() - t2,
            "s_products": e.matvecs, "g_rows": g_rows, "g_truncation_rel": 0.0}


def child(method: str, samples: int, device: str, queue) -> None:
    torch.set_num_threads(THREADS)
    model, X, Y = setup(samples, device)
    base = _status("VmRSS")
    _reset_peak()
    t = time.perf_counter()
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    if method == "naive":
        out = run_naive(model, X, Y)
    else:
        out = run_landscape(model, X, Y, rtol=1e-3 if method == "landscape-rtol" else 0.0)
    out["seconds"] = time.perf_counter() - t
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    out["cpu_seconds"] = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    out["load"] = os.getloadavg()[0]
    out["peak_mib"] = _status("VmHWM") - base
    queue.put(out)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--samples", type=int, default=1797)
    ap.add_argument("--methods", default="landscape,landscape-rtol,naive")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    ctx = mp.get_context("spawn")
    rows = []
    for method in args.methods.split(","):
        q = ctx.Queue()
        proc = ctx.Process(target=child, args=(method, args.samples, args.device, q))
        proc.start()
        r = q.get()
        proc.join()
        print(method, r, flush=True)
        rows.append([method, f"{r['seconds']:.0f}", f"{r['cpu_seconds']:.0f}",
                     f"{r['t_align']:.1f}", f"{r['t_s']:.1f} ({r['s_products']})",
                     f"{r['peak_mib']:.0f}", str(r["g_rows"]), f"{r['alpha']:.6f}",
                     f"{r['beta']:.6f}", f"{r['mu']:.6f}", f"{r['s']:.5f}"])
    print(f"\ndigits MLP 64-128-128-10 (p = 26122), n = {args.samples}, cross-entropy, float32, "
          f"{THREADS} CPU threads\n")
    print(markdown(rows, ["method", "wall s", "CPU s", "α, β, μ: wall s", "s: seconds (products)",
                          "peak MiB",
                          "G rows", "α", "β", "μ", "s"]))


if __name__ == "__main__":
    main()
