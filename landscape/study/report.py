"""The report of a study file, without recomputing: a summary table (terminal and markdown) and
figures (each quantity across the checkpoints, every spectral density, every slice).

Writers only consume results: everything here reads the HDF5 file that
:func:`landscape.study.runner.run_study` writes (or its in-memory equivalent).
"""

from __future__ import annotations

import math
import re
from collections import ChainMap
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import LandscapeError
from ..metrics import Headline, MetricView, estimate_headline, number
from ..results import Table
from .runner import FORMAT


# ------------------------------------------------------------------------ reading
@dataclass
class StudyRecord:
    """A study file in memory: root ``attrs``, ``checkpoints`` (label -> identity attributes, in
    file order) and ``items`` (one dict per (checkpoint, item): label, name, kind, complete,
    error, seconds, settings, problem, result)."""

    path: Path
    attrs: dict
    checkpoints: dict[str, dict]
    items: list[dict] = field(default_factory=list)

    @property
    def names(self) -> list[str]:
        """Item names in order of first appearance."""
        return list(dict.fromkeys(it["name"] for it in self.items))

    def item(self, label: str, name: str) -> dict | None:
        return next((it for it in self.items if it["label"] == label and it["name"] == name), None)


def read_study(path: str | Path) -> StudyRecord:
    """Read a study file written by ``landscape batch`` (a one-line error for anything else)."""
    from ..io.hdf5 import read_tree

    path = Path(path)
    tree = read_tree(path)
    if tree.get("format") != FORMAT:
        raise LandscapeError(
            f"{path} is not a landscape study file (format {tree.get('format')!r})",
            "pass the output file of landscape batch",
        )
    checkpoints, items = {}, []
    order = _item_order(tree.get("study_text"))
    for label, g in (tree.get("checkpoints") or {}).items():
        if not isinstance(g, dict):
            continue
        ident = {k: v for k, v in g.items() if not isinstance(v, dict)}
        checkpoints[label] = ident
        names = [k for k, v in g.items() if isinstance(v, dict)]
        names.sort(key=lambda n: (order.get(n, math.inf), n))
        for name in names:
            it = g[name]
            items.append({"label": label, "name": name, "kind": it.get("kind"),
                          "complete": int(it.get("complete", 0)),
                          "error": it.get("error"), "seconds": it.get("seconds"),
                          "settings": it.get("settings") or {},
                          "problem": it.get("problem") or {}, "result": it.get("result")})
    attrs = {k: v for k, v in tree.items() if not isinstance(v, dict)}
    return StudyRecord(path, attrs, checkpoints, items)


def _item_order(text: Any) -> dict[str, int]:
    """Item names in the order of the study file's [metrics.*] / [slices.*] tables."""
    if not isinstance(text, str):
        return {}
    names = re.findall(r"^\s*\[\s*(?:metrics|slices)\.\s*\"?([A-Za-z0-9_.\-]+)\"?\s*\]", text,
                       flags=re.MULTILINE)
    return {n: i for i, n in enumerate(dict.fromkeys(names))}


# ------------------------------------------------------------------------ headline numbers
_f, _est = number, estimate_headline


def _fisher(r: dict) -> list[Headline]:
    m = r.get("matrices") or {}
    cos = (r.get("cosine") or {}).get("fisher~empirical_fisher")
    return [_est((m.get("fisher") or {}).get("trace"), "tr F"),
            _est((m.get("empirical_fisher") or {}).get("trace"), "tr F_emp"),
            _est(cos, "cos(F, F_emp)")]


def _noise(r: dict) -> list[Headline]:
    detail = r.get("nonuniformity_detail") or {}
    interval = np.asarray(detail.get("interval", [math.nan, math.nan]),
                          dtype=np.float64).reshape(-1)
    err = float((interval[-1] - interval[0]) / 2) if interval.size == 2 else math.nan
    return [("μ", _f(r.get("mu")), math.nan), ("s", _f(r.get("nonuniformity")), err)]


