"""Hessian products at real size: ResNet-18 (torchvision's layout, 11.2M parameters) and a
BatchNorm CNN on CIFAR-shaped synthetic images made on the fly by a Dataset (nothing stored),
n = 1k, 4k, 16k samples streamed through a DataLoader of batch 128; landscape beside
hessian-eigenthings 1.0, PyHessian 0.1 and curvlinops 3.0 in one script.

    pip install pyhessian==0.1 hessian-eigenthings==1.0.0a5
    pip install --no-deps curvlinops-for-pytorch==3.0.1 backpack-for-pytorch unfoldNd einconv \\
        linear_operator opt-einsum einops
    python benchmarks/bench_scale.py [--models resnet18,cnn] [--n 1024,4096,16384] [--probes 8]
        [--eig-n 1024] [--device cpu] [--threads 2] [--results benchmarks/results/scale.jsonl]

Every measurement runs in a fresh worker process (this script with ``--worker``), so its peak
resident memory (Linux ``VmHWM``; ``torch.cuda.max_memory_allocated`` on a GPU) is its own, and
appends one JSON line to ``--results``: a re-run skips what is there (``--fresh`` starts over).
The tables are printed from that file (``--table`` prints them without measuring).

Measures:

- *probe*: seconds per Hutchinson probe (one Hessian-vector product over all n samples), from
  each tool's own trace with ``--probes`` probes, wall time and CPU time (user + system) per
  probe, and the peak memory of the worker. landscape runs three times: with its default budget
  (half
  the available RAM: the gradient graphs of as many batches as fit are kept between products),
  with ``--memory`` at ``--tight`` (no cache: a budget the size of the peers' working set), and
  with the default budget but no cache (``Hessian(..., cache_bytes=0)``: every pass rebuilds each
  batch's graph once and shares it between the block's 16 vectors). ``--blocks 2,4`` adds runs in
  fixed blocks of that many vectors, graphs not cached (``Hessian(..., block_size=k,
  cache_bytes=0)``): a smaller block holds fewer parameter-sized rows and shares each graph
  between fewer vectors.
- *top-5*: seconds to the top-5 eigenvalues at a relative tolerance of 1e-6, the number of
  products, and the largest relative residual ``‖Hv − λv‖/|λ|`` of the returned pairs, checked
  afterwards with landscape's operator (not timed). landscape runs its default (single-vector
  Lanczos, then the check for missed copies of a repeated eigenvalue, block Lanczos only when one
  was missed) and unchecked single-vector Lanczos (block 1, the peers' kind of solver).
  PyHessian's power iteration runs at its default tolerance 1e-3 (at 1e-6 it exhausts its 100
  iterations per eigenvalue); hessian-eigenthings' Lanczos runs a fixed number of steps, so the
  smallest of 10, 20, 30, 40, 60, 80, 120 whose pairs all converge is timed alone (as if the user
  had known it).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
BATCH = 128


# ----------------------------------------------------------------------------- the workload
def _dataset(n: int):
    import torch
    from torch.utils.data import Dataset

    class SyntheticCIFAR(Dataset):
        """CIFAR-shaped images and labels drawn from a per-item seed: nothing is stored."""

        def __len__(self):
            return n

        def __getitem__(self, i):
            g = torch.Generator().manual_seed(1_000_003 + i)
            return torch.randn(3, 32, 32, generator=g), int(torch.randint(0, 10, (1,), generator=g))

    return SyntheticCIFAR()


def _model(name: str):
    import torch

    from landscape.models import build_model

    if name == "resnet18":
        net = build_model("resnet18", num_classes=10, seed=0)
    elif name == "cnn":
        net = build_model("cnn", in_channels=3, image_size=32, num_classes=10, channels=[32, 64],
                          hidden=[256],
                          kernel_size=3, batchnorm=True, seed=0)
    else:
        raise SystemExit(f"unknown model {name}")
    with torch.no_grad():  # running statistics of the data, as a trained network has them
        net.train()
        x = torch.stack([_dataset(256)[i][0] for i in range(256)])
        for m in net.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.momentum = None
        net(x)
    return net.eval()


def _loader(n: int):
    from torch.utils.data import DataLoader

    return DataLoader(_dataset(n), batch_size=BATCH, shuffle=False)


# ----------------------------------------------------------------------------- one measurement
def _peak(device) -> dict:
    from landscape.memory import peak

    return peak(device)


def _residual(model, n: int, values, vectors, device: str) -> float:
    """Largest ‖Hv − λv‖/|λ| of the returned pairs, by landscape's own operator (float32)."""
    import torch

    import landscape

    H = landscape.Hessian(model, "cross-entropy", _loader(n), batch_size=BATCH, device=device)
    V = torch.as_tensor(vectors, dtype=torch.float32).reshape(H.shape[0], -1).to(device)
    V = V / torch.linalg.vector_norm(V, dim=0)
    lam = torch.as_tensor(values, dtype=torch.float32, device=device).reshape(-1)
    R = H.matmat(V) - V * lam
    return float((torch.linalg.vector_norm(R, dim=0) / lam.abs()).max())


