"""Experiment 3 — SGD escapes a minimum that is stable for GD (lecture Figure 19) and the
isotropic-noise control ("The importance of noise structure"; docs/algorithms.md §2), with
``landscape.escape.experiment.run_escape`` (the code behind ``landscape escape``): full-batch GD to
near convergence on a digits MLP (squared error on one-hot labels, ½‖f − y‖² per sample), then many
trajectories of each dynamics from that point at the same learning rate: SGD with batch B, Gaussian
isotropic noise with SGD's total variance, SGD's noise scaled by 0.1 (small-noise), and GD. The
start is measured with ``minimum_stats`` (λ_max against 2/η, ‖H‖_F, tr H, the non-uniformity s
against sqrt(B(n−1)/(n−B))/η, the alignment μ, Theorem 4's γ_0, and tr H against sqrt(pB)/η for
isotropic noise).

    python scripts/repro_escape.py [--out docs/repro/escape] [--quick]

Writes ``escape.h5`` (``/start`` attributes: the starting point's statistics and GD's descent;
``/<dynamics>``: ``record_steps``, ``losses[T, R]``, ``distances[T, R]`` and the summary as
attributes), ``escape.png`` (Figure 19: every trajectory thin, the mean bold, log scale) and
``table.md``."""

from __future__ import annotations

try:
    from scripts import repro_common as rc
except ImportError:  # run as a file
    import repro_common as rc

NAME = "escape"


def config(quick: bool) -> dict:
    if quick:
        return {"n": 32, "widths": [16], "lr": 0.5, "tol": 1e-3, "max_gd_steps": 3000, "batch": 2,
                "steps": 30, "trajectories": {"sgd": 8, "isotropic": 4, "small-noise": 4, "gd": 1},
                "noise_samples": 8, "probes": 5, "s_samples": None}
    return {"n": 256, "widths": [128, 128], "lr": 0.5, "tol": 1e-4, "max_gd_steps": 20000,
            "batch": 10,
            "steps": 80, "trajectories": {"sgd": 100, "isotropic": 20, "small-noise": 20, "gd": 1},
            "noise_samples": 16, "probes": 20, "s_samples": 128}


def problem(cfg: dict, seed: int):
    import torch

    from landscape.data import load_dataset
    from landscape.models import build_model, model_kwargs_for
    from landscape.problem import Problem

    split = load_dataset("digits")
    X, y = split.train
    Y = torch.nn.functional.one_hot(y, 10).to(X.dtype)  # squared error on one-hot labels
    model = build_model("mlp", seed=seed, **model_kwargs_for("mlp", split, widths=cfg["widths"]))
    return Problem(model, "mse", (X, Y), samples=cfg["n"], seed=seed)


def run(cfg: dict, seed: int = 0) -> dict:
    from landscape.escape.experiment import EscapeSettings, run_escape

    pb = problem(cfg, seed)
    settings = EscapeSettings(
        to=list(cfg["trajectories"]), trajectories=cfg["trajectories"], lr=cfg["lr"],
        batch_size=cfg["batch"], steps=cfg["steps"], tol=cfg["tol"],
        max_gd_steps=cfg["max_gd_steps"], noise_samples=cfg["noise_samples"], probes=cfg["probes"],
        align_samples=None, s_samples=cfg["s_samples"], nonuniformity=cfg["s_samples"] is not None,
        seed=seed, trajectory_seed=seed + 1)
    result = run_escape(pb, settings)
    ds, stats = result.descent, dict(result.stats)
    stats.update(gd_steps=ds.steps, gd_converged=ds.converged, gd_seconds=ds.seconds)
    runs = {dyn: (result.runs[dyn], result.summaries[dyn]) for dyn in settings.to}
    return {"start": stats, "gd_losses": ds.losses.numpy(), "runs": runs}


CLAIMS = {
    "sgd": "escapes (Fig. 19: all 200 trajectories leave the GD minimum)",
    "isotropic": "stays: same total variance, no escape unless tr(H) > sqrt(pB)/η",
    "small-noise": "stays (control)",
    "gd": "stays (λ_max ≤ 2/η)",
}


def table(summaries: dict) -> str:
    """``summaries``: ``{dynamics: EscapeSummary.to_dict()}``."""
    rows = []
    for dyn, s in summaries.items():
        rows.append([dyn, str(s["trajectories"]),
                     f"{100 * s['fraction_escaped']:.0f}% ± {100 * s['fraction_stderr']:.0f}%",
                     rc.fmt(s["median_step"]), rc.fmt(s["growth_rate"]),
                     rc.fmt(s["predicted_growth"]),
                     rc.fmt(s["final_median_loss"]), str(s["diverged"]), CLAIMS.get(dyn, "–")])
    return rc.markdown_table(["dynamics", "trajectories", "escaped (loss > 10× start)",
                              "median escape step",
                              "mean-loss growth / step (fit)", "γ predicted / step",
                              "final median loss",
                              "diverged", "lecture"], rows)


