"""``landscape stability``: the lecture's linear-stability verdicts for GD and SGD at a minimum."""

from __future__ import annotations

from ..metrics import reports
from . import output
from .common import report_command


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
    from ..metrics.stability import stability_table

    table, notes = stability_table(report, problem.n, checkpoint)
    output.table(*table)
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
