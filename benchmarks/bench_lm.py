"""Hessian products of a GPT-2-style language model: landscape beside hessian-eigenthings 1.0 (its
HF helper, ``hf_lm_loss``) and curvlinops 3.0, on the same model and data.

The model: HF ``GPT2LMHeadModel`` from a config (4 layers, d = 256, 4 heads, vocabulary 8192,
context 128; random weights, nothing downloaded), float32, SDPA attention. The data:
``--n`` synthetic sequences of 64-128 tokens from ``examples/lm.py`` (a seeded Markov chain),
right-padded in batches of 8 with labels −100 on the padding; causal-LM loss.

    pip install -e ".[dev,hf]"
    pip install --no-deps curvlinops-for-pytorch==3.0.1 backpack-for-pytorch unfoldNd einconv \\
        linear_operator opt-einsum einops
    python benchmarks/bench_lm.py [--n 16] [--probes 16] [--threads 2] [--device cpu]
        [--results benchmarks/results/lm.jsonl] [--fresh] [--table]

Each measurement runs in a fresh worker process (this script with ``--worker``), so the peak
resident memory (Linux ``VmHWM``; ``torch.cuda.max_memory_allocated`` on a GPU) is its own:

- *product*: seconds per Hessian-vector product over all n sequences (``--probes`` products of
  Hutchinson's trace, each tool's own, set-up included); landscape with its defaults, and "lean":
  product batch 2 and blocks of 8 probes, at about the peers' peak memory;
- *top-5*: the five largest eigenvalues at relative tolerance 1e-4 (landscape's Lanczos;
  hessian-eigenthings' Lanczos with its fixed step count, the smallest of a ladder that
  converges; curvlinops through scipy's ``eigsh``), their products and time.

The peers cannot differentiate twice through the fused SDPA kernel that HF's GPT-2 uses on a CPU
(``derivative for aten::_scaled_dot_product_flash_attention_for_cpu_backward is not
implemented``): they run under ``sdpa_kernel(SDPBackend.MATH)``, which landscape chooses by itself.

What each tool computes: landscape the mean over all counted tokens of the data set (exact across
uneven batches); curvlinops the same (a sum loss over the tokens, divided by their count here);
hessian-eigenthings the mean over batches of HF's per-batch ``.loss`` (batches weighted equally,
not by their tokens), so its eigenvalues differ slightly.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "examples"))
BATCH, VOCAB, CONTEXT = 8, 8192, 128
TOOLS = ["landscape", "landscape (lean)", "hessian-eigenthings", "curvlinops"]
#: landscape at about the peers' peak memory: product batch 2, and blocks of 8 probes (trace) or
#: single-vector Lanczos under a 1.2 GiB budget (top-5)
LEAN = {"batch": 2, "block": 8, "eig_block": 1, "memory": "1.2GiB"}


def _model():
    import lm

    return lm.build(layers=4, width=256, heads=4, vocab=VOCAB, context=CONTEXT, seed=0)


def _loader(n: int):
    import lm

    return lm.tokens(n=n, length=CONTEXT, vocab=VOCAB, batch_size=BATCH, seed=0)


def _logits_module(model):
    """curvlinops' model: next-token logits ``[Σ (T−1), V]`` of a dict batch."""
    import torch

    class Logits(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, X):
            out = self.model(**{k: v for k, v in X.items() if k != "labels"}).logits
            return out[:, :-1].reshape(-1, out.shape[-1])

    return Logits()


def _curvlinops_data(n: int):
    """(inputs dict, shifted labels flattened) pairs, and the counted tokens."""
    data, tokens = [], 0
    for batch in _loader(n):
        y = batch["labels"][:, 1:].reshape(-1)
        tokens += int((y != -100).sum())
        data.append(({k: v for k, v in batch.items() if k != "labels"}, y))
    return data, tokens


