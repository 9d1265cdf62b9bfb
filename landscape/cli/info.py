"""``landscape info``: what a checkpoint holds (model, data, loss, training record, parameters);
with ``--plan``, what measuring it will cost."""

from __future__ import annotations

from ..metrics import declared
from . import output
from .common import ProblemSpec, declared_options, problem_options
from .options import CheckpointArg, DebugOpt, JsonOpt, MetricOpt, PlanOpt


@output.handle_errors
@problem_options
@declared_options(declared())
def info(
    checkpoint: CheckpointArg,
    plan: PlanOpt = False,
    metric: MetricOpt = None,
    settings: dict | None = None,
    spec: ProblemSpec = None,
    json_: JsonOpt = False,
    debug: DebugOpt = False,
) -> None:
    """What a checkpoint holds: model, data, loss, training record and parameter shapes; with
    --plan, the products, memory and time that measuring it will take (from one timed batch)."""
    if plan:
        from ..metrics import Settings, parse_metrics
        from . import plan as plan_cmd

        names = parse_metrics(metric)
        settings = Settings.of(settings, seed=spec.seed).validate(names)
        ckpt, problem = spec.load(checkpoint)
        plan_cmd.show(ckpt, problem, names, settings, json_=json_)
        return
    ckpt = spec.checkpoint(checkpoint)
    desc = ckpt.describe()
    if json_:
        output.emit_json(desc)
        return
    rows = []
    for key, value in desc.items():
        if key == "tensors":
            rows.append((key, f"{len(value)} tensors: " + ", ".join(
                f"{t['name']} {'x'.join(map(str, t['shape'])) or 'scalar'}" for t in value[:6])
                + (", ..." if len(value) > 6 else "")))
        elif isinstance(value, dict):
            for k, v in value.items():
                rows.append((f"{key}.{k}", _short(v)))
        else:
            rows.append((key, _short(value)))
    output.table(f"{checkpoint}", ["field", "value"], rows)


def _short(v) -> str:
    s = str(v)
    return s if len(s) <= 200 else s[:197] + "..."
