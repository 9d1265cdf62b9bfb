"""Experiment 4 — the optimizer comparison: final test accuracy, top Hessian eigenvalue λ_max and
Hessian trace of the solutions found by every minibatch optimizer of the registry — sgd, sam,
asam, fsam, sgd-tracer, adam-tracer, rsam, mfvi, vsam, lb-diag-noise and lb-full-noise (plus
large-batch sgd, the reference for the covariance-noise methods) — on a digits MLP, over seeds
(mean ± sample std). Every run is ``landscape.train`` with the optimizer's registry defaults
(docs/algorithms.md §3) and curvature tracked once, at the end (``track=["eig", "trace"]``). The
SGD-based methods use lr 0.05 and momentum 0.9; adam-tracer runs on Adam (its default base, no
momentum setting) with lr 3e-3 (0.06 × 0.05), the lowest train loss of 1e-3, 2e-3, 3e-3 in a
one-seed check (seed 100). ``gd`` (full batch: 15 epochs would be 15 steps) is left out.

    python scripts/repro_optimizers.py [--out docs/repro/optimizers] [--quick] [--seeds 5]

Writes ``optimizers.h5`` (group ``/<optimizer>/seed_<k>`` with the run's final values as
attributes and its test-accuracy curve; ``/<optimizer>`` attributes hold the means and stds),
``optimizers.png`` and ``table.md``.
"""

from __future__ import annotations

import shutil

import numpy as np

try:
    from scripts import repro_common as rc
except ImportError:  # run as a file
    import repro_common as rc

NAME = "optimizers"

#: lr factor of adam-tracer: 0.06 × the SGD rate 0.05 = 3e-3, an Adam-scale learning rate.
ADAM_LR_FACTOR = 0.06


#: (label, optimizer, batch size, lr factor, own settings); own settings are the registry defaults
#: unless given. lb-diag-noise / lb-full-noise: large batch M_L = 8 B, emulating the small batch
#: M_S = B. adam-tracer runs on Adam (no momentum; see :func:`momentum_of`).
def methods(batch: int, lr: float = 0.05) -> list[tuple[str, str, int, float, dict]]:
    big = 8 * batch
    adam_lr = ADAM_LR_FACTOR * lr
    return [
        ("sgd", "sgd", batch, 1.0, {}),
        ("sam", "sam", batch, 1.0, {}),
        ("asam", "asam", batch, 1.0, {}),
        ("fsam", "fsam", batch, 1.0, {}),
        ("sgd-tracer", "sgd-tracer", batch, 1.0, {}),
        (f"adam-tracer (lr={adam_lr:g})", "adam-tracer", batch, ADAM_LR_FACTOR, {}),
        ("rsam", "rsam", batch, 1.0, {}),
        ("mfvi", "mfvi", batch, 1.0, {}),
        ("vsam", "vsam", batch, 1.0, {}),
        (f"lb-diag-noise (B={big}, M_S={batch})", "lb-diag-noise", big, 4.0,
         {"small_batch": batch}),
        (f"lb-full-noise (B={big}, M_S={batch})", "lb-full-noise", big, 4.0,
         {"small_batch": batch}),
        (f"sgd (B={big})", "sgd", big, 4.0, {}),
    ]


def momentum_of(opt: str) -> float | None:
    """0.9 on the SGD base; ``None`` (the base's own setting) for Adam-based optimizers."""
    from landscape.optim.registry import OPTIMIZERS

    return None if getattr(OPTIMIZERS[opt], "default_base", "sgd") == "adam" else 0.9


def config(quick: bool, seeds: int | None) -> dict:
    if quick:
        return {"seeds": seeds or 1, "epochs": 4, "batch": 32, "lr": 0.05, "widths": [16],
                "n_train": 256,
                "track_samples": 128, "probes": 5}
    return {"seeds": seeds or 5, "epochs": 15, "batch": 32, "lr": 0.05, "widths": [32, 32],
            "n_train": None,
            "track_samples": 512, "probes": 20}


def run(cfg: dict, out, base_seed: int = 0, only: list[str] | None = None) -> dict:
    from landscape.train import TrainConfig, read_run, train

    res: dict[str, list[dict]] = {}
    runs = out / "runs"
    for label, opt, batch, lr_factor, hyper in methods(cfg["batch"], cfg["lr"]):
        if only and opt not in only:
            continue
        res[label] = []
        for k in range(cfg["seeds"]):
            seed = base_seed + k
            data_kwargs = {} if cfg["n_train"] is None else {"n_train": cfg["n_train"]}
            tc = TrainConfig(model="mlp", model_kwargs={"widths": cfg["widths"]}, data="digits",
                             data_kwargs=data_kwargs, optimizer=opt, lr=cfg["lr"] * lr_factor,
                             momentum=momentum_of(opt),
                             hyper=dict(hyper), batch_size=batch, epochs=cfg["epochs"], seed=seed,
                             track=["eig", "trace"], every=10**9,
                             track_samples=cfg["track_samples"],
                             probes=cfg["probes"], track_options={"tol": 1e-3}, plot=False)
            path = runs / f"{opt}-B{batch}-s{seed}"
            status = "finished"
            try:
                r = train(tc, path, force=True)
                status = r.status
            except Exception as e:  # a diverged run is a result, not a crash  # noqa: BLE001
                status = f"failed: {type(e).__name__}: {e}"
            try:
                d = read_run(path)
            except Exception:  # noqa: BLE001
                d = {"final": {}, "series": {}, "attrs": {}}
            fin = d["final"]
            st, acc = rc.series_of(d, "test_accuracy")
            res[label].append({
                "seed": seed, "status": status, "optimizer": opt, "batch_size": batch,
                "lr": cfg["lr"] * lr_factor, "momentum": momentum_of(opt),
                "test_accuracy": fin.get("test_accuracy"),
                "train_loss": fin.get("train_loss"), "lambda_max": fin.get("lambda_max"),
                "trace": fin.get("trace"), "trace_stderr": fin.get("trace_stderr"),
                "passes_per_step": d["attrs"].get("passes_per_step"),
                "train_seconds": fin.get("train_seconds"), "acc_step": st, "acc": acc})
    shutil.rmtree(runs, ignore_errors=True)
    return res


