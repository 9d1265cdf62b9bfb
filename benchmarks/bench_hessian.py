"""Hessian trace probes and top-5 eigenvalues: landscape beside PyHessian 0.1, hessian-eigenthings
1.0 and curvlinops 3.0 (+ scipy eigsh), in one process, on the same model, data and mini-batches.

    pip install pyhessian==0.1 hessian-eigenthings==1.0.0a5
    pip install --no-deps curvlinops-for-pytorch==3.0.1 backpack-for-pytorch unfoldNd einconv
    linear_operator opt-einsum
    python benchmarks/bench_hessian.py [--models mlp,cnn] [--probes 30]

(``--no-deps`` because backpack's torchvision requirement would replace the CPU torch.)
Accuracy of the top-5 eigenvalues is the largest relative error against a float64 Lanczos
reference at tolerance 1e-10 (true residuals reported by landscape itself).
"""

from __future__ import annotations

import argparse
import warnings

import numpy as np
import torch
from common import best_of, digits, digits_cnn, digits_mlp, markdown, pretrain

import landscape
from landscape.estimators import top_eigenvalues, trace

warnings.filterwarnings("ignore")
BATCH = 256
DEVICE = "cpu"  # --device


def reference_top5(model, X, Y):
    H = landscape.Hessian(model, "cross-entropy", (X, Y), batch_size=BATCH, dtype="float64",
                          device=DEVICE)
    e = top_eigenvalues(H, k=5, which="top", tol=1e-10, seed=123)
    return e.values.double().cpu()


def rel_err(values, ref) -> float:
    v = torch.as_tensor(np.sort(np.asarray(values, dtype=np.float64))[::-1].copy())
    return float(((v[:5] - ref[:5]).abs() / ref[:5].abs()).max())