def work(cfg: dict) -> dict:
    import torch

    from landscape.memory import peak, reset_peak

    torch.set_num_threads(cfg["threads"])
    device = torch.device(cfg["device"])
    model = _model().to(device).eval()
    n, tool, what = cfg["n"], cfg["tool"], cfg["what"]
    params = [p for p in model.parameters() if p.requires_grad]
    out: dict = {"p": sum(q.numel() for q in params)}
    reset_peak(device)
    t0 = time.perf_counter()
    math_kernel = None
    if tool != "landscape":
        # the peers differentiate twice through attention: on the math kernel (the fused CPU
        # kernel has no double backward), which landscape chooses by itself
        from torch.nn.attention import SDPBackend, sdpa_kernel

        math_kernel = sdpa_kernel([SDPBackend.MATH])
        math_kernel.__enter__()
    if tool.startswith("landscape"):
        import landscape
        from landscape.estimators import top_eigenvalues, trace

        lean = tool == "landscape (lean)"
        H = landscape.Hessian(model, "causal-lm", _loader(n), device=device,
                              batch_size=LEAN["batch"] if lean else BATCH,
                              block_size=LEAN["block"] if lean and what == "product" else None,
                              memory=LEAN["memory"] if lean and what == "eig" else None)
        if what == "product":
            out["estimate"] = trace(H, probes=cfg["probes"], seed=1).value
            out["products"] = cfg["probes"]
        else:
            e = top_eigenvalues(H, k=5, tol=1e-4, seed=0, block=LEAN["eig_block"] if lean else None)
            out.update(values=e.values.tolist(), products=e.matvecs)
        out["plan"] = H.plan_report()["describe"]
    elif tool == "hessian-eigenthings":
        import hessian_eigenthings as he

        op = he.HessianOperator(model, _loader(n), he.hf_lm_loss())
        if what == "product":
            out["estimate"] = float(he.hutchinson(op, num_samples=cfg["probes"], seed=1).estimate)
            out["products"] = cfg["probes"]
        else:
            for steps in (10, 20, 30, 40, 60, 80, 120):
                t0 = time.perf_counter()
                r = he.lanczos(op, k=5, which="LA", tol=1e-4, seed=0, max_iter=steps,
                               reorthogonalize=True)
                if bool(r.converged.all()):
                    break
            out.update(values=sorted((float(v) for v in r.eigenvalues), reverse=True),
                       products=int(r.iterations), max_iter=steps)
    elif tool == "curvlinops":
        import numpy as np
        from curvlinops import HessianLinearOperator, hutchinson_trace
        from scipy.sparse.linalg import LinearOperator, eigsh

        data, tokens = _curvlinops_data(n)
        crit = torch.nn.CrossEntropyLoss(reduction="sum", ignore_index=-100)
        A = HessianLinearOperator(_logits_module(model), crit, params, data,
                                  check_deterministic=False,
                                  batch_size_fn=lambda X: X["input_ids"].shape[0])
        if what == "product":
            out["estimate"] = float(hutchinson_trace(A, cfg["probes"])) / tokens
            out["products"] = cfg["probes"]
        else:
            count = {"k": 0}
            As = A.to_scipy()

            def mv(x):
                count["k"] += 1 if x.ndim == 1 else x.shape[1]
                return As @ x / tokens

            op = LinearOperator(As.shape, matvec=mv, matmat=mv, dtype=np.float32)
            vals = eigsh(op, k=5, which="LA", tol=1e-4, return_eigenvectors=False,
                         v0=np.ones(As.shape[0], dtype=np.float32))
            out.update(values=sorted(vals.tolist(), reverse=True), products=count["k"])
    else:
        raise SystemExit(f"unknown tool {tool}")
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    pk = peak(device)
    if math_kernel is not None:
        math_kernel.__exit__(None, None, None)
    out.update(seconds=time.perf_counter() - t0, peak_rss=pk["rss"], peak_cuda=pk["cuda"])
    return out


def _key(cfg: dict) -> str:
    return json.dumps({k: cfg[k] for k in ("n", "tool", "what", "device", "probes")},
                      sort_keys=True)


def _done(path: Path) -> dict[str, dict]:
    if not path.exists():
        return {}
    return {_key(r["config"]): r for r in map(json.loads, path.read_text().splitlines()) if r}


def run(args) -> None:
    path = Path(args.results)
    path.parent.mkdir(parents=True, exist_ok=True)
    if args.fresh and path.exists():
        path.unlink()
    done = _done(path)
    for what in ("product", "eig"):
        for tool in args.tools.split(","):
            cfg = {"n": args.n, "tool": tool, "what": what, "device": args.device,
                   "probes": args.probes, "threads": args.threads}
            if _key(cfg) in done:
                continue
            print(f"... {tool} {what}", file=sys.stderr, flush=True)
            from common import measure_in_worker

            measure_in_worker(__file__, cfg, args.threads, path)
    table(path)


def table(path: Path) -> None:
    from common import markdown

    recs = [r for r in _done(path).values() if "error" not in r]
    for r in _done(path).values():
        if "error" in r:
            print(f"{r['config']['tool']} {r['config']['what']}: error {r['error'][:120]}")
    prod = {r["config"]["tool"]: r for r in recs if r["config"]["what"] == "product"}
    eig = {r["config"]["tool"]: r for r in recs if r["config"]["what"] == "eig"}
    per = {t: r["seconds"] / r["products"] for t, r in prod.items()}
    peers = [t for t in per if not t.startswith("landscape")]
    fastest = min((per[t] for t in peers), default=None)
    lowest = min((prod[t]["peak_rss"] for t in peers if prod[t].get("peak_rss")), default=None)
    rows = []
    for tool in TOOLS:
        r, e = prod.get(tool), eig.get(tool)
        if r is None:
            continue
        ours = tool.startswith("landscape")
        ratio = f"{fastest / per[tool]:.2f}x" if fastest and ours else ""
        mem = f"{r['peak_rss'] / lowest:.2f}x" if lowest and ours else ""
        top = ", ".join(f"{v:.4g}" for v in e["values"]) if e else "-"
        plan = f" ({r['plan']})" if r.get("plan") else ""
        rows.append([tool + plan, f"{per[tool]:.2f}", f"{r['peak_rss'] / 2**30:.2f}", ratio, mem,
                     f"{e['seconds']:.1f}" if e else "-", e["products"] if e else "-", top,
                     f"{e['peak_rss'] / 2**30:.2f}" if e else "-"])
    n = next(iter(prod.values()))["config"]["n"] if prod else "?"
    p = next(iter(prod.values()))["p"] if prod else "?"
    print(f"\nGPT-2-style LM (p = {p}), {n} sequences of 64-128 tokens, batches of {BATCH}\n")
    print(markdown(rows, ["tool", "s / product", "peak RSS GiB", "fastest peer / landscape",
                          "peak / lowest peer's", "top-5 s", "top-5 products", "top-5 values",
                          "top-5 peak RSS GiB"]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--worker")
    ap.add_argument("--n", type=int, default=16)
    ap.add_argument("--probes", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--tools", default=",".join(TOOLS))
    ap.add_argument("--results", default=str(HERE / "results" / "lm.jsonl"))
    ap.add_argument("--fresh", action="store_true")
    ap.add_argument("--table", action="store_true")
    args = ap.parse_args()
    from common import dispatch

    dispatch(args, work, run, table)


if __name__ == "__main__":
    main()