def work(cfg: dict) -> dict:
    import torch

    torch.set_num_threads(cfg["threads"])
    device = torch.device(cfg["device"])
    from landscape.memory import reset_peak

    model = _model(cfg["model"]).to(device)
    n, tool, what = cfg["n"], cfg["tool"], cfg["what"]
    crit = torch.nn.CrossEntropyLoss()
    params = [p for p in model.parameters()]
    p = sum(q.numel() for q in params)
    reset_peak(device)
    t0, c0 = time.perf_counter(), time.process_time()
    out: dict = {"p": p}
    if tool.startswith("landscape"):
        import landscape
        from landscape.estimators import top_eigenvalues, trace

        memory = cfg.get("memory")
        H = landscape.Hessian(model, "cross-entropy", _loader(n), batch_size=BATCH, device=device,
                              memory=memory, cache_bytes=cfg.get("cache_bytes"),
                              block_size=cfg.get("block_size"))
        if what == "probe":
            est = trace(H, probes=cfg["probes"], seed=1)
            out["estimate"] = est.value
        else:
            e = top_eigenvalues(H, k=5, tol=1e-6, seed=0, return_vectors=True,
                                block=cfg.get("block"))
            out.update(values=e.values.tolist(), products=e.matvecs)
            vectors = e.vectors.float().cpu()
        report = H.plan_report()
        out["plan"] = report["describe"]
        out["plan_notes"] = report["notes"]
        out.update(H.cache_report())
    elif tool == "hessian-eigenthings":
        import hessian_eigenthings as he

        op = he.HessianOperator(model, _loader(n), he.supervised_loss(crit))
        if what == "probe":
            out["estimate"] = float(he.hutchinson(op, num_samples=cfg["probes"], seed=1).estimate)
        else:
            # its Lanczos runs a fixed max_iter (default 2k) and only flags convergence: the
            # smallest max_iter of this ladder whose five pairs all converge, timed alone (as if
            # the user had known it)
            for steps in (10, 20, 30, 40, 60, 80, 120):
                t0, c0 = time.perf_counter(), time.process_time()
                r = he.lanczos(op, k=5, which="LA", tol=1e-6, seed=0, max_iter=steps,
                               reorthogonalize=True)
                if bool(r.converged.all()):
                    break
            out.update(values=[float(v) for v in r.eigenvalues], products=int(r.iterations),
                       max_iter=steps)
            vectors = r.eigenvectors.T.cpu()
    elif tool == "pyhessian":
        from pyhessian import hessian as PyHessian

        ph = PyHessian(model, crit, dataloader=_loader(n), cuda=device.type == "cuda")
        if what == "probe":
            out["estimate"] = float(sum(ph.trace(maxIter=cfg["probes"], tol=0.0)) / cfg["probes"])
        else:
            vals, vecs = ph.eigenvalues(top_n=5, maxIter=100, tol=1e-3)
            out.update(values=[float(v) for v in vals])
            vectors = torch.stack([torch.cat([t.reshape(-1) for t in v]) for v in vecs],
                                  dim=1).cpu()
    elif tool == "curvlinops":
        import numpy as np
        from curvlinops import HessianLinearOperator, hutchinson_trace
        from scipy.sparse.linalg import eigsh

        A = HessianLinearOperator(model, crit, params, _loader(n), check_deterministic=False)
        if what == "probe":
            out["estimate"] = float(hutchinson_trace(A, cfg["probes"]))
        else:
            count = {"k": 0}
            As = A.to_scipy()
            from scipy.sparse.linalg import LinearOperator

            def mv(x):
                count["k"] += 1 if x.ndim == 1 else x.shape[1]
                return As @ x

            op = LinearOperator(As.shape, matvec=mv, matmat=mv, dtype=np.float32)
            vals, vecs = eigsh(op, k=5, which="LA", tol=1e-6, v0=np.ones(p, dtype=np.float32))
            out.update(values=sorted(vals.tolist(), reverse=True), products=count["k"])
            vectors = torch.as_tensor(vecs[:, np.argsort(-vals)])
    else:
        raise SystemExit(f"unknown tool {tool}")
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    pk = _peak(device)
    out.update(seconds=wall, cpu_seconds=cpu, peak_rss=pk["rss"], peak_cuda=pk["cuda"])
    if what == "eig" and out.get("values") and vectors is not None:
        out["max_rel_residual"] = _residual(model, n, out["values"], vectors, cfg["device"])
    return out