def _stability(r: dict) -> list[Headline]:
    v = r.get("verdicts") or {}
    gd, sgd = v.get("gd") or {}, v.get("sgd_nonuniformity") or {}
    return [("λ_max / (2/η)", _f(gd.get("ratio")), math.nan), ("s / bound", _f(sgd.get("ratio")),
                                                               math.nan)]


def _slice(r: dict) -> list[Headline]:
    values, origin = r.get("values") or {}, r.get("origin") or {}
    out = []
    if "train_loss" in values:
        z = np.asarray(values["train_loss"], dtype=np.float64)
        at0 = _f(origin.get("train_loss"))
        out.append(("train loss at θ", at0, math.nan))
        fin = z[np.isfinite(z)]
        out.append(("max Δ train loss", float(fin.max() - at0) if fin.size else math.nan, math.nan))
    return out


#: The numbers of each kind shown in the summary table and the overview figure.
#: (the metrics of :data:`landscape.metrics.METRICS` declare theirs)
HEADLINES: ChainMap[str, Callable[[dict], list[Headline]]] = ChainMap({
    "fisher": _fisher,
    "noise": _noise,
    "stability": _stability,
    "slice": _slice,
}, MetricView(lambda name, metric: metric.headlines))


def block_headlines(result: dict) -> list[Headline]:
    """A per-layer item's headlines: for λ_max and tr(H), the largest block's value, the ratio
    of the largest to the smallest block and the coefficient of variation across blocks."""
    out = []
    for key, label in (("lambda_max", "λ_max"), ("trace", "tr(H)")):
        sp = (result.get("blocks") or {}).get(key)
        if sp:
            out += [(f"{label} largest block", number(sp.get("max")), math.nan),
                    (f"{label} max/min block", number(sp.get("ratio")), math.nan),
                    (f"{label} block CV", number(sp.get("cv")), math.nan)]
    return out


def block_rows(items: list[dict]) -> list[tuple[str, str, str, str]]:
    """``(block, params, λ_max, tr(H))`` from the per-layer items of one checkpoint, a row per
    block in the stored order (an eig item gives λ_max, a trace item tr(H))."""
    rows: dict[str, list[str]] = {}
    for item in items:
        for block, rec in (item["result"].get("layers") or {}).items():
            row = rows.setdefault(block, [block, str(int(number(rec.get("params")))), "", ""])
            m = rec.get("metrics") or {}
            eig, tr = m.get("eigenvalues") or {}, m.get("trace") or {}
            if eig and eig.get("which", "top") in ("top", "both"):
                row[2] = fmt(number(eig.get("values")), number(eig.get("residuals")),
                             residual=True)
            if tr:
                row[3] = fmt(number(tr.get("estimate")), number(tr.get("stderr")))
    return [tuple(r) for r in rows.values()]


def headlines(item: dict) -> list[Headline]:
    """The headline numbers of one stored item ([] if it failed or its kind is unknown)."""
    if not item.get("complete") or not isinstance(item.get("result"), dict):
        return []
    if "layers" in item["result"]:
        return block_headlines(item["result"])
    fn = HEADLINES.get(item.get("kind"))
    try:
        return fn(item["result"]) if fn else []
    except (KeyError, TypeError, ValueError):
        return []


#: headline quantities whose error is a Lanczos residual bound, not a standard error
RESIDUALS = ("λ_max", "λ_min")


def fmt(value: float, err: float = math.nan, residual: bool = False) -> str:
    """``value ± err`` with 4 significant digits (the error only when finite and positive); an
    eigenvalue's residual is written as one, ``value (residual err)``."""
    if not math.isfinite(value):
        return "nan" if math.isnan(value) else str(value)
    if not (math.isfinite(err) and err > 0):
        return f"{value:.4g}"
    return f"{value:.4g} (residual {err:.2g})" if residual else f"{value:.4g} ± {err:.2g}"


