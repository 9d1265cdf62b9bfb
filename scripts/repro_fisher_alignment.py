"""Experiment 5 — empirical against true Fisher, and the noise alignment μ, along a training run
(docs/algorithms.md §1: "empirical Fisher", "true Fisher", "noise alignment"; lecture "Quantify the
alignment strength"; sgd-covariance-noise App. F; fisher-sam §3). One SGD run on a digits MLP
(``landscape.train`` with ``checkpoint_every``); at each checkpoint, on a fixed seeded subset of
training samples:

- the Hessian H, the true Fisher F (= the GGN for softmax cross-entropy, exact:
  ``landscape.GGN``) and the empirical Fisher F_emp (gradients at the labels,
  ``landscape.curvature.fisher.EmpiricalFisher``): traces, Frobenius norms and pairwise cosines
  ``⟨A,B⟩_F/(‖A‖_F‖B‖_F)`` from shared Rademacher probes
  (``landscape.estimators.alignment.matrix_comparison``), and λ_max of each (Lanczos);
- the alignment factors α, β, μ = αβ of the SGD noise covariance Σ with G (exact Gram identities,
  ``landscape.estimators.alignment.alignment``).

    python scripts/repro_fisher_alignment.py [--out docs/repro/fisher_alignment] [--quick]

Writes ``fisher_alignment.h5`` (``/series``: one array per quantity over checkpoints; ``/step_<k>``
attributes: everything measured there), ``fisher_alignment.png`` and ``table.md``.
"""

from __future__ import annotations

import shutil

import numpy as np

try:
    from scripts import repro_common as rc
except ImportError:  # run as a file
    import repro_common as rc

NAME = "fisher_alignment"


def config(quick: bool) -> dict:
    if quick:
        return {"n_train": 128, "widths": [16], "epochs": 4, "batch": 16, "lr": 0.05,
                "checkpoints": 3,
                "samples": 64, "probes": 8}
    return {"n_train": 512, "widths": [32, 32], "epochs": 30, "batch": 32, "lr": 0.05,
            "checkpoints": 10,
            "samples": 256, "probes": 30}