def summary(rows: list[dict], key: str) -> tuple[float, float]:
    v = np.asarray([r[key] for r in rows if r[key] is not None and np.isfinite(r[key])], float)
    if v.size == 0:
        return float("nan"), float("nan")
    return float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else float("nan")


def table(res: dict) -> str:
    rows = []
    for label, rs in res.items():
        ok = [r for r in rs if r["status"] == "finished"]
        rows.append(
            [
                label,
                f"{len(ok)}/{len(rs)}",
                rc.pm([r["test_accuracy"] for r in ok], 3),
                rc.pm([r["train_loss"] for r in ok], 2),
                rc.pm([r["lambda_max"] for r in ok], 3),
                rc.pm([r["trace"] for r in ok], 3),
                rc.fmt(rs[0]["passes_per_step"]) if rs and rs[0]["passes_per_step"] else "–",
                rc.pm([r["train_seconds"] for r in ok], 2),
            ]
        )
    return rc.markdown_table(["optimizer", "runs ok", "test accuracy", "final train loss", "λ_max",
                              "tr(H)", "passes/step", "train s"], rows)


def figure(res: dict, path) -> None:
    from landscape.io.figures import plt

    labels = list(res)
    fig, axes = plt.subplots(1, 3, figsize=(13, 4))
    for ax, key, name in zip(axes, ("test_accuracy", "lambda_max", "trace"),
                             ("test accuracy", "λ_max(H) at the end", "tr(H) at the end")):
        for i, lab in enumerate(labels):
            vals = [r[key] for r in res[lab] if r[key] is not None and np.isfinite(r[key])]
            ax.scatter(np.full(len(vals), i), vals, color="tab:blue", s=14, alpha=0.6)
            if vals:
                m = np.mean(vals)
                sd = np.std(vals, ddof=1) if len(vals) > 1 else 0.0
                ax.errorbar([i], [m], yerr=[sd], color="k", marker="_", ms=18, capsize=3)
        ax.set_xticks(range(len(labels)))
        ax.set_xticklabels([lab.split(" (")[0] + ("\n(" + lab.split(" (")[1] if " (" in lab else "")
                            for lab in labels], rotation=60, fontsize=7, ha="right")
        ax.set_title(name)
        ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    rc.savefig(fig, path)


def main(argv=None) -> dict:
    p = rc.parser(NAME, __doc__)
    p.add_argument("--seeds", type=int, default=None,
                   help="seeds per optimizer (default 5; --quick 1)")
    p.add_argument("--only", default=None, help="comma-separated optimizer names (default: all)")
    args = p.parse_args(argv)
    out = rc.setup(args)
    clock = rc.Clock()
    cfg = config(args.quick, args.seeds)
    res = run(cfg, out, args.seed, args.only.split(",") if args.only else None)
    with rc.result_h5(out / "optimizers.h5", NAME, {**cfg, "seed": args.seed,
                                                    "quick": args.quick}) as f:
        for label, rs in res.items():
            means = {}
            for key in ("test_accuracy", "lambda_max", "trace", "train_loss"):
                means[f"{key}_mean"], means[f"{key}_std"] = summary(rs, key)
            g = rc.write_group(
                f, label.replace("/", "_"), None, {"optimizer": rs[0]["optimizer"], **means}
            )
            for r in rs:
                rc.write_group(f, f"{g.name}/seed_{r['seed']}", {"step": r["acc_step"],
                                                                 "test_accuracy": r["acc"]},
                               {k: v for k, v in r.items() if k not in ("acc_step", "acc")})
        f.attrs["seconds"] = clock()
    figure(res, out / "optimizers.png")
    rc.write_table(out, table(res))
    print(
        f"\n{clock():.0f} s; digits ({'all' if cfg['n_train'] is None else cfg['n_train']} "
        "training samples), "
        f"MLP widths {cfg['widths']}, {cfg['epochs']} epochs, B={cfg['batch']}, lr={cfg['lr']} "
        f"(momentum 0.9; adam-tracer: Adam, lr={ADAM_LR_FACTOR * cfg['lr']:g}), "
        f"{cfg['seeds']} seeds; λ_max (Lanczos) and tr(H) (Hutchinson, {cfg['probes']} probes) on "
        f"{cfg['track_samples']} training samples"
    )
    return res


if __name__ == "__main__":
    main()