# ------------------------------------------------------------------------ tables
def summary_rows(record: StudyRecord) -> list[tuple[str, str, str, str, str, str]]:
    """``(checkpoint, item, kind, status, values, seconds)`` per stored item; values are the
    headline numbers ``quantity = value ± error`` (the error is the message for a failure)."""
    rows = []
    for it in record.items:
        status = "ok" if it["complete"] else "FAILED"
        text = ("; ".join(f"{q} = {fmt(v, e, q in RESIDUALS)}" for q, v,
                          e in headlines(it)) if it["complete"]
                else (it["error"] or "incomplete"))
        secs = it.get("seconds")
        rows.append((display(it["label"]), it["name"], str(it["kind"]), status, text,
                     f"{float(secs):.2f}" if isinstance(secs, (int, float)) else "-"))
    return rows


def wide_table(record: StudyRecord) -> tuple[list[str], list[list[str]]]:
    """One row per checkpoint, one column per ``item: quantity`` (``FAILED`` where the item failed
    on that checkpoint, ``-`` where it was not computed)."""
    columns: dict[str, list[str]] = {}  # item name -> its column names
    cells: dict[tuple[str, str], str] = {}
    failed: set[tuple[str, str]] = set()
    for it in record.items:
        cols = columns.setdefault(it["name"], [])
        if not it["complete"]:
            failed.add((it["label"], it["name"]))
            continue
        for q, v, e in headlines(it):
            col = f"{it['name']}: {q}"
            if col not in cols:
                cols.append(col)
            cells[(it["label"], col)] = fmt(v, e, q in RESIDUALS)
    flat = [(name, col) for name, cols in columns.items() for col in (cols or [name])]
    rows = []
    for label in record.checkpoints:
        rows.append([display(label)] + ["FAILED" if (label, name) in failed else cells.get((label,
            col), "-")
                                         for name, col in flat])
    return ["checkpoint"] + [col for _, col in flat], rows


def display(label: str) -> str:
    """A checkpoint label as a path (``|`` back to ``/``)."""
    return label.replace("|", "/")


def _md_table(columns: list[str], rows: list) -> str:
    esc = lambda s: str(s).replace("|", "\\|")
    lines = ["| " + " | ".join(esc(c) for c in columns) + " |",
             "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(esc(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def summary_markdown(record: StudyRecord, figures: list[Path] | None = None,
                     relative_to: Path | None = None) -> str:
    """The markdown report: the values table (checkpoints x quantities), every item with its
    status and time, the failures, and the figures."""
    ok = sum(it["complete"] for it in record.items)
    failed = len(record.items) - ok
    title = Path(str(record.attrs.get("study") or record.path)).stem
    parts = [
        f"# Study `{title}`",
        "",
        f"File `{record.path}`, updated {record.attrs.get('updated', '?')}: "
        f"{len(record.checkpoints)} "
        f"checkpoint(s), {len(record.names)} metric(s)/slice(s), {ok} item(s) complete"
        + (f", {failed} failed" if failed else "")
        + ".",
        "",
        "## Values",
        "",
    ]
    cols, rows = wide_table(record)
    note = ("Errors after ± are standard errors; an eigenvalue's is its Lanczos residual, "
            "written as such.")
    parts += [_md_table(cols, rows), "", note, "", "## Items", ""]
    parts += [_md_table(["checkpoint", "item", "kind", "status", "values", "seconds"],
                        summary_rows(record))]
    blocks = [it for it in record.items if it["complete"] and "layers" in (it["result"] or {})]
    if blocks:
        parts += ["", "## Blocks", "", ("The metrics on each diagonal block of the Hessian "
                  "(per_layer = true); their spread across blocks (largest block, max/min ratio, "
                  "coefficient of variation) is in the values above.")]
        for label in dict.fromkeys(it["label"] for it in blocks):
            mine = [it for it in blocks if it["label"] == label]
            parts += ["", f"### `{display(label)}`", "",
                      _md_table(["block", "params", "λ_max", "tr(H)"], block_rows(mine))]
    fails = [it for it in record.items if not it["complete"]]
    if fails:
        parts += ["", "## Failures", ""] + [
            f"- `{display(it['label'])}` / `{it['name']}`: {it['error']}" for it in fails
        ]
    if figures:
        parts += ["", "## Figures", ""]
        for p in figures:
            rel = (
                Path(p).relative_to(relative_to)
                if relative_to and Path(p).is_relative_to(relative_to)
                else Path(p)
            )
            parts.append(f"![{rel.stem}]({rel.as_posix()})")
    return "\n".join(parts) + "\n"


