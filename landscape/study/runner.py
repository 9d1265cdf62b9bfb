"""Run a study: every metric and slice on every checkpoint, into one resumable HDF5 file.

File layout (``format = "landscape-study"``, version 1)::

    /                          attrs: format, version, landscape_version, study (the TOML path),
                               study_text (its contents), updated (UTC time)
    /checkpoints/LABEL/        attrs: path, sha256, model, data, loss, step (its identity)
    /checkpoints/LABEL/NAME/   attrs: kind, group (metrics | slices), settings, problem (JSON),
                               settings_hash, complete (1 | 0), error (when it failed), seconds,
                               computed_at, world_size, device, landscape_version
    /checkpoints/LABEL/NAME/result/   the result (as `landscape sharpness|fisher|noise|stability|
                               slice --out` would store it: datasets, subgroups, scalar attributes)

An item is *complete and valid* when ``complete == 1`` and its ``settings_hash`` (sha256 of the
kind, the resolved settings, the problem settings and the checkpoint file's sha256) matches the
study's; re-running skips exactly those, so an interrupted study resumes, a changed setting or a
re-trained checkpoint is recomputed, and ``force=True`` recomputes everything asked for.

Safe incremental writes: each finished item is appended as one group, to a copy of the file's
bytes beside it (a temporary name), which is then ``fsync``-ed and ``os.replace``-d onto the study
file. A crash at any moment leaves either the old or the new file, never a half-written one; the
cost of an item is one byte copy of the file (14 ms per item at 300 slice items, 9 MB), not a
re-encoding of the items before it (74 ms when it was). A recomputed item is deleted and written in
the same append, which reuses its bytes (about 4 kB of metadata per replacement is not reclaimed).

Under ``torchrun`` every rank runs every item (each on its shard of the data; the products are
all-reduced) and rank 0 alone reads the plan (broadcast to the others) and writes the file."""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections import ChainMap
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .. import distributed
from ..errors import ConfigError, LandscapeError
from ..metrics import MetricView
from .spec import CheckpointRef, Item, Study

FORMAT = "landscape-study"
VERSION = 1

Event = Callable[[dict], None]


