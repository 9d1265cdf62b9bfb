"""Experiment 2 — the sharpness / non-uniformity diagram (lecture "What affects the stability of
SGD", Figures 16-17; Wu, Ma & E 2018): many short SGD runs (``landscape.train``, plain SGD without
momentum) on a digits MLP over learning rates, batch sizes and seeds; at each solution the top
Hessian eigenvalue λ_max (Lanczos) and the non-uniformity ``s = sqrt(λ_max(Σ_H))``
(``landscape.metrics.stability.nonuniformity``), plotted against the necessary stability
conditions ``λ_max ≤ 2/η`` and ``s ≤ (1/η) sqrt(B(n−1)/(n−B)) ≈ sqrt(B)/η``.

    python scripts/repro_sharpness_nonuniformity.py [--out docs/repro/sharpness_nonuniformity]
    [--quick]

Writes ``sharpness_nonuniformity.h5`` (one group per run ``lr<η>_B<B>_s<seed>`` with the measured
values and bounds as attributes, plus ``/all`` arrays), ``diagram.png`` (left: B fixed, η varied;
right: η fixed, B varied; dashed: each setting's two bounds) and ``table.md``.
"""

from __future__ import annotations

import math
import shutil

try:
    from scripts import repro_common as rc
except ImportError:  # run as a file
    import repro_common as rc

NAME = "sharpness_nonuniformity"


def config(quick: bool) -> dict:
    if quick:
        return {"lrs": [0.1, 0.4], "batches": [4, 32], "seeds": 1, "steps": 60, "n_train": 64,
                "widths": [8],
                "s_samples": 32}
    return {"lrs": [0.05, 0.1, 0.2, 0.4], "batches": [4, 16, 64], "seeds": 2, "steps": 600,
            "n_train": 256,
            "widths": [32, 32], "s_samples": 128}


def run(cfg: dict, out, base_seed: int = 0) -> list[dict]:
    from landscape.curvature.hessian import Hessian
    from landscape.estimators import top_eigenvalues
    from landscape.io.checkpoint import Checkpoint
    from landscape.metrics.stability import nonuniformity, sgd_noise_factor
    from landscape.train import TrainConfig, train

    rows = []
    runs = out / "runs"
    for lr in cfg["lrs"]:
        for B in cfg["batches"]:
            for k in range(cfg["seeds"]):
                seed = base_seed + k
                tc = TrainConfig(model="mlp", model_kwargs={"widths": cfg["widths"]}, data="digits",
                                 data_kwargs={"n_train": cfg["n_train"], "seed": seed},
                                 optimizer="sgd", lr=lr,
                                 momentum=0.0, batch_size=B, steps=cfg["steps"], seed=seed,
                                 eval_every=cfg["steps"], plot=False)
                path = runs / f"lr{lr:g}_B{B}_s{seed}"
                row = {"lr": lr, "batch_size": B, "seed": seed, "status": "finished"}
                try:
                    res = train(tc, path, force=True)
                    ck = Checkpoint.load(path / "final.pt")
                    pb = ck.problem(samples=None, seed=seed)
                    eig = top_eigenvalues(Hessian(pb), k=1, tol=1e-3, seed=seed)
                    s = nonuniformity(pb, samples=cfg["s_samples"], seed=seed, tol=1e-3)
                    n = pb.n
                    c = sgd_noise_factor(n, B)
                    row.update(n=n, train_loss=res.final.get("train_loss"),
                               train_accuracy=res.final.get("train_accuracy"),
                               lambda_max=float(eig.values[0]),
                               lambda_residual=float(eig.residuals[0]),
                               s=s.value, s_low=s.extra["interval"][0],
                               s_high=s.extra["interval"][1],
                               s_samples=s.extra["samples"], lambda_bound=2 / lr,
                               s_bound=1 / (lr * math.sqrt(c)) if c > 0 else math.inf,
                               s_bound_approx=math.sqrt(B) / lr)
                except Exception as e:  # a diverged run is a result  # noqa: BLE001
                    row.update(status=f"failed: {type(e).__name__}: {str(e)[:80]}")
                rows.append(row)
    shutil.rmtree(runs, ignore_errors=True)
    return rows


