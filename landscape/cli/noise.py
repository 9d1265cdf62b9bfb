"""``landscape noise``: how the SGD noise covariance aligns with the curvature (α, β, μ, exact by
Gram identities) and the non-uniformity s of the per-sample Hessians."""

from __future__ import annotations

from ..metrics import reports
from . import output
from .common import report_command


def _compute(ckpt, problem, settings: dict, start):
    from ..metrics.stability import noise_report

    start("alignment (Gram sweep), then s (Lanczos): products")
    result = noise_report(problem, **settings, seed=problem.seed, memory=problem.budget.bytes // 2)
    total = problem.samples_total
    return result, settings, {"samples_total": total, "subsample": problem.n < total}


def _show(report: dict, problem, checkpoint) -> None:
    result, total = report, report["samples_total"]
    for note in [*result["alignment"]["notes"],
                 *([sd_note] if (sd_note := result["nonuniformity_detail"].get("note")) else [])]:
        output.info(f"note: {note}")
    f = "{:.6g}".format
    al, sd = result["alignment"], result["nonuniformity_detail"]
    lo, hi = sd["interval"]
    rows = [
        ("alpha = tr(ΣG)/(‖G‖_F ‖Σ‖_F)", f(result["alpha"]), "direction (cosine)"),
        ("beta = ‖Σ‖_F/(2L ‖G‖_F)", f(result["beta"]), "magnitude"),
        ("mu = alpha·beta", f(result["mu"]), "loss-scaled alignment"),
        ("L", f(result["loss"]), f"‖g‖ = {al['grad_norm']:.3g}"),
        ("tr(ΣG)", f(result["tr_sigma_g"]), "exact"),
        ("‖Σ‖_F", f(result["sigma_frobenius"]), f"tr Σ = {al['trace_sigma']:.4g}"),
        (f"‖G‖_F ({al['g_matrix']})", f(result["g_frobenius"]), f"tr G = {al['trace_g']:.4g}"),
        ("‖Σ − 2LG‖_F / ‖Σ‖_F", f(al["decoupling_error"]), "decoupling approximation"),
        (
            "s = sqrt(λ_max(Σ_H))",
            f(result["nonuniformity"]) + (f" ± {sd['stderr']:.2g}" if sd.get("subsets") else ""),
            (
                f"{sd['subsets']} subsets of {sd['samples']} samples (biased up)"
                if sd.get("subsets")
                else f"in [{lo:.4g}, {hi:.4g}], {sd['samples']} samples"
            )
            + f", {sd['matvecs']} products",
        ),
    ]
    sub = f" (seeded subset of {total})" if report["subsample"] else ""
    caption = (f"{problem.count_text()}{sub}, p = {problem.p}, loss {problem.loss.name}, "
               f"{report['seconds']:.2f} s")
    output.table(f"SGD noise at {checkpoint}", ["quantity", "value", "note"], rows, caption=caption)


noise = report_command(
    "noise",
    "Alignment of the SGD noise with G (α, β, μ; exact, no p x p matrix) and the non-uniformity s.",
    reports.NOISE,
    _compute,
    _show,
)