# ------------------------------------------------------------------------ identities and hashes
def file_sha256(path: str | Path) -> str:
    """First 16 hex digits of the file's sha256 (as ``Checkpoint.sha256``)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


def settings_hash(item: Item, checkpoint_sha: str) -> str:
    """sha256 of what the item's result depends on: kind, settings, problem settings, checkpoint
    bytes and the file version (not the device, nor the number of processes: results agree up to
    rounding)."""
    key = {"version": VERSION, "checkpoint": checkpoint_sha, **item.key()}
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]


# ------------------------------------------------------------------------ reading the index
def read_index(path: Path) -> dict[tuple[str, str], dict]:
    """``{(label, name): {"complete", "settings_hash"}}`` of an existing study file ({} if none)."""
    import h5py

    if not path.exists():
        return {}
    try:
        with h5py.File(path, "r") as f:
            if f.attrs.get("format") != FORMAT:
                raise ConfigError(f"{path} exists and is not a landscape study file",
                                  "set [study] output to a new file, or remove that one")
            out = {}
            for label, g in f.get("checkpoints", {}).items():
                for name, it in g.items():
                    out[(label, name)] = {"complete": int(it.attrs.get("complete", 0)),
                                          "settings_hash": str(it.attrs.get("settings_hash", ""))}
            return out
    except OSError as e:
        raise ConfigError(f"{path} exists and is not a readable HDF5 file ({e})",
                          "set [study] output to a new file, or remove that one") from e


@dataclass(frozen=True)
class Planned:
    """One (checkpoint, item) pair and what to do with it: ``compute`` or ``skip``."""

    ref: CheckpointRef
    item: Item
    sha256: str
    settings_hash: str
    action: str
    reason: str


def plan_study(study: Study, force: bool = False) -> list[Planned]:
    """What a run would do: every checkpoint x item, ``skip`` where the file already holds it
    complete with the same settings hash (unless ``force``), else ``compute`` with the reason
    (``new``, ``incomplete``, ``failed before``, ``settings changed``, ``forced``). Under
    ``torchrun`` rank 0 reads the file and every rank receives its plan."""
    return _broadcast(_plan(study, force) if distributed.is_main() else None)


def _plan(study: Study, force: bool) -> list[Planned]:
    index = read_index(study.output)
    plan = []
    for ref in study.checkpoints:
        sha = file_sha256(ref.path)
        for item in study.items:
            h = settings_hash(item, sha)
            old = index.get((ref.label, item.name))
            if old is None:
                action, reason = "compute", "new"
            elif force:
                action, reason = "compute", "forced"
            elif old["settings_hash"] != h:
                action, reason = "compute", "settings or checkpoint changed"
            elif not old["complete"]:
                action, reason = "compute", "failed or incomplete before"
            else:
                action, reason = "skip", "complete"
            plan.append(Planned(ref, item, sha, h, action, reason))
    return plan


# ------------------------------------------------------------------------ computing one item
class Context:
    """One checkpoint's loaded state, shared by its items: the checkpoint, the problems (one per
    distinct problem setting and split) and their Hessian operators (whose stored gradient graphs
    are reused by every Hessian metric of the same problem)."""

    def __init__(self, ref: CheckpointRef, study: Study) -> None:
        from ..io.checkpoint import Checkpoint

        self.ref, self.study = ref, study
        self.ckpt = Checkpoint.load(ref.path, **study.load)
        self._problems: dict[str, Any] = {}
        self._ops: dict[str, Any] = {}

    def problem(self, settings: dict, split: str | None = None):
        from ..curvature.hessian import precision_check
        from ..problem import LOW_PRECISION, Problem  # noqa: F401 - the type built here

        s = {**settings, **({"split": split} if split else {})}
        key = json.dumps(s, sort_keys=True)
        if key not in self._problems:
            pb = self.ckpt.problem(split=s["split"], samples=s["samples"], seed=s.get("seed", 0),
                                   batch_size=s["batch_size"], params=s["params"],
                                   device=self.study.device,
                                   dtype=s["dtype"], train_mode=s["train_mode"],
                                   bn_batch=s.get("bn_batch"),
                                   memory=s.get("memory"),
                                   allow_random_data=s.get("allow_random_data", False))
            pb.loss_value()  # a diverged checkpoint fails here with one clear line
            if s.get("check_precision") and pb.dtype in LOW_PRECISION:
                pb.precision = precision_check(pb)
            self._problems[key] = pb
        return self._problems[key]

    def hessian(self, settings: dict):
        from ..curvature.hessian import Hessian

        key = json.dumps(settings, sort_keys=True)
        if key not in self._ops:
            self._ops[key] = Hessian(self.problem(settings))
        return self._ops[key]


def _problem_settings(item: Item) -> dict:
    """Problem settings with the subset seed (the item's seed, as the CLI's --seed)."""
    return {**item.problem, "seed": item.settings.get("seed", 0)}


def _hessian_metric(ctx: Context, item: Item) -> dict:
    """A metric of :data:`landscape.metrics.METRICS` on the Hessian."""
    from ..metrics import METRICS, Settings

    s = Settings.of({k: v for k, v in item.settings.items() if k != "per_layer"})
    op = ctx.hessian(_problem_settings(item))
    pb = op.problem
    head = {"metric": METRICS[item.kind].key, "params": pb.p, "samples": pb.n, **pb.point()}
    if item.settings.get("per_layer"):
        from ..metrics.run import blocks_report, measure_blocks

        return {**head, **blocks_report(*measure_blocks(pb, [item.kind], s))}
    return {**head, **METRICS[item.kind].compute(op, s).to_dict()}


def _fisher(ctx: Context, item: Item) -> dict:
    from ..metrics.fisher import fisher_report

    s = item.settings
    pb = ctx.problem(_problem_settings(item))
    out = fisher_report(pb, probes=s["probes"], mc_samples=s["mc_samples"], tol=s["tol"],
                        max_steps=s["max_steps"],
                        seed=s["seed"], chunk=s["chunk"])
    return {"params": pb.p, "samples": pb.n, **pb.point(), **out}


def _noise(ctx: Context, item: Item) -> dict:
    from ..metrics.stability import noise_report

    s = item.settings
    pb = ctx.problem(_problem_settings(item))
    out = noise_report(pb, s_samples=s["s_samples"], seed=s["seed"], tol=s["tol"],
                       max_steps=s["max_steps"],
                       chunk=s["chunk"], g_rtol=s["g_rtol"], memory=pb.budget.bytes // 2)
    return {"params": pb.p, "samples": pb.n, **pb.point(), **out}


def _stability(ctx: Context, item: Item) -> dict:
    from ..metrics.stability import stability_report

    s = item.settings
    lr = s["lr"] if s["lr"] is not None else ctx.ckpt.training.get("lr")
    batch = (
        s["sgd_batch_size"]
        if s["sgd_batch_size"] is not None
        else ctx.ckpt.training.get("batch_size")
    )
    if lr is None or batch is None:
        missing = " and ".join(k for k, v in (("lr", lr), ("sgd_batch_size", batch)) if v is None)
        raise ConfigError(
            f"the checkpoint records no {missing.replace('sgd_batch_size', 'batch size')}",
            f"set {missing} in [metrics.{item.name}]",
        )
    pb = ctx.problem(_problem_settings(item))
    out = stability_report(pb, float(lr), int(batch), probes=s["probes"], seed=s["seed"],
                           tol=s["tol"],
                           max_steps=s["max_steps"], s_samples=s["s_samples"], chunk=s["chunk"],
                           sufficient=s["sufficient"], sampling=s["sampling"])
    return {"params": pb.p, "samples": pb.n, **pb.point(), **out}


def _slice(ctx: Context, item: Item) -> dict:
    """A 1-D or 2-D slice as ``landscape slice`` computes it (train split, and test if asked)."""

    from ..io.checkpoint import report_header as header
    from ..slices import run_slice
    from ..slices.grid import has_batchnorm

    ps = _problem_settings(item)
    problems = {"train": ctx.problem(ps, "train")}
    if item.settings["test"] and ctx.ckpt.dataset().test is not None:
        problems["test"] = ctx.problem(ps, "test")
    train = problems["train"]
    s = dict(item.settings)
    if s["trajectory"] == "run":
        s["trajectory"] = str(ctx.ref.path.parent)
    s["recompute_bn"] = s["recompute_bn"] and has_batchnorm(train)
    run = run_slice(problems, s, seed=s["seed"], header=header(ctx.ckpt, train),
                    settings={"seed": s["seed"], "samples": ps["samples"],
                              "batch_size": ps["batch_size"], "params_regex": ps["params"],
                              "train_mode": ps["train_mode"]})
    return {**run.attrs, **run.tree}


#: How each kind of :data:`landscape.study.spec.KINDS` is computed:
#: ``compute(context, item) -> tree``.
COMPUTE: ChainMap[str, Callable[[Context, Item], dict]] = ChainMap({
    "fisher": _fisher,
    "noise": _noise,
    "stability": _stability,
    "slice": _slice,
}, MetricView(lambda name, metric: _hessian_metric))


# ------------------------------------------------------------------------ writing one item
def commit_item(path: Path, study: Study, label: str, checkpoint_attrs: dict, name: str,
                attrs: dict,
                result: dict | None) -> None:
    """Append (or replace) the group ``/checkpoints/label/name`` to the study file, atomically: the
    file's bytes are copied beside it, the group is appended to the copy, and the copy renamed onto
    the file (:func:`~landscape.io.atomic.atomic_path`). Rank 0 only."""
    import shutil

    import h5py

    from .. import __version__
    from ..io.atomic import atomic_path
    from ..io.hdf5 import attr_value, write_group

    if not distributed.is_main():
        return
    try:
        with atomic_path(path) as tmp:
            if path.exists():
                shutil.copyfile(path, tmp)
            with h5py.File(tmp, "a") as f:
                root = {"format": FORMAT, "version": VERSION, "landscape_version": __version__,
                        "study": str(study.path), "study_text": study.text,
                        "updated": datetime.now(timezone.utc).isoformat(timespec="seconds")}
                for k, v in root.items():
                    f.attrs[k] = attr_value(v)
                cg = f.require_group("checkpoints").require_group(label)
                for k, v in checkpoint_attrs.items():
                    cg.attrs[k] = attr_value(v)
                if name in cg:  # a recomputed item: its bytes are reused by the new one
                    del cg[name]
                ig = cg.create_group(name)
                for k, v in attrs.items():
                    ig.attrs[k] = attr_value(v)
                if result is not None:
                    write_group(ig.create_group("result"), result)
    except OSError as e:
        raise LandscapeError(f"cannot write {path}: {e.strerror or e}",
                             "check the folder is writable") from e


# ------------------------------------------------------------------------ the run
@dataclass
class ItemOutcome:
    """What happened to one (checkpoint, item): ``status`` computed | skipped | failed."""

    label: str
    name: str
    kind: str
    status: str
    reason: str = ""
    seconds: float = 0.0
    error: str | None = None

    def to_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class StudyResult:
    """A run's outcomes, the study file written and the time it took."""

    output: Path
    outcomes: list[ItemOutcome] = field(default_factory=list)
    seconds: float = 0.0

    def count(self, status: str) -> int:
        return sum(o.status == status for o in self.outcomes)

    @property
    def failed(self) -> list[ItemOutcome]:
        return [o for o in self.outcomes if o.status == "failed"]

    def to_dict(self) -> dict:
        return {"output": str(self.output), "seconds": self.seconds,
                "computed": self.count("computed"), "skipped": self.count("skipped"),
                "failed": self.count("failed"),
                "items": [o.to_dict() for o in self.outcomes]}