# ------------------------------------------------------------------------ figures
def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.\-]+", "_", name.replace("|", "__")).strip("_") or "item"


def _series(record: StudyRecord) -> dict[tuple[str, str], list[tuple[str, float, float]]]:
    """``{(item, quantity): [(checkpoint label, value, error), ...]}`` in checkpoint order."""
    out: dict[tuple[str, str], list] = {}
    for it in record.items:
        for q, v, e in headlines(it):
            out.setdefault((it["name"], q), []).append((it["label"], v, e))
    return out


def overview_figure(record: StudyRecord):
    """One panel per headline quantity across the checkpoints: against the training step (one
    line per run directory) when every checkpoint comes from a run directory, records its step,
    and each run spans several steps; else one point per checkpoint against its label (files of
    a glob are unrelated: a line through them would draw a trajectory that never was)."""
    from ..io.figures import plt

    series = _series(record)
    if not series:
        return None
    n = len(series)
    cols = min(3, n)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.6 * cols, 3.4 * rows), squeeze=False)
    ck = record.checkpoints
    sources: dict[str, list[str]] = {}
    for label, ident in ck.items():
        sources.setdefault(str(ident.get("source", "")), []).append(label)

    def step(label: str) -> float:
        return _f(ck.get(label, {}).get("step"))

    def is_run(src: str, labels: list[str]) -> bool:
        """A run directory's checkpoints form one trajectory; a glob's files are unrelated."""
        return all(str(Path(str(ck.get(lb, {}).get("path",
                                                   ""))).parent) == str(Path(src)) for lb in labels)

    by_step = all(is_run(src, labels) and np.isfinite([step(lb) for lb in labels]).all()
                  and len({step(lb) for lb in labels}) > 1 for src, labels in sources.items())
    for ax, ((name, q), pts) in zip(axes.reshape(-1), series.items()):
        if by_step:
            for src, labels in sources.items():
                sel = sorted((step(lb), v, e) for lb, v, e in pts if lb in labels)
                if not sel:
                    continue
                x, y, e = (np.array(c, dtype=np.float64) for c in zip(*sel))
                ax.errorbar(x, y, yerr=np.where(np.isfinite(e), e, 0.0), marker="o", ms=3,
                            capsize=2,
                            label=Path(src).name or src)
            ax.set_xlabel("training step")
            if len(sources) > 1:
                ax.legend(fontsize=7)
        else:
            x = np.arange(len(pts))
            y = np.array([v for _, v, _ in pts])
            e = np.array([err for _, _, err in pts])
            ax.errorbar(x, y, yerr=np.where(np.isfinite(e), e, 0.0), fmt="o", capsize=3)
            ax.set_xticks(x)
            ax.set_xticklabels([display(lb) for lb, _, _ in pts], rotation=30, ha="right",
                               fontsize=7)
        ax.set_title(f"{name}: {q}", fontsize=9)
        ax.grid(alpha=0.3)
    for ax in axes.reshape(-1)[n:]:
        ax.set_visible(False)
    fig.suptitle(
        f"{Path(str(record.attrs.get('study') or record.path)).stem}: values across checkpoints",
        fontsize=10,
    )
    fig.tight_layout()
    return fig


def write_figures(record: StudyRecord, folder: str | Path, fmt: str = "png") -> list[Path]:
    """Write the overview figure, one figure per spectral density and one per slice into
    ``folder`` (``summary.FMT``, ``LABEL__ITEM.FMT``); returns the files written. A figure that
    cannot be drawn (a failed item) is skipped."""
    from .. import distributed
    from ..io.figures import density_figure, save
    from ..io.slice_figures import slice_figure

    folder = Path(folder)
    if not distributed.is_main():
        return []
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    fig = overview_figure(record)
    if fig is not None:
        written.append(save(fig, folder / f"summary.{fmt}"))
    for it in record.items:
        r = it.get("result")
        if not it["complete"] or not isinstance(r, dict):
            continue
        target = folder / f"{_safe(it['label'])}__{_safe(it['name'])}.{fmt}"
        try:
            if it["kind"] == "density":
                fig = density_figure(r, title=f"Hessian spectral density: {display(it['label'])}")
            elif it["kind"] == "slice":
                fig = slice_figure(r, "auto")
            else:
                continue
        except (LandscapeError, KeyError, ValueError, TypeError):
            continue
        written.append(save(fig, target))
    return written