def figure(h5path, path) -> None:
    """Figure 19 from the HDF5 file. A predicted factor below 1 is not drawn: Theorem 4 gives a
    lower bound on the growth only when it exceeds 1 (below 1 it predicts nothing)."""
    import json

    import h5py

    from landscape.io.escape_figures import escape_figure

    with h5py.File(h5path, "r") as f:
        cfg = json.loads(f.attrs["config"])
        st = dict(f["start"].attrs)
        panels = []
        for dyn in cfg["trajectories"]:
            g = f[dyn]
            summ = _attrs(g)
            pred = summ.get("predicted_growth")
            if pred is None or not (float(pred) > 1):
                summ["predicted_growth"] = None
            panels.append((g["record_steps"][()], g["losses"][()], summ))
    fig = escape_figure(
        panels,
        title=f"digits MLP {cfg['widths']}, n={st['n']}, MSE; GD minimum at η={cfg['lr']}: "
        f"λ_max={st['lambda_max']:.3g} ≤ 2/η={st['two_over_lr']:.3g}; B={cfg['batch']}",
    )
    start = float(st["loss"])
    for ax in fig.axes:
        ax.set_ylim(start / 10, start * 1e8)  # diverged trajectories (inf) run off the top
    rc.savefig(fig, path)


def start_table(st: dict) -> str:
    keys = [("loss", "L at the GD minimum"), ("gd_steps", "GD steps"), ("lambda_max", "λ_max(H)"),
            ("two_over_lr", "2/η"), ("hessian_trace", "tr H"), ("hessian_frobenius", "‖H‖_F"),
            ("nonuniformity", "non-uniformity s"), ("nonuniformity_bound", "sqrt(B(n−1)/(n−B))/η"),
            ("mu", "alignment μ"), ("alignment_bound", "1/(η sqrt(c_B μ))"), ("gamma_0",
                "γ_0 = η² μ c_B ‖H‖_F²"),
            ("p", "p")]
    rows = [[name, rc.fmt(st.get(k))] for k, name in keys]
    # the slides' condition for isotropic noise of the same total variance ("importance of noise
    # structure")
    iso = (float(st["p"]) * float(st["batch_size"])) ** 0.5 / float(st["lr"])
    rows.insert(-1, ["sqrt(pB)/η (isotropic noise: escape needs tr H above it)", rc.fmt(iso)])
    return rc.markdown_table(["quantity", "value"], rows)


def _attrs(g) -> dict:
    return {k: (None if isinstance(v, (str, bytes)) and v in ("None", b"None", "null",
        b"null") else v) for k, v in g.attrs.items()}


def replot(out) -> None:
    """Figure and table again from ``out/escape.h5`` (no recomputation)."""
    import json

    import h5py

    with h5py.File(out / "escape.h5", "r") as f:
        cfg = json.loads(f.attrs["config"])
        st = _attrs(f["start"])
        summaries = {d: _attrs(f[d]) for d in cfg["trajectories"]}
    figure(out / "escape.h5", out / "escape.png")
    rc.write_table(out, start_table(st) + "\n\n" + table(summaries))


def main(argv=None) -> dict:
    p = rc.parser(NAME, __doc__)
    p.add_argument("--replot", action="store_true",
                   help="only redraw the figure and table from escape.h5")
    args = p.parse_args(argv)
    out = rc.setup(args)
    if args.replot:
        replot(out)
        return {}
    clock = rc.Clock()
    cfg = config(args.quick)
    res = run(cfg, args.seed)
    with rc.result_h5(out / "escape.h5", NAME, {**cfg, "seed": args.seed,
                                                "quick": args.quick}) as f:
        rc.write_group(f, "start", {"gd_losses": res["gd_losses"]}, res["start"])
        for dyn, (traj, s) in res["runs"].items():
            rc.write_group(f, dyn, {"record_steps": traj.record_steps.numpy(),
                                    "losses": traj.losses.numpy(),
                                    "distances": traj.distances.numpy()}, s.to_dict())
        f.attrs["seconds"] = clock()
    figure(out / "escape.h5", out / "escape.png")
    text = start_table(res["start"]) + "\n\n" + table({d: s.to_dict() for d, (_,
        s) in res["runs"].items()})
    rc.write_table(out, text)
    print(f"\n{clock():.0f} s")
    return res


if __name__ == "__main__":
    main()
