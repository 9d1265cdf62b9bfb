"""``landscape doctor``: checks that explain a strange landscape, each with a verdict and a
fix (:mod:`landscape.doctor`)."""

from __future__ import annotations

import dataclasses

from . import output
from .common import Outputs, ProblemSpec, Stopwatch, header, measuring
from .options import CheckpointArg, path_option


@measuring(None)
def doctor(
    checkpoint: CheckpointArg,
    slice_file: path_option("--slice", "Also check this slice file (landscape slice --out) "
                                       "of the checkpoint: its values, normalisation, range."
                            ) = None,
    spec: ProblemSpec = None,
    io: Outputs = None,
) -> None:
    """Checks that explain a strange loss landscape: data, dropout, BatchNorm statistics,
    precision, distance from a minimum, scale invariance, and a slice's range."""
    from ..doctor import diagnose
    from ..errors import LandscapeError

    clock = Stopwatch()
    if slice_file is not None and not slice_file.is_file():
        raise LandscapeError(f"no such slice file: {slice_file}", "check the --slice path")
    output.check_writable(io.out)
    # the data check is the doctor's own: load random data too, and say so as a finding
    ckpt, problem = dataclasses.replace(spec, allow_random_data=True).load(checkpoint)
    findings = diagnose(problem, slice_file, seed=spec.seed)
    report = {**header(ckpt, problem), "findings": [f.to_dict() for f in findings],
              "problems": sum(f.verdict in ("warn", "fail") for f in findings),
              "seconds": clock()}
    if io.out is not None:
        from ..io.hdf5 import write_tree

        write_tree(io.out, {"findings": {f.name + (f"-{i}" if f.name == "slice-range" else ""):
                                         f.to_dict() for i, f in enumerate(findings)}},
                   attrs={k: v for k, v in report.items() if k != "findings"})
    if io.json:
        output.emit_json(report)
        return
    output.table(f"Doctor: {checkpoint}", ["check", "verdict", "found", "fix"],
                 [(f.name, f.verdict, f.found, f.fix) for f in findings], text=True)
    n = report["problems"]
    output.info(f"{n} finding(s) to act on" if n else "nothing found that would distort the "
                "landscape")
    output.written(io.out)