def run_model(name: str, model, X, Y, probes: int, rows_trace: list, rows_eig: list,
              args_tol: float = 1e-7) -> None:
    loader = list(zip(X.split(BATCH), Y.split(BATCH)))
    ref = reference_top5(model, X, Y)
    p = sum(q.numel() for q in model.parameters())
    crit = torch.nn.CrossEntropyLoss()

    # ---- landscape
    H = landscape.Hessian(model, "cross-entropy", (X, Y), batch_size=BATCH, device=DEVICE)
    trace(H, probes=4, seed=0)  # warm-up (builds the cached gradient graphs)
    t_ours = best_of(lambda: trace(H, probes=probes, seed=1)) / probes
    box = {}
    t_eig_ours = best_of(lambda: box.update(e=top_eigenvalues(landscape.Hessian(model,
        "cross-entropy", (X, Y), batch_size=BATCH, device=DEVICE), k=5, tol=args_tol, seed=0)), 2)
    err_ours = rel_err(box["e"].values.tolist(), ref)
    mv_ours = box["e"].matvecs
    results_trace = {"landscape": t_ours}
    results_eig = {"landscape": (t_eig_ours, err_ours, mv_ours)}
    # single-vector Lanczos, the peers' kind of solver (the default block of k finds repeated
    # eigenvalues' every copy, for about twice the products)
    t = best_of(lambda: box.update(e=top_eigenvalues(landscape.Hessian(model, "cross-entropy", (X,
        Y), batch_size=BATCH, device=DEVICE), k=5, tol=args_tol, seed=0, block=1)), 2)
    results_eig["landscape, block 1"] = (t, rel_err(box["e"].values.tolist(), ref),
                                         box["e"].matvecs)

    # ---- PyHessian 0.1 (power iteration; its default tol 1e-3)
    try:
        from pyhessian import hessian as PyHessian

        ph = PyHessian(model, crit, dataloader=loader, cuda=DEVICE.startswith("cuda"))
        results_trace["PyHessian 0.1"] = best_of(lambda: ph.trace(maxIter=probes, tol=0.0),
                                                 1) / probes
        box = {}
        t = best_of(lambda: box.update(v=ph.eigenvalues(top_n=5, maxIter=100, tol=1e-3)[0]), 1)
        results_eig["PyHessian 0.1 (power, tol 1e-3)"] = (t, rel_err(box["v"], ref), None)
    except ImportError:
        pass

    # ---- hessian-eigenthings 1.0
    try:
        import hessian_eigenthings as he

        op = he.HessianOperator(model, loader, he.supervised_loss(crit))
        results_trace["hessian-eigenthings 1.0"] = best_of(lambda: he.hutchinson(op,
            num_samples=probes, seed=1), 1) / probes
        box = {}
        t = best_of(lambda: box.update(r=he.lanczos(op, k=5, which="LA", tol=1e-6, seed=0)), 1)
        results_eig["hessian-eigenthings 1.0 (lanczos)"] = (
            t,
            rel_err(box["r"].eigenvalues.tolist(), ref),
            None,
        )
    except ImportError:
        pass

    # ---- curvlinops 3.0 (+ scipy eigsh)
    try:
        from curvlinops import HessianLinearOperator, hutchinson_trace
        from scipy.sparse.linalg import eigsh

        params = [q for q in model.parameters()]
        A = HessianLinearOperator(model, crit, params, loader, check_deterministic=False)
        results_trace["curvlinops 3.0"] = best_of(lambda: hutchinson_trace(A, probes), 1) / probes
        As = A.to_scipy()
        box = {}
        t = best_of(lambda: box.update(v=eigsh(As, k=5, which="LA", tol=1e-6, v0=np.ones(p,
            dtype=np.float32))[0]), 1)
        results_eig["curvlinops 3.0 + eigsh"] = (t, rel_err(box["v"], ref), None)
    except ImportError:
        pass

    fastest_peer_t = min((v for k, v in results_trace.items() if k != "landscape"), default=None)
    for k, v in results_trace.items():
        rows_trace.append([name, k, f"{v * 1e3:.2f}", f"{v / t_ours:.2f}x"])
    for k, (t, err, mv) in results_eig.items():
        rows_eig.append([name, k + (f" (tol {args_tol:g})" if k.startswith("landscape") else ""),
                         f"{t:.2f}", f"{err:.1e}", mv if mv is not None else "",
                         f"{t / t_eig_ours:.2f}x"])
    if fastest_peer_t:
        rows_trace.append([name, "**fastest peer / landscape**", "",
                           f"**{fastest_peer_t / t_ours:.2f}x**"])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default="mlp,cnn")
    ap.add_argument("--probes", type=int, default=30)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    global DEVICE
    DEVICE = args.device
    torch.set_num_threads(2)
    rows_trace: list = []
    rows_eig: list = []
    for name in args.models.split(","):
        if name == "mlp":
            X, Y = digits()
            model = pretrain(digits_mlp(), X, Y).to(DEVICE)
            X, Y = X.to(DEVICE), Y.to(DEVICE)
            run_model("digits MLP 64-128-128-10", model, X, Y, args.probes, rows_trace, rows_eig)
        elif name == "cnn":
            X, Y = digits(image=True)
            model = pretrain(digits_cnn(), X, Y).to(DEVICE)
            X, Y = X.to(DEVICE), Y.to(DEVICE)
            run_model("digits CNN", model, X, Y, args.probes, rows_trace, rows_eig)
    print(
        "\nTime per Hutchinson trace probe (1797 samples, batches of 256; ratio = peer time / "
        "landscape time)\n"
    )
    print(markdown(rows_trace, ["model", "tool", "ms / probe", "relative to landscape"]))
    print(
        "\nTop-5 Hessian eigenvalues (relative error against a float64 Lanczos reference at "
        "1e-10)\n"
    )
    print(markdown(rows_eig, ["model", "tool", "seconds", "max rel. error", "products",
                              "time / landscape"]))


if __name__ == "__main__":
    main()
