"""``landscape report``: the summary table (markdown) and figures of a study file, without
recomputing anything."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from . import output
from .options import DebugOpt, JsonOpt


@output.handle_errors
def report(
    study_file: Annotated[
        Path,
        typer.Argument(help="Study file (HDF5) written by landscape batch.", show_default=False),
    ],
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            help="Report folder: summary.md and the figures (default: STUDY-report beside the "
                 "file).",
        ),
    ] = None,
    fmt: Annotated[str, typer.Option("--format", help="Figure format: png, pdf or svg.")] = "png",
    json_: JsonOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Figures and a markdown summary table from a study file (nothing is recomputed)."""
    from ..errors import ConfigError
    from ..study.report import record_to_dict, summary_rows, write_report

    if fmt not in ("png", "pdf", "svg"):
        raise ConfigError(f"unknown --format {fmt!r}", "choose png, pdf or svg")
    out = out if out is not None else study_file.with_name(study_file.stem + "-report")
    record, written = write_report(study_file, out, fmt)
    if json_:
        output.emit_json({**record_to_dict(record), "report": str(out),
                          "files": [str(p) for p in written]})
        return
    rows = [(r[0], r[1], r[3], r[4], r[5]) for r in summary_rows(record)]
    output.table(f"Study {study_file}", ["checkpoint", "item", "status", "values", "seconds"], rows)
    output.info(f"wrote {written[0]} and {len(written) - 1} figure(s) to {out}")