def run(cfg: dict, out, seed: int = 0) -> list[dict]:
    from landscape.curvature.fisher import EmpiricalFisher
    from landscape.curvature.ggn import GGN
    from landscape.curvature.hessian import Hessian
    from landscape.estimators import top_eigenvalues
    from landscape.estimators.alignment import alignment, matrix_comparison
    from landscape.io.checkpoint import Checkpoint
    from landscape.train import TrainConfig, train

    steps_per_epoch = -(-cfg["n_train"] // cfg["batch"])
    total = cfg["epochs"] * steps_per_epoch
    every = max(1, total // cfg["checkpoints"])
    path = out / "run"
    tc = TrainConfig(model="mlp", model_kwargs={"widths": cfg["widths"]}, data="digits",
                     data_kwargs={"n_train": cfg["n_train"], "seed": seed}, optimizer="sgd",
                     lr=cfg["lr"],
                     momentum=0.9, batch_size=cfg["batch"], epochs=cfg["epochs"], seed=seed,
                     checkpoint_every=every, plot=False)
    train(tc, path, force=True)
    files = sorted(path.glob("step-*.pt"))
    rows = []
    for f in files:
        ck = Checkpoint.load(f)
        step = int(ck.training.get("step", 0))
        pb = ck.problem(samples=cfg["samples"], seed=seed)
        ops = {"H": Hessian(pb), "F": GGN(pb), "F_emp": EmpiricalFisher(pb)}
        comp = matrix_comparison(ops, probes=cfg["probes"], seed=seed)
        row = {"step": step, "epoch": step / steps_per_epoch, "loss": pb.loss_value(),
               "accuracy": pb.accuracy()}
        for name, op in ops.items():
            row[f"trace_{name}"] = comp["trace"][name].value
            row[f"trace_{name}_stderr"] = comp["trace"][name].stderr
            row[f"frobenius_{name}"] = comp["frobenius"][name].value
            row[f"lambda_{name}"] = float(top_eigenvalues(op, k=1, tol=1e-3, seed=seed).values[0])
        for key, est in comp["cosine"].items():
            row[f"cos_{key}"] = est.value
            row[f"cos_{key}_stderr"] = est.stderr
        al = alignment(pb)
        row.update(alpha=al.alpha, beta=al.beta, mu=al.mu, tr_sigma=al.trace_sigma, tr_G=al.trace_g,
                   decoupling_error=al.decoupling_error, grad_norm=al.grad_norm)
        rows.append(row)
    shutil.rmtree(path, ignore_errors=True)
    return rows


def figure(rows: list[dict], path) -> None:
    from landscape.io.figures import plt

    ep = np.array([r["epoch"] for r in rows])
    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    for name, label in (("H", "Hessian H"), ("F", "true Fisher F (= GGN)"), ("F_emp",
        "empirical Fisher F_emp")):
        axes[0].errorbar(ep, [r[f"trace_{name}"] for r in rows],
                         yerr=[r[f"trace_{name}_stderr"] for r in rows],
                         marker="o", ms=3, capsize=2, label=f"tr {label}")
        axes[0].plot(ep, [r[f"lambda_{name}"] for r in rows], ls="--", marker=".",
                     label=f"λ_max {name}")
    axes[0].set_yscale("log")
    axes[0].set_title("traces (solid, ± s.e.) and λ_max (dashed)")
    for key, label in (("F~F_emp", "cos(F, F_emp)"), ("H~F", "cos(H, F)"), ("H~F_emp",
                                                                            "cos(H, F_emp)")):
        axes[1].errorbar(ep, [r[f"cos_{key}"] for r in rows],
                         yerr=[r[f"cos_{key}_stderr"] for r in rows],
                         marker="o", ms=3, capsize=2, label=label)
    axes[1].set_ylim(0, 1.05)
    axes[1].set_title("Frobenius cosines")
    for key, label in (("mu", "μ = αβ"), ("alpha", "α (direction)"), ("beta", "β (magnitude)")):
        axes[2].plot(ep, [r[key] for r in rows], marker="o", ms=3, label=label)
    axes[2].set_title("alignment of Σ with G (exact)")
    ax2 = axes[2].twinx()
    ax2.plot(ep, [r["loss"] for r in rows], color="gray", ls=":", label="train loss")
    ax2.set_yscale("log")
    ax2.set_ylabel("training loss (dotted)", color="gray")
    for ax in axes:
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    rc.savefig(fig, path)


def table(rows: list[dict]) -> str:
    out = []
    for r in rows:
        out.append([f"{r['epoch']:.1f}", rc.fmt(r["loss"]), rc.fmt(r["trace_H"]),
                    rc.fmt(r["trace_F"]),
                    rc.fmt(r["trace_F_emp"]), rc.fmt(r["lambda_F"]), rc.fmt(r["lambda_F_emp"]),
                    f"{r['cos_F~F_emp']:.3f} ± {r['cos_F~F_emp_stderr']:.3f}",
                    f"{r['cos_H~F']:.3f} ± {r['cos_H~F_stderr']:.3f}",
                    rc.fmt(r["alpha"]), rc.fmt(r["beta"]), rc.fmt(r["mu"])])
    return rc.markdown_table(["epoch", "train loss (subset)", "tr H", "tr F", "tr F_emp", "λ_max F",
                              "λ_max F_emp",
                              "cos(F, F_emp)", "cos(H, F)", "α", "β", "μ"], out)


def main(argv=None) -> list[dict]:
    p = rc.parser(NAME, __doc__)
    args = p.parse_args(argv)
    out = rc.setup(args)
    clock = rc.Clock()
    cfg = config(args.quick)
    rows = run(cfg, out, args.seed)
    with rc.result_h5(out / f"{NAME}.h5", NAME, {**cfg, "seed": args.seed,
                                                 "quick": args.quick}) as f:
        rc.write_group(f, "series", {k: [r[k] for r in rows] for k in rows[0]})
        for r in rows:
            rc.write_group(f, f"step_{r['step']}", None, r)
        f.attrs["seconds"] = clock()
    figure(rows, out / f"{NAME}.png")
    rc.write_table(out, table(rows))
    print(
        f"\n{clock():.0f} s; digits subset n={cfg['n_train']}, MLP {cfg['widths']}, "
        f"cross-entropy, SGD B={cfg['batch']} "
        f"lr={cfg['lr']} momentum 0.9, {cfg['epochs']} epochs; measured on {cfg['samples']} "
        "training samples, "
        f"{cfg['probes']} probes"
    )
    return rows


if __name__ == "__main__":
    main()