# ----------------------------------------------------------------------------- the driver
TOOLS = ["landscape", "landscape (no cache)", "landscape (tight)", "landscape (block 1)",
         "hessian-eigenthings", "pyhessian", "curvlinops"]


def _block_tool(k: int) -> str:
    return f"landscape (block {k}, no cache)"


def _tools(recs) -> list[str]:
    """TOOLS, then the fixed-block rows of ``--blocks`` in order of their block."""
    extra = {r["config"]["tool"] for r in recs} - set(TOOLS)
    return TOOLS + sorted(extra, key=lambda t: int(t.split()[2].rstrip(",")))


def _key(cfg: dict) -> str:
    return json.dumps({k: cfg[k] for k in ("model", "n", "tool", "what", "device", "probes")},
                      sort_keys=True)


def _done(path: Path) -> dict[str, dict]:
    if not path.exists():
        return {}
    out = {}
    for line in path.read_text().splitlines():
        if line.strip():
            rec = json.loads(line)
            out[_key(rec["config"])] = rec
    return out


def run(args) -> None:
    path = Path(args.results)
    path.parent.mkdir(parents=True, exist_ok=True)
    if args.fresh and path.exists():
        path.unlink()
    done = _done(path)
    jobs = []
    for model in args.models.split(","):
        for n in [int(v) for v in args.n.split(",")]:
            for tool in args.tools.split(","):
                if tool != "landscape (block 1)":  # (no cache) runs probes only
                    jobs.append({"model": model, "n": n, "tool": tool, "what": "probe"})
            for k in [int(v) for v in args.blocks.split(",") if v]:
                jobs.append({"model": model, "n": n, "tool": _block_tool(k), "what": "probe",
                             "block_size": k, "cache_bytes": 0})
        for tool in args.tools.split(","):
            if tool not in ("landscape (tight)", "landscape (no cache)") and args.eig_n:
                jobs.append({"model": model, "n": args.eig_n, "tool": tool, "what": "eig"})
    for job in jobs:
        cfg = {**job, "device": args.device, "probes": args.probes, "threads": args.threads}
        if job["tool"] == "landscape (tight)":
            cfg["memory"] = args.tight
        if job["tool"] == "landscape (block 1)":
            cfg["block"] = 1
        if job["tool"] == "landscape (no cache)":
            cfg["cache_bytes"] = 0
        if _key(cfg) in done:
            continue
        print(f"... {cfg['model']} n={cfg['n']} {cfg['tool']} {cfg['what']}", file=sys.stderr,
              flush=True)
        from common import measure_in_worker

        measure_in_worker(__file__, cfg, args.threads, path, hide=("values", "config"))
    table(path)


def _gb(b) -> str:
    return "-" if not b else f"{b / 2**30:.2f}"


