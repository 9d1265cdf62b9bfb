"""Batch studies: many checkpoints x many metrics and slices into one resumable HDF5 file.

``parse_study(path)`` reads and checks a TOML study file (:mod:`landscape.study.spec`);
``run_study(study)`` computes what is not yet complete and valid in its HDF5 file
(:mod:`landscape.study.runner`); ``read_study`` / ``write_report`` give the summary table and
the figures from that file without recomputing (:mod:`landscape.study.report`).
"""

from __future__ import annotations

from .report import (
           StudyRecord,
           read_study,
           summary_markdown,
           summary_rows,
           write_figures,
           write_report,
)
from .runner import COMPUTE, ItemOutcome, StudyResult, plan_study, run_study
from .spec import KINDS, CheckpointRef, Item, Study, parse_study

__all__ = [
           "COMPUTE",
           "KINDS",
           "CheckpointRef",
           "Item",
           "ItemOutcome",
           "Study",
           "StudyRecord",
           "StudyResult",
           "parse_study",
           "plan_study",
           "read_study",
           "run_study",
           "summary_markdown",
           "summary_rows",
           "write_figures",
           "write_report",
]
