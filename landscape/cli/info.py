"""``landscape info``: what a checkpoint holds (model, data, loss, training record, parameters)."""

from __future__ import annotations

from ..io.checkpoint import Checkpoint
from . import output
from .options import CheckpointArg, DataOpt, DebugOpt, JsonOpt, LossOpt, ModelOpt


@output.handle_errors
def info(
    checkpoint: CheckpointArg,
    model: ModelOpt = None,
    data: DataOpt = None,
    loss: LossOpt = None,
    json_: JsonOpt = False,
    debug: DebugOpt = False,
) -> None:
    """What a checkpoint holds: model, data, loss, training record and parameter shapes."""
    ckpt = Checkpoint.load(checkpoint, model=model, data=data, loss=loss)
    desc = ckpt.describe()
    if json_:
        output.emit_json(desc)
        return
    rows = []
    for key, value in desc.items():
        if isinstance(value, dict):
            for k, v in value.items():
                rows.append((f"{key}.{k}", _short(v)))
        else:
            rows.append((key, _short(value)))
    output.table(f"{checkpoint}", ["field", "value"], rows)


def _short(v) -> str:
    s = str(v)
    return s if len(s) <= 200 else s[:197] + "..."
