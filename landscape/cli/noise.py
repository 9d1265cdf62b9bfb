"""``landscape noise``: how the SGD noise covariance aligns with the curvature (α, β, μ, exact by
Gram identities) and the non-uniformity s of the per-sample Hessians."""

from __future__ import annotations

from ..metrics import reports
from . import output
from .common import ProblemSpec, Stopwatch, declared_options, header, problem_options
from .options import CheckpointArg, DebugOpt, JsonOpt, OutOpt


@output.handle_errors
@problem_options
@declared_options(reports.NOISE)
def noise(
    checkpoint: CheckpointArg,
    settings: dict | None = None,
    spec: ProblemSpec = None,
    json_: JsonOpt = False,
    out: OutOpt = None,
    debug: DebugOpt = False,
) -> None:
    """Alignment of the SGD noise with G (α, β, μ; exact, no p x p matrix) and the non-uniformity s."""
    from ..metrics.stability import noise_report

    clock = Stopwatch()
    output.check_writable(out)
    seed = spec.seed
    ckpt, problem = spec.load(checkpoint)
    at = problem.point()  # a NaN checkpoint fails here
    from ..curvature.base import count_products

    with output.progress(not json_) as start, count_products(start("alignment (Gram sweep), then s (Lanczos): products", None)):
        result = noise_report(problem, **settings, seed=seed, memory=problem.budget.bytes // 2)
    total = problem.samples_total
    report = header(ckpt, problem)
    report.update(at)
    report["settings"] = {**settings, **spec.settings()}
    report["samples_total"] = total
    report["subsample"] = problem.n < total
    report.update(result)
    report["seconds"] = clock()
    if out is not None:
        from ..io.hdf5 import write_tree

        write_tree(out, {"noise": result}, attrs={k: v for k, v in report.items() if k not in result})
    if json_:
        output.emit_json(report)
        return
    for note in [*result["alignment"]["notes"], *([sd_note] if (sd_note := result["nonuniformity_detail"].get("note")) else [])]:
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
        ("s = sqrt(λ_max(Σ_H))", f(result["nonuniformity"]) + (f" ± {sd['stderr']:.2g}" if sd.get("subsets") else ""),
         (f"{sd['subsets']} subsets of {sd['samples']} samples (biased up)" if sd.get("subsets")
          else f"in [{lo:.4g}, {hi:.4g}], {sd['samples']} samples") + f", {sd['matvecs']} products"),
    ]
    sub = f" (seeded subset of {total})" if report["subsample"] else ""
    caption = (f"{problem.n} samples{sub}, p = {problem.p}, loss {problem.loss.name}, "
               f"{report['seconds']:.2f} s")
    output.table(f"SGD noise at {checkpoint}", ["quantity", "value", "note"], rows, caption=caption)
    output.written(out)