def _message(e: BaseException) -> str:
    if isinstance(e, LandscapeError):
        return e.message if not e.hint else f"{e.message}; {e.hint}"
    first = str(e).splitlines()[0] if str(e) else ""
    return f"internal error: {type(e).__name__}: {first}".rstrip(": ")


def _identity(ctx: Context | None, ref: CheckpointRef, sha: str) -> dict:
    base = {"path": str(ref.path), "sha256": sha, "label": ref.label, "source": ref.source}
    if ctx is None:
        return base
    ident = ctx.ckpt.identity()
    return {**ident, **base}


def _broadcast(obj: Any) -> Any:
    """Rank 0's ``obj`` on every rank (identity in a single process)."""
    if not distributed.active():
        return obj
    import torch.distributed as dist

    box = [obj if distributed.is_main() else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def run_study(study: Study, *, force: bool = False, on_event: Event | None = None,
              debug: bool = False,
              plan: list[Planned] | None = None) -> StudyResult:
    """Compute every item of ``study`` that its file does not already hold complete and valid.

    Items run checkpoint by checkpoint (each checkpoint loaded once; Hessian metrics of the same
    problem share one operator). Each finished item is committed to the file at once
    (:func:`commit_item`), so an interruption loses at most the item in progress. A failing item
    (a :class:`LandscapeError`, or any other exception unless ``debug``) is recorded with
    ``complete = 0`` and its error, and the rest go on; a failed checkpoint load fails its items.
    ``on_event(dict)`` receives ``{"event": "start" | "done", "index", "total", "label", "name",
    "kind", "status", "seconds", "error"}``.
    """
    t0 = time.perf_counter()
    plan = plan if plan is not None else plan_study(study, force)
    result = StudyResult(study.output)
    todo = [p for p in plan if p.action == "compute"]
    total = len(todo)
    done = 0
    emit = on_event or (lambda e: None)
    for p in plan:
        if p.action == "skip":
            result.outcomes.append(ItemOutcome(p.ref.label, p.item.name, p.item.kind, "skipped",
                                               p.reason))
    world = distributed.world_size()
    for ref in study.checkpoints:
        mine = [p for p in todo if p.ref.label == ref.label]
        if not mine:
            continue
        ctx: Context | None = None
        load_error: BaseException | None = None
        try:
            ctx = Context(ref, study)
        except (LandscapeError, Exception) as e:
            if debug and not isinstance(e, LandscapeError):
                raise
            load_error = e
        ident = _identity(ctx, ref, mine[0].sha256)
        for p in mine:
            done += 1
            item = p.item
            emit({"event": "start", "index": done, "total": total, "label": ref.label,
                  "name": item.name,
                  "kind": item.kind})
            t = time.perf_counter()
            tree, error = None, None
            if load_error is not None:
                error = _message(load_error)
            else:
                try:
                    tree = COMPUTE[item.kind](ctx, item)
                except LandscapeError as e:
                    error = _message(e)
                except Exception as e:
                    if debug:
                        raise
                    from ..memory import is_out_of_memory

                    error = (
                        "out of memory; set [problem] memory below what the device has free, or "
                        "samples"
                        if is_out_of_memory(e)
                        else _message(e)
                    )
            seconds = round(time.perf_counter() - t, 4)
            attrs = {"kind": item.kind, "group": item.group, "settings": item.settings,
                     "problem": item.problem,
                     "settings_hash": p.settings_hash, "complete": 0 if error else 1,
                     "seconds": seconds,
                     "computed_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                     "world_size": world, "device": study.device}
            if error:
                attrs["error"] = error
            commit_item(study.output, study, ref.label, ident, item.name, attrs, tree)
            status = "failed" if error else "computed"
            result.outcomes.append(ItemOutcome(ref.label, item.name, item.kind, status, p.reason,
                                               seconds, error))
            emit({"event": "done", "index": done, "total": total, "label": ref.label,
                  "name": item.name,
                  "kind": item.kind, "status": status, "seconds": seconds, "error": error})
        del ctx
    order = {(r.label, i.name): k for k, (r, i) in enumerate((r,
        i) for r in study.checkpoints for i in study.items)}
    result.outcomes.sort(key=lambda o: order.get((o.label, o.name), math.inf))
    result.seconds = round(time.perf_counter() - t0, 4)
    return result


__all__ = [
    "COMPUTE",
    "FORMAT",
    "VERSION",
    "Context",
    "ItemOutcome",
    "Planned",
    "StudyResult",
    "commit_item",
    "file_sha256",
    "plan_study",
    "read_index",
    "run_study",
    "settings_hash",
]