def figure(rows: list[dict], cfg: dict, path) -> None:
    from landscape.io.figures import plt

    ok = [r for r in rows if r["status"] == "finished"]
    Bmid = cfg["batches"][len(cfg["batches"]) // 2]
    lrmid = cfg["lrs"][len(cfg["lrs"]) // 2]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.6))
    panels = [(axes[0], [r for r in ok if r["batch_size"] == Bmid], "lr", f"B = {Bmid}, η varied",
               "η"),
              (axes[1], [r for r in ok if r["lr"] == lrmid], "batch_size",
               f"η = {lrmid:g}, B varied", "B")]
    for ax, sel, key, title, sym in panels:
        values = sorted({r[key] for r in sel})
        for i, v in enumerate(values):
            rs = [r for r in sel if r[key] == v]
            c = f"C{i}"
            ax.scatter([r["lambda_max"] for r in rs], [r["s"] for r in rs], color=c, s=30,
                       label=f"{sym} = {v:g}", edgecolor="k", lw=0.4)
            ax.axvline(rs[0]["lambda_bound"], color=c, ls="--", lw=0.9)
            if math.isfinite(rs[0]["s_bound"]):
                ax.axhline(rs[0]["s_bound"], color=c, ls=":", lw=1.1)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("sharpness λ_max(H)   (dashed: 2/η)")
        ax.set_ylabel("non-uniformity s   (dotted: sqrt(B(n−1)/(n−B))/η)")
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
    fig.suptitle(f"SGD solutions on digits (n = {ok[0]['n'] if ok else '?'}, MLP {cfg['widths']}, "
                 f"{cfg['steps']} steps, momentum 0)", fontsize=10)
    fig.tight_layout()
    rc.savefig(fig, path)


def table(rows: list[dict]) -> str:
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["lr"], r["batch_size"]), []).append(r)
    out = []
    for (lr, B), rs in sorted(groups.items()):
        ok = [r for r in rs if r["status"] == "finished"]
        if not ok:
            out.append([f"{lr:g}", str(B), "0/" + str(len(rs)), "–", "–", "–", "–", "–", "–", "–"])
            continue
        lam_ok = all(r["lambda_max"] <= r["lambda_bound"] * 1.05 for r in ok)
        s_ok = all(r["s"] <= r["s_bound"] for r in ok)
        out.append(
            [
                f"{lr:g}",
                str(B),
                f"{len(ok)}/{len(rs)}",
                rc.pm([r["train_loss"] for r in ok], 2),
                rc.pm([r["lambda_max"] for r in ok], 3),
                f"{2 / lr:.3g}",
                rc.pm([r["s"] for r in ok], 3),
                rc.fmt(ok[0]["s_bound"]),
                "yes" if lam_ok else "no",
                "yes" if s_ok else "no",
            ]
        )
    return rc.markdown_table(["η", "B", "runs ok", "train loss", "λ_max", "2/η", "s", "s bound",
                              "λ_max ≤ 2/η (+5%)", "s ≤ bound"], out)


def main(argv=None) -> list[dict]:
    p = rc.parser(NAME, __doc__)
    args = p.parse_args(argv)
    out = rc.setup(args)
    clock = rc.Clock()
    cfg = config(args.quick)
    rows = run(cfg, out, args.seed)
    with rc.result_h5(out / f"{NAME}.h5", NAME, {**cfg, "seed": args.seed,
                                                 "quick": args.quick}) as f:
        for r in rows:
            rc.write_group(f, f"lr{r['lr']:g}_B{r['batch_size']}_s{r['seed']}", None, r)
        ok = [r for r in rows if r["status"] == "finished"]
        rc.write_group(f, "all", {k: [r[k] for r in ok] for k in ("lr", "batch_size", "seed",
                                                                  "lambda_max", "s",
                                                                  "lambda_bound", "s_bound",
                                                                  "train_loss")})
        f.attrs["seconds"] = clock()
    figure(rows, cfg, out / "diagram.png")
    rc.write_table(out, table(rows))
    print(
        f"\n{clock():.0f} s; digits subset n={cfg['n_train']}, MLP {cfg['widths']}, "
        "cross-entropy, plain SGD "
        f"{cfg['steps']} steps, {cfg['seeds']} seeds; s on {cfg['s_samples']} samples"
    )
    return rows


if __name__ == "__main__":
    main()
