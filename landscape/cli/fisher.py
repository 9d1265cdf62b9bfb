"""``landscape fisher``: the Hessian, GGN, Monte-Carlo Fisher and empirical Fisher side by side
(trace, λ_max, Frobenius norm, pairwise Frobenius cosines)."""

from __future__ import annotations

from ..metrics import reports
from . import output
from .common import report_command


def _compute(ckpt, problem, settings: dict, start):
    from ..metrics.fisher import fisher_report

    return fisher_report(problem, **settings, seed=problem.seed, on_start=start), settings, {}


def _show(report: dict, problem, checkpoint) -> None:
    from ..metrics.fisher import LABELS

    result, probes, mc_samples = (
        report,
        report["settings"]["probes"],
        report["settings"]["mc_samples"],
    )
    fmt = "{:.6g}".format
    rows = []
    for name, m in result["matrices"].items():
        lam = m["lambda_max"]
        rows.append((LABELS[name], f"{fmt(m['trace']['estimate'])} ± {fmt(m['trace']['stderr'])}",
                     (f"{fmt(lam['estimate'])} ({'one draw, no error; ' if 'note' in lam else ''}"
                      f"residual {lam['residual']:.2g})"),
                     f"{fmt(m['frobenius']['estimate'])} ± {fmt(m['frobenius']['stderr'])}"))
    caption = (
        f"{problem.count_text()}, p = {problem.p}, loss {problem.loss.name}, "
        f"{probes} shared probes, "
        f"Fisher with {mc_samples} label(s) per sample, {report['seconds']:.2f} s"
    )
    output.table(f"Curvature matrices of {checkpoint}", ["matrix", "trace ± se", "λ_max",
                                                         "‖·‖_F ± se"], rows,
                 caption=caption)
    crow = []
    for key, c in result["cosine"].items():
        a, b = key.split("~")
        crow.append((f"{LABELS[a]} ~ {LABELS[b]}", fmt(c["estimate"]), fmt(c["stderr"])))
    output.table("Frobenius cosines ⟨A,B⟩_F / (‖A‖_F ‖B‖_F)", ["pair", "cosine", "± stderr"], crow)
    output.info(
        "the Monte-Carlo Fisher's errors cover its label draws (two independent draws per probe "
        "group); "
        f"{result['matrices']['fisher']['lambda_max']['note']}"
    )


fisher = report_command(
    "fisher",
    "Hessian, GGN, Monte-Carlo Fisher and empirical Fisher: trace, λ_max, Frobenius norm, cosines.",
    reports.FISHER,
    _compute,
    _show,
    hdf5_keys=("matrices", "cosine"),
)
