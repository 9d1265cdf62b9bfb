"""``landscape noise``: how the SGD noise covariance aligns with the curvature (α, β, μ, exact by
Gram identities) and the non-uniformity s of the per-sample Hessians."""

from __future__ import annotations

from typing import Annotated

import typer

from . import output
from .common import Stopwatch, header, load_problem
from .options import (
    BatchOpt,
    CheckpointArg,
    DataOpt,
    DebugOpt,
    DeviceOpt,
    DtypeOpt,
    JsonOpt,
    LossOpt,
    ModelOpt,
    OutOpt,
    ParamsOpt,
    SamplesOpt,
    SeedOpt,
    SplitOpt,
    TrainModeOpt,
)

SSamplesOpt = Annotated[int | None, typer.Option("--s-samples", help="Seeded subset of samples for the non-uniformity s (default: all).")]
ChunkOpt = Annotated[int | None, typer.Option("--chunk", help="Samples per chunk of per-sample vectors / Gram block (default: fit the memory budget).")]


def dataset_size(ckpt, split: str) -> int | None:
    """How many samples the checkpoint's split holds (None if unknown)."""
    try:
        return int(ckpt.dataset().part(split)[0].shape[0])
    except Exception:  # noqa: BLE001 - only for reporting
        return None


@output.handle_errors
def noise(
    checkpoint: CheckpointArg,
    s_samples: SSamplesOpt = None,
    tol: Annotated[float, typer.Option(help="Relative residual tolerance of Lanczos for s.")] = 1e-4,
    max_steps: Annotated[int | None, typer.Option("--max-steps", help="Cap on Lanczos steps.")] = None,
    chunk: ChunkOpt = None,
    memory: Annotated[int, typer.Option("--memory", help="Memory budget of the Gram sweep in MiB (all per-sample rows are kept when they fit).")] = 512,
    rtol: Annotated[float, typer.Option("--g-rtol", help="Drop output-space directions of each loss Hessian below this fraction of its largest eigenvalue (0: exact; the dropped trace is reported).")] = 0.0,
    model: ModelOpt = None,
    data: DataOpt = None,
    loss: LossOpt = None,
    split: SplitOpt = "train",
    samples: SamplesOpt = None,
    batch_size: BatchOpt = 256,
    params: ParamsOpt = None,
    device: DeviceOpt = "cpu",
    dtype: DtypeOpt = "float32",
    seed: SeedOpt = 0,
    train_mode: TrainModeOpt = False,
    json_: JsonOpt = False,
    out: OutOpt = None,
    debug: DebugOpt = False,
) -> None:
    """Alignment of the SGD noise with G (α, β, μ; exact, no p x p matrix) and the non-uniformity s."""
    from ..metrics.stability import noise_report

    clock = Stopwatch()
    ckpt, problem = load_problem(checkpoint, model=model, data=data, loss=loss, split=split, samples=samples,
                                 batch_size=batch_size, params=params, device=device, dtype=dtype,
                                 train_mode=train_mode, seed=seed)
    problem.loss_value()
    with output.progress(not json_) as start:
        start("alignment (Gram sweep) and non-uniformity (Lanczos)", None)
        result = noise_report(problem, s_samples=s_samples, seed=seed, tol=tol, max_steps=max_steps, chunk=chunk,
                              rtol=rtol, memory=memory << 20)
    total = dataset_size(ckpt, split)
    report = header(ckpt, problem)
    report["settings"] = {"s_samples": s_samples, "tol": tol, "max_steps": max_steps, "chunk": chunk,
                          "memory_mib": memory, "g_rtol": rtol, "seed": seed, "split": split,
                          "batch_size": batch_size, "params_regex": params, "train_mode": train_mode}
    report["samples_total"] = total
    report["subsample"] = total is not None and problem.n < total
    report.update(result)
    report["seconds"] = clock()
    if out is not None:
        from ..io.hdf5 import write_tree

        write_tree(out, {"noise": result}, attrs={k: v for k, v in report.items() if k not in result})
    if json_:
        output.emit_json(report)
        return
    for note in result["alignment"]["notes"]:
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
        ("s = sqrt(λ_max(Σ_H))", f(result["nonuniformity"]),
         f"in [{lo:.4g}, {hi:.4g}], {sd['samples']} samples, {sd['matvecs']} products"),
    ]
    sub = f" (seeded subset of {total})" if report["subsample"] else ""
    caption = (f"{problem.n} samples{sub}, p = {problem.p}, loss {problem.loss.name}, "
               f"{report['seconds']:.2f} s")
    output.table(f"SGD noise at {checkpoint}", ["quantity", "value", "note"], rows, caption=caption)
    if out is not None:
        output.info(f"wrote {out}")