def write_report(
    path: str | Path, out: str | Path, fmt: str = "png"
) -> tuple[StudyRecord, list[Path]]:
    """``out/summary.md`` and the figures of the study file ``path``; returns the record and the
    files written (markdown first)."""
    from ..io.atomic import atomic_path

    record = read_study(path)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise LandscapeError(f"--out {out} is a file", "pass a folder for the report")
    figures = write_figures(record, out, fmt)
    md = out / "summary.md"
    with atomic_path(md) as tmp:
        tmp.write_text(summary_markdown(record, figures, relative_to=out), encoding="utf-8")
    return record, [md] + figures


def record_to_dict(record: StudyRecord) -> dict:
    """JSON-ready: the checkpoints and, per item, status, time, error and headline numbers."""
    return {"file": str(record.path), "updated": record.attrs.get("updated"),
            "checkpoints": record.checkpoints,
            "items": [{"checkpoint": it["label"], "name": it["name"], "kind": it["kind"],
                       "complete": bool(it["complete"]), "error": it["error"],
                       "seconds": it["seconds"],
                       "values": {q: {"value": v, "error": e} for q, v, e in headlines(it)}}
                      for it in record.items]}


def plan_report(study: Any, plan: list) -> dict:
    """``landscape batch --check --json``: the counts and every (checkpoint, item)'s action."""
    todo = sum(p.action == "compute" for p in plan)
    keys = ("checkpoint", "name", "kind", "action", "reason")
    return {"study": str(study.path), "output": str(study.output),
            "figures": None if study.figures is None else str(study.figures),
            "compute": todo, "skip": len(plan) - todo,
            "items": [dict(zip(keys, r)) for r in plan_table(study, plan).rows]}


def plan_table(study: Any, plan: list) -> Table:
    """What ``landscape batch --check`` shows: each (checkpoint, item), and whether it will be
    computed or skipped, and why."""
    rows = [(display(p.ref.label), p.item.name, p.item.kind, p.action, p.reason) for p in plan]
    todo = sum(p.action == "compute" for p in plan)
    return Table(f"Plan of {study.path}", ["checkpoint", "item", "kind", "action", "reason"], rows,
                 f"{len(study.checkpoints)} checkpoint(s) x {len(study.items)} item(s): {todo} to "
                 f"compute, {len(plan) - todo} complete; output {study.output}")


def outcome_table(study: Any, record: StudyRecord, plan: list, result: Any,
                  seconds: float) -> Table:
    """The items of ``plan`` after a run: status (computed, skipped, failed), headline values,
    time."""
    wanted = {(display(p.ref.label), p.item.name) for p in plan}
    status = {(display(o.label), o.name): o.status for o in result.outcomes}
    rows = [(r[0], r[1], status.get((r[0], r[1]), r[3]) if r[3] == "ok" else r[3], r[4], r[5])
            for r in summary_rows(record) if (r[0], r[1]) in wanted]
    return Table(f"Study {study.name}", ["checkpoint", "item", "status", "values", "seconds"],
                 rows, f"{result.count('computed')} computed, {result.count('skipped')} skipped "
                       f"(complete), {result.count('failed')} failed; {seconds:.1f} s")


__all__ = [
    "HEADLINES",
    "StudyRecord",
    "block_headlines",
    "block_rows",
    "display",
    "headlines",
    "outcome_table",
    "overview_figure",
    "plan_report",
    "plan_table",
    "read_study",
    "record_to_dict",
    "summary_markdown",
    "summary_rows",
    "wide_table",
    "write_figures",
    "write_report",
]
