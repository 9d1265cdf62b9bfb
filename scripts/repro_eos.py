"""Experiment 1 — gradient descent ends at the edge of stability (lecture, "A stability perspective";
ALGORITHMS.md §2): full-batch GD on a digits MLP at several learning rates, the top Hessian
eigenvalue λ_max tracked during training (``landscape.train`` with ``track=["eig"]``, Lanczos),
compared with the linear-stability bound 2/η.

    python scripts/repro_eos.py [--out docs/repro/eos] [--quick]

Writes ``eos.h5`` (one group per learning rate: ``step``, ``lambda_max``, ``train_loss``; attributes
``lr``, ``two_over_lr``, ``lambda_final``, ``lambda_peak``, ``lambda_late``), ``eos.png`` and
``table.md``. The run directories (``run.h5``, ``final.pt``) go under ``--out/runs`` (deleted
unless ``--keep-runs``).
"""

from __future__ import annotations

import shutil

try:
    from scripts import repro_common as rc
except ImportError:  # run as a file
    import repro_common as rc

NAME = "eos"


def config(quick: bool) -> dict:
    if quick:
        return {"lrs": [0.4, 0.8], "time": 16.0, "points": 8, "widths": [16], "n_train": 128, "min_steps": 20}
    # "time" = η × steps: every learning rate gets the same amount of gradient-flow time
    return {"lrs": [0.1, 0.2, 0.4, 0.8], "time": 120.0, "points": 30, "widths": [32, 32], "n_train": 512,
            "min_steps": 60}


def run(cfg: dict, out, seed: int = 0, keep_runs: bool = False) -> dict:
    from landscape.train import TrainConfig, read_run, train

    results = {}
    runs = out / "runs"
    for lr in cfg["lrs"]:
        steps = max(cfg["min_steps"], round(cfg["time"] / lr))
        every = max(1, steps // cfg["points"])
        data_kwargs = {} if cfg["n_train"] is None else {"n_train": cfg["n_train"]}
        tc = TrainConfig(model="mlp", model_kwargs={"widths": cfg["widths"]}, data="digits",
                         data_kwargs=data_kwargs, loss="cross-entropy", optimizer="gd", lr=lr, steps=steps,
                         track=["eig"], every=every, eval_every=every, track_samples=None,
                         track_options={"tol": 1e-2, "max_steps": 40}, seed=seed, plot=False)
        path = runs / f"lr{lr:g}"
        train(tc, path, force=True)
        d = read_run(path)
        st, lam = rc.series_of(d, "lambda_max")
        _, loss = rc.series_of(d, "train_loss")
        late = lam[(3 * len(lam)) // 4:]  # the last quarter of the run
        results[lr] = {"step": st, "lambda_max": lam, "train_loss": loss, "steps": steps,
                       "lambda_final": float(lam[-1]), "lambda_peak": float(lam.max()),
                       "lambda_late": float(late.mean()), "lambda_late_std": float(late.std()),
                       "final_loss": float(loss[-1]),
                       "test_accuracy": d["final"].get("test_accuracy"),
                       "n_train": int(d["attrs"]["n_train"]), "params": int(d["attrs"]["params"])}
    if not keep_runs:
        shutil.rmtree(runs, ignore_errors=True)
    return results


def figure(results: dict, path) -> None:
    from landscape.io.figures import plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for k, (lr, r) in enumerate(sorted(results.items())):
        c = f"C{k}"
        axes[0].plot(r["step"] * lr, r["lambda_max"], color=c, marker=".", ms=3, label=f"η = {lr:g}")
        axes[0].axhline(2 / lr, color=c, ls="--", lw=0.9)
        axes[1].plot(r["step"] * lr, r["train_loss"], color=c, label=f"η = {lr:g}")
    axes[0].set_xlabel("η × step (gradient-flow time)")
    axes[0].set_ylabel("λ_max(H)   (dashed: 2/η)")
    axes[0].set_yscale("log")
    axes[0].set_title("GD sharpness against the stability bound 2/η")
    axes[1].set_xlabel("η × step")
    axes[1].set_ylabel("training loss")
    axes[1].set_yscale("log")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    rc.savefig(fig, path)


# the slides' and ALGORITHMS.md §2's numbers, for the table
CLAIMS = {0.1: "19.6 (FashionMNIST, slides); 20.8 (digits MLP, §2)", 0.2: "10.0 (digits MLP, §2)",
          0.4: "5.1 (digits MLP, §2)", 0.01: "53.5 vs 200 (slides: stops below)"}


def table(results: dict) -> str:
    rows = []
    for lr, r in sorted(results.items()):
        rows.append([f"{lr:g}", f"{2 / lr:.3g}", str(r["steps"]), f"{r['lambda_peak']:.3g}",
                     f"{r['lambda_late']:.3g} ± {r['lambda_late_std']:.2g}", f"{r['lambda_final']:.3g}",
                     f"{r['lambda_late'] * lr / 2:.2f}", f"{r['final_loss']:.3g}", CLAIMS.get(lr, "–")])
    return rc.markdown_table(["η", "2/η", "GD steps", "peak λ_max", "late λ_max (last quarter, mean ± sd)",
                              "final λ_max", "late λ_max / (2/η)", "final train loss", "claimed λ_max"], rows)


def main(argv=None) -> dict:
    p = rc.parser(NAME, __doc__)
    p.add_argument("--keep-runs", action="store_true", help="keep the training run directories")
    args = p.parse_args(argv)
    out = rc.setup(args)
    clock = rc.Clock()
    cfg = config(args.quick)
    results = run(cfg, out, args.seed, args.keep_runs)
    f, tmp = rc.open_h5(out / "eos.h5", NAME, {**cfg, "seed": args.seed, "quick": args.quick})
    for lr, r in results.items():
        arrays = {k: r[k] for k in ("step", "lambda_max", "train_loss")}
        attrs = {k: v for k, v in r.items() if k not in arrays}
        rc.write_group(f, f"lr_{lr:g}", arrays, {"lr": lr, "two_over_lr": 2 / lr, **attrs})
    f.attrs["seconds"] = clock()
    rc.close_h5(f, tmp, out / "eos.h5")
    figure(results, out / "eos.png")
    rc.write_table(out, table(results))
    print(f"\n{clock():.0f} s; digits, MLP widths {cfg['widths']}, full-batch GD, cross-entropy; "
          f"λ_max by Lanczos on all {next(iter(results.values()))['n_train']} training samples")
    return results


if __name__ == "__main__":
    main()
