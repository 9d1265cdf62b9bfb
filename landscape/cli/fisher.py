"""``landscape fisher``: the Hessian, GGN, Monte-Carlo Fisher and empirical Fisher side by side
(trace, λ_max, Frobenius norm, pairwise Frobenius cosines)."""

from __future__ import annotations

from ..metrics import reports
from . import output
from .common import ProblemSpec, Stopwatch, declared_options, header, problem_options
from .options import CheckpointArg, DebugOpt, JsonOpt, OutOpt


@output.handle_errors
@problem_options
@declared_options(reports.FISHER)
def fisher(
    checkpoint: CheckpointArg,
    settings: dict | None = None,
    spec: ProblemSpec = None,
    json_: JsonOpt = False,
    out: OutOpt = None,
    debug: DebugOpt = False,
) -> None:
    """Hessian, GGN, Monte-Carlo Fisher and empirical Fisher: trace, λ_max, Frobenius norm, cosines."""
    from ..metrics.fisher import LABELS, fisher_report

    clock = Stopwatch()
    probes, mc_samples = settings["probes"], settings["mc_samples"]
    output.check_writable(out)
    seed = spec.seed
    ckpt, problem = spec.load(checkpoint)
    at = problem.point()  # a NaN checkpoint fails here
    state = {"advance": lambda k: None}
    from ..curvature.base import count_products

    with output.progress(not json_) as start, count_products(lambda k: state["advance"](k)):
        result = fisher_report(problem, **settings, seed=seed,
                               on_start=lambda label: state.update(advance=start(label, None)))
    report = header(ckpt, problem)
    report.update(at)
    report["settings"] = {**settings, **spec.settings()}
    report.update(result)
    report["seconds"] = clock()
    if out is not None:
        from ..io.hdf5 import write_tree

        write_tree(out, {"matrices": result["matrices"], "cosine": result["cosine"]},
                   attrs={k: v for k, v in report.items() if k not in ("matrices", "cosine")})
    if json_:
        output.emit_json(report)
        return
    fmt = "{:.6g}".format
    rows = []
    for name, m in result["matrices"].items():
        lam = m["lambda_max"]
        rows.append((LABELS[name], f"{fmt(m['trace']['estimate'])} ± {fmt(m['trace']['stderr'])}",
                     (f"{fmt(lam['estimate'])} ({'one draw, no error; ' if 'note' in lam else ''}"
                      f"residual {lam['residual']:.2g})"),
                     f"{fmt(m['frobenius']['estimate'])} ± {fmt(m['frobenius']['stderr'])}"))
    caption = (f"{problem.n} samples, p = {problem.p}, loss {problem.loss.name}, {probes} shared probes, "
               f"Fisher with {mc_samples} label(s) per sample, {report['seconds']:.2f} s")
    output.table(f"Curvature matrices of {checkpoint}", ["matrix", "trace ± se", "λ_max", "‖·‖_F ± se"], rows,
                 caption=caption)
    crow = []
    for key, c in result["cosine"].items():
        a, b = key.split("~")
        crow.append((f"{LABELS[a]} ~ {LABELS[b]}", fmt(c["estimate"]), fmt(c["stderr"])))
    output.table("Frobenius cosines ⟨A,B⟩_F / (‖A‖_F ‖B‖_F)", ["pair", "cosine", "± stderr"], crow)
    output.info(f"the Monte-Carlo Fisher's errors cover its label draws (two independent draws per probe group); "
                f"{result['matrices']['fisher']['lambda_max']['note']}")
    output.written(out)
