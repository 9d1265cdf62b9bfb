"""``landscape batch``: a study file's checkpoints x metrics and slices into one resumable HDF5
file and a folder of figures (see :mod:`landscape.study`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from . import output
from .options import DebugOpt, JsonOpt, names_option


@output.handle_errors
def batch(
    study: Annotated[
        Path,
        typer.Argument(
            help="Study file (TOML): checkpoints, metrics and slices, outputs (see "
                 "examples/study.toml).",
            show_default=False,
        ),
    ],
    force: Annotated[
        bool,
        typer.Option(
            "--force", help="Recompute every item, even those already complete in the study file."
        ),
    ] = False,
    only: names_option("--only", "Run only these metrics/slices (names of the study's tables)")
    = None,
    check: Annotated[
        bool,
        typer.Option(
            "--check",
            help="Check the study file and show what would be computed or skipped; compute "
                 "nothing.",
        ),
    ] = False,
    figures: Annotated[
        bool, typer.Option("--figures/--no-figures", help="Draw the figures folder at the end.")
    ] = True,
    device: Annotated[
        str | None,
        typer.Option(
            "--device",
            help="cpu, cuda, cuda:1, ... (overrides the study file's device; under torchrun pass "
                 "--device cuda here).",
        ),
    ] = None,
    json_: JsonOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Compute a study: every metric and slice on every checkpoint, skipping what is already
    done."""
    from ..problem import resolve_device
    from ..study import parse_study, plan_study, run_study
    from ..study.report import read_study, summary_rows, write_figures
    from ..study.runner import _broadcast
    from .common import Stopwatch, join

    clock = Stopwatch()
    spec = parse_study(study).select(only)
    if device is not None:
        spec.device = device
    resolve_device(spec.device)  # a missing GPU fails before anything runs
    join(spec.device)
    from .. import distributed

    plan = _broadcast(plan_study(spec, force) if distributed.is_main() else None)
    todo = sum(p.action == "compute" for p in plan)
    if check:
        rows = [(p.ref.label.replace("|", "/"), p.item.name, p.item.kind, p.action,
                 p.reason) for p in plan]
        if json_:
            output.emit_json({"study": str(spec.path), "output": str(spec.output),
                              "figures": None if spec.figures is None else str(spec.figures),
                              "compute": todo, "skip": len(plan) - todo,
                              "items": [dict(zip(("checkpoint", "name", "kind", "action", "reason"),
                                                 r)) for r in rows]})
            return
        caption = (f"{len(spec.checkpoints)} checkpoint(s) x {len(spec.items)} item(s): {todo} "
                   f"to compute, {len(plan) - todo} complete; output {spec.output}")
        columns = ["checkpoint", "item", "kind", "action", "reason"]
        output.table(f"Plan of {spec.path}", columns, rows, caption=caption)
        return
    output.info(
        f"{spec.path}: {len(spec.checkpoints)} checkpoint(s) x {len(spec.items)} item(s): {todo} "
        "to compute, "
        f"{len(plan) - todo} already complete -> {spec.output}"
    )

    def on_event(e: dict) -> None:
        if e["event"] != "done":
            return
        label = e["label"].replace("|", "/")
        if e["status"] == "failed":
            output.info(f"[{e['index']}/{e['total']}] {label} · {e['name']}: failed: {e['error']}")
        else:
            output.info(
                f"[{e['index']}/{e['total']}] {label} · {e['name']}: done in {e['seconds']:.2f} s"
            )

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
        from ..study.report import display

        wanted = {(display(p.ref.label), p.item.name) for p in plan}
        status = {(display(o.label), o.name): o.status for o in result.outcomes}
        rows = [(r[0], r[1], status.get((r[0], r[1]), r[3]) if r[3] == "ok" else r[3], r[4], r[5])
                for r in summary_rows(record) if (r[0], r[1]) in wanted]
        caption = (f"{result.count('computed')} computed, {result.count('skipped')} skipped "
                   f"(complete), {failed} failed; {clock():.1f} s")
        columns = ["checkpoint", "item", "status", "values", "seconds"]
        output.table(f"Study {spec.name}", columns, rows, caption=caption)
        output.info(f"wrote {spec.output}")
        if written:
            output.info(f"wrote {len(written)} figure(s) to {spec.figures}")
    if failed:
        output.warn(
            f"{failed} item(s) failed; fix them and run the study again (complete items are kept)"
        )
        raise typer.Exit(1)