def table(path: Path) -> None:
    from common import markdown

    recs = list(_done(path).values())
    for model in sorted({r["config"]["model"] for r in recs}):
        rows = []
        probe = [
            r for r in recs if r["config"]["model"] == model and r["config"]["what"] == "probe"
        ]
        for n in sorted({r["config"]["n"] for r in probe}):
            at = {r["config"]["tool"]: r for r in probe if r["config"]["n"] == n}
            peers = [r for t, r in at.items() if not t.startswith("landscape") and "seconds" in r]
            fastest = min((r["seconds"] / r["config"]["probes"] for r in peers), default=None)
            lowest = min((r["peak_rss"] for r in peers if r.get("peak_rss")), default=None)
            for tool in _tools(probe):
                r = at.get(tool)
                if r is None:
                    continue
                if "error" in r:
                    rows.append([n, tool, "error: " + r["error"][:60], "", "", "", "", ""])
                    continue
                per = r["seconds"] / r["config"]["probes"]
                cpu = r["cpu_seconds"] / r["config"]["probes"]
                speed = f"{fastest / per:.2f}x" if fastest and tool.startswith("landscape") else ""
                mem = (
                    f"{r['peak_rss'] / lowest:.2f}x"
                    if lowest and r.get("peak_rss") and tool.startswith("landscape")
                    else ""
                )
                rows.append([n, tool + (f" ({r['plan']})" if r.get("plan") else ""), f"{per:.2f}",
                             f"{cpu:.2f}",
                             _gb(r.get("peak_rss")), _gb(r.get("peak_cuda")), speed, mem])
        print(
            f"\n{model}: seconds per Hutchinson probe (one Hessian-vector product over n samples)\n"
        )
        print(markdown(rows, ["n", "tool", "s / probe", "CPU s / probe", "peak RSS GiB",
                              "peak CUDA GiB",
                              "fastest peer / landscape", "peak / lowest peer's"]))
        eig = [r for r in recs if r["config"]["model"] == model and r["config"]["what"] == "eig"]
        if eig:
            rows = []
            peers = [
                r
                for r in eig
                if not r["config"]["tool"].startswith("landscape")
                and "seconds" in r
                and (r.get("max_rel_residual") or 1) <= 1e-5
            ]
            fastest = min((r["seconds"] for r in peers), default=None)
            for r in sorted(eig, key=lambda r: TOOLS.index(r["config"]["tool"])):
                if "error" in r:
                    rows.append([r["config"]["n"], r["config"]["tool"], "error: " + r["error"][:60],
                                 "", "", "", ""])
                    continue
                speed = (
                    f"{fastest / r['seconds']:.2f}x"
                    if fastest and r["config"]["tool"].startswith("landscape")
                    else ""
                )
                rows.append([r["config"]["n"], r["config"]["tool"], f"{r['seconds']:.1f}",
                             r.get("products") or "",
                             f"{r.get('max_rel_residual', float('nan')):.1e}",
                             _gb(r.get("peak_rss")), speed])
            print(
                f"\n{model}: top-5 eigenvalues (relative tolerance 1e-6; residuals checked "
                "afterwards)\n"
            )
            print(markdown(rows, ["n", "tool", "seconds", "products", "max ‖Hv−λv‖/|λ|",
                                  "peak RSS GiB",
                                  "fastest peer at ≤ 1e-5 / landscape"]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--models", default="resnet18,cnn")
    ap.add_argument("--n", default="1024,4096,16384")
    ap.add_argument("--eig-n", type=int, default=1024)
    ap.add_argument("--probes", type=int, default=8)
    ap.add_argument("--tools", default=",".join(TOOLS))
    ap.add_argument("--tight", default="512MiB", help="--memory of 'landscape (tight)'")
    ap.add_argument("--blocks", default="",
                    help="also time probes in fixed blocks of these sizes, graphs not cached "
                         "(e.g. 2,4: the memory a block's rows cost against the speed it buys)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--results", default=str(HERE / "results" / "scale.jsonl"))
    ap.add_argument("--fresh", action="store_true")
    ap.add_argument("--table", action="store_true")
    args = ap.parse_args()
    sys.path.insert(0, str(HERE))
    from common import dispatch

    dispatch(args, work, run, table)


if __name__ == "__main__":
    main()
