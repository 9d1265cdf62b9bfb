"""``landscape batch``: a study file's checkpoints x metrics and slices into one resumable HDF5
file and a folder of figures (see :mod:`landscape.study`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from . import output
from .options import DebugOpt, JsonOpt, names_option, switch


@output.handle_errors
def batch(
    study: Annotated[Path, typer.Argument(help="Study file (TOML): checkpoints, metrics and "
                                          "slices, outputs (see examples/study.toml).",
                                          show_default=False)],
    force: switch("--force", "Recompute every item, even those already complete in the study "
                             "file.") = False,
    only: names_option("--only", "Run only these metrics/slices (names of the study's tables)")
    = None,
    check: switch("--check", "Check the study file and show what would be computed or skipped; "
                             "compute nothing.") = False,
    figures: switch("--figures/--no-figures", "Draw the figures folder at the end.") = True,
    device: Annotated[str | None, typer.Option("--device", help="cpu, cuda, cuda:1, ... "
                                               "(overrides the study file's device; under "
                                               "torchrun pass --device cuda here).")] = None,
    json_: JsonOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Compute a study: every metric and slice on every checkpoint, skipping what is already
    done."""
    from .. import distributed
    from ..problem import resolve_device
    from ..study import parse_study, plan_study, run_study
    from ..study.report import outcome_table, plan_report, plan_table, read_study, write_figures
    from .common import Stopwatch, join

    clock = Stopwatch()
    spec = parse_study(study).select(only)
    if device is not None:
        spec.device = device
    resolve_device(spec.device)  # a missing GPU fails before anything runs
    join(spec.device)
    plan = plan_study(spec, force)
    todo = sum(p.action == "compute" for p in plan)
    if check:
        if json_:
            output.emit_json(plan_report(spec, plan))
        else:
            output.table(*plan_table(spec, plan))
        return
    output.info(f"{spec.path}: {len(spec.checkpoints)} checkpoint(s) x {len(spec.items)} item(s): "
                f"{todo} to compute, {len(plan) - todo} already complete -> {spec.output}")

    def on_event(e: dict) -> None:
        if e["event"] == "done":
            done = (f"failed: {e['error']}" if e["status"] == "failed"
                    else f"done in {e['seconds']:.2f} s")
            output.info(f"[{e['index']}/{e['total']}] {e['label'].replace('|', '/')} · "
                        f"{e['name']}: {done}")

    result = run_study(spec, force=force, on_event=on_event, debug=debug, plan=plan)
    written: list[Path] = []
    record = None
    if distributed.is_main() and spec.output.exists():
        record = read_study(spec.output)
        if figures and spec.figures is not None:
            written = write_figures(record, spec.figures)
    failed = result.count("failed")
    if json_:
        from ..study.report import record_to_dict

        out = {"study": str(spec.path), **result.to_dict(), "figures": [str(p) for p in written],
               "seconds": clock()}
        if record is not None:
            out["results"] = record_to_dict(record)["items"]
        output.emit_json(out)
    elif record is not None:
        output.table(*outcome_table(spec, record, plan, result, clock()))
        output.info(f"wrote {spec.output}")
        if written:
            output.info(f"wrote {len(written)} figure(s) to {spec.figures}")
    if failed:
        output.warn(f"{failed} item(s) failed; fix them and run the study again (complete items "
                    "are kept)")
        raise typer.Exit(1)
