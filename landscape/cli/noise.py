"""``landscape noise``: how the SGD noise covariance aligns with the curvature (α, β, μ, exact by
Gram identities) and the non-uniformity s of the per-sample Hessians."""

from __future__ import annotations

from typing import Annotated

import typer

from . import output
from .common import ProblemSpec, Stopwatch, header, problem_options
from .options import CheckpointArg, DebugOpt, JsonOpt, OutOpt

SSamplesOpt = Annotated[int | None, typer.Option("--s-samples", help="Seeded subset of samples for the non-uniformity s (default: all).")]
ChunkOpt = Annotated[int | None, typer.Option("--chunk", help="Samples per chunk of per-sample vectors / Gram block (default: fit the memory budget).")]


@output.handle_errors
@problem_options
def noise(
    checkpoint: CheckpointArg,
    s_samples: SSamplesOpt = None,
    tol: Annotated[float, typer.Option(help="Relative residual tolerance of Lanczos for s.")] = 1e-4,
    max_steps: Annotated[int | None, typer.Option("--max-steps", help="Cap on Lanczos steps.")] = None,
    chunk: ChunkOpt = None,
    rtol: Annotated[float, typer.Option("--g-rtol", help="Drop output-space directions of each loss Hessian below this fraction of its largest eigenvalue (0: exact; the dropped trace is reported).")] = 0.0,
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
    at = {"accuracy": problem.accuracy()}
    problem.loss_value()
    from ..curvature.base import count_products

    with output.progress(not json_) as start, count_products(start("alignment (Gram sweep), then s (Lanczos): products", None)):
        result = noise_report(problem, s_samples=s_samples, seed=seed, tol=tol, max_steps=max_steps, chunk=chunk,
                              rtol=rtol, memory=problem.budget.bytes // 2)
    total = problem.samples_total
    report = header(ckpt, problem)
    report.update(at)
    report["settings"] = {"s_samples": s_samples, "tol": tol, "max_steps": max_steps, "chunk": chunk,
                          "g_rtol": rtol, **spec.settings()}
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
    if out is not None:
        output.info(f"wrote {out}")
