"""``landscape stability``: the lecture's linear-stability verdicts for GD and SGD at a minimum."""

from __future__ import annotations

import math

from ..metrics import reports
from . import output
from .common import report_command

PRETTY = {"gd": "λ_max(H) ≤ 2/η", "sgd_nonuniformity": "s ≤ 1/(η·sqrt(c_B))",
          "alignment": "‖H‖_F ≤ 1/(η·sqrt(c_B·μ))",
          "matrix_sufficient": "λ_max((I−ηH)² + η²c_B·Σ_H) ≤ 1"}
KIND = {"gd": "GD: iff", "sgd_nonuniformity": "SGD: necessary",
        "alignment": "SGD: necessary (Thm 3)",
        "matrix_sufficient": "SGD: sufficient only"}


def _compute(ckpt, problem, settings: dict, start):
    from ..errors import ConfigError
    from ..metrics.stability import stability_report

    settings = dict(settings)
    lr = settings.pop("lr") or ckpt.training.get("lr")
    batch_size = settings.pop("sgd_batch_size") or ckpt.training.get("batch_size")
    if lr is None or batch_size is None:
        missing = " and ".join(n for n, v in (("--lr", lr), ("--batch-size",
                                                             batch_size)) if v is None)
        raise ConfigError(f"the checkpoint records no {missing.replace('--', '')}",
                          f"pass {missing}")
    start("λ_max, ‖H‖_F, s, μ: products")
    result = stability_report(problem, float(lr), int(batch_size), **settings, seed=problem.seed)
    return result, {"lr": lr, "batch_size": int(batch_size), **settings}, {}


def _show(report: dict, problem, checkpoint) -> None:
    result, settings = report, report["settings"]
    lr, batch_size = settings["lr"], settings["batch_size"]
    f = "{:.4g}".format
    rows, notes = [], []
    for name, v in result["verdicts"].items():
        verdict = "undefined" if v["holds"] is None else ("holds" if v["holds"] else "VIOLATED")
        if v["holds"] is not None and not v["decided"]:
            verdict += " (within error)"
        if name == "gd" and v["holds"] is False:
            notes.append(
                f"GD leaves this minimum at rate |1 − ηλ_max| = {v['escape_rate']:.3g} per step"
            )
        if name == "alignment" and not math.isfinite(v["mu"]):
            notes.append("alignment: μ is not available for a token loss (undecided)")
        elif name == "alignment":
            notes.append(f"alignment: μ = {v['mu']:.3g}; γ0 = η²·μ·c_B·‖H‖_F² = {v['gamma0']:.3g}"
                         + (" > 1: SGD escapes, E L_t ≥ γ0^t E L_0" if v["escapes"] else " ≤ 1"))
        if v.get("note"):
            notes.append(v["note"])
        if name == "matrix_sufficient":
            notes.append(
                "the matrix condition is sufficient, not necessary: a violation does not prove "
                "instability"
            )
        err = f(v["error"]) if math.isfinite(v["error"]) else "—"
        # a Lanczos residual bounds the error of an eigenvalue; it is no standard error
        residual = name in ("gd", "matrix_sufficient") or (
            name == "sgd_nonuniformity"
            and not math.isfinite(result["measured"].get("nonuniformity_stderr", math.nan))
        )
        shown = f"{f(v['value'])} (residual {err})" if residual else f"{f(v['value'])} ± {err}"
        rows.append((PRETTY[name], shown, f(v["bound"]), f(v["margin"]), verdict, KIND[name]))
    m = result["measured"]
    caption = (
        f"η = {lr:g}, B = {batch_size}, n = {problem.n}, minibatches drawn {settings['sampling']} "
        "replacement: "
        f"c_B = {result['noise_factor_formula']} = {result['noise_factor']:.3g}; "
        f"L = {m['loss']:.3g}, ‖g‖ = {m['grad_norm']:.3g} (the conditions assume a minimum with "
        "every l_i ≈ 0); "
        f"{report['seconds']:.2f} s"
    )
    output.table(f"Linear stability at {checkpoint}", ["condition", "measured", "bound", "margin",
                                                       "verdict", "kind"],
                 rows, caption=caption)
    for note in notes:
        output.info(note)


stability = report_command(
    "stability",
    "Linear stability of GD and SGD (learning rate η, batch B) at this minimum: the lecture's "
    "verdicts.",
    reports.STABILITY,
    _compute,
    _show,
    hdf5_keys=("measured", "verdicts"),
    legacy_batch=False,
)
