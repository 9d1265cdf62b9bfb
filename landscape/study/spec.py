"""The study file: many checkpoints x many metrics and slices, described in TOML.

A study names its checkpoints (globs, run directories), the metrics and slices to compute on
each, and where the results go. Everything is checked BEFORE anything runs: an unknown key, a
glob matching no file, a missing run directory or a bad setting raises one
:class:`~landscape.errors.ConfigError` naming the file, the line and the key
(``study.toml:12: [metrics.trace] probes must be an integer >= 2, got 1``). ``tomllib`` gives no
line numbers, so :func:`key_lines` finds each key's line by scanning the text.

Format (every key optional except at least one checkpoint and one metric or slice; paths are
relative to the study file's folder)::

    [study]
    output = "study.h5"            # default: <study name>.h5 beside the study file
    figures = "study-figures"      # default: <study name>-figures; "" for none
    device = "cpu"                 # cpu, cuda, cuda:1 (overridden by `landscape batch --device`)
    seed = 0                       # default seed of every metric and slice

    [problem]                      # how each checkpoint becomes a Problem (defaults of every item)
    split = "train"                # train or test
    samples = 512                  # seeded subset (default: all samples)
    batch_size = 256               # samples per product batch (memory only; default: planned)
    dtype = "float32"              # float32 or float64
    params = "net\\.0"             # regular expression: parameters under study (default: all)
    train_mode = false             # BatchNorm batch statistics / dropout on
    model = "nets.py:build"        # foreign state_dicts only: model factory,
    data = "nets.py:data"          #   data factory,
    loss = "cross-entropy"         #   loss

    [checkpoints]
    files = ["../checkpoints/*.pt"]   # globs (``**`` recurses)
    runs = ["runs/*"]                 # run directories of `landscape train --out`
    run_checkpoints = "all"           # all (step-*.pt then final.pt) or final

    [metrics.trace]                # [metrics.NAME]; the kind is NAME unless `kind = ...` is given
    probes = 100
    [metrics.trace-hutchpp]
    kind = "trace"
    method = "hutchpp"
    [metrics.eig]
    top_k = 2
    samples = 256                  # any [problem] key except model/data/loss overrides it per item

    [slices.random-1d]             # [slices.NAME]: a loss slice (landscape slice)
    dims = 1
    points = 21

Metric kinds and their settings (the flags of the command of the same name) are in :data:`KINDS`."""

from __future__ import annotations

import glob as globmod
import json
import os
import re
from collections import ChainMap
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigError, LandscapeError
from ..metrics import MetricView, reports
from ..schema import Option, choice, coerce, describe, integer
from ..schema import names as schema_names
from ..settings import LOADING, PROBLEM
from ..slices.settings import SLICE, check_slice

try:  # Python >= 3.11
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - Python 3.10 with the tomli backport
    try:
        import tomli as tomllib  # type: ignore[no-redef]
    except ModuleNotFoundError:
        tomllib = None  # type: ignore[assignment]


# ------------------------------------------------------------------------ option schema
SEED = integer(0, help="seed of probes, subsets and directions (default [study].seed)")


@dataclass(frozen=True)
class KindSchema:
    """A metric or slice kind: its table (``metrics`` or ``slices``), settings and description."""

    group: str
    options: dict[str, Option]
    help: str
    check: Callable[[dict], list[tuple[str,
                                       str]]] | None = None  # cross-field checks: [(key, message)]


PER_LAYER = Option("bool", False, help="the metric on every diagonal block of the Hessian, with "
                                        "the blocks' spread (landscape sharpness --per-layer)")


def _metric_kind(name: str, metric) -> KindSchema:
    """The study kind of a registered metric: its declared settings, the seed and per_layer."""
    return KindSchema("metrics", {**metric.options, "seed": SEED, "per_layer": PER_LAYER},
                      f"{metric.help} (landscape sharpness -m {name})")


#: Metric and slice kinds: the settings of each (named as the flags of the matching command);
#: the metrics of :data:`landscape.metrics.METRICS` come first, as they declare themselves.
KINDS: ChainMap[str, KindSchema] = ChainMap(
    {
        "fisher": KindSchema(
            "metrics",
            {**reports.FISHER, "seed": SEED},
            "H, GGN, Fisher, empirical Fisher: trace, λ_max, ‖·‖_F, cosines (landscape fisher)",
        ),
        "noise": KindSchema(
            "metrics",
            {**reports.NOISE, "seed": SEED},
            "noise alignment α, β, μ and non-uniformity s (landscape noise)",
        ),
        "stability": KindSchema(
            "metrics",
            {**reports.STABILITY, "seed": SEED},
            "linear-stability verdicts for GD and SGD (landscape stability)",
        ),
        "slice": KindSchema("slices", {**SLICE, "seed": SEED},
                            "loss and accuracy on a 1-D or 2-D slice (landscape slice)",
                            check_slice),
    },
    MetricView(_metric_kind),
)

STUDY_KEYS = {"study", "problem", "checkpoints", "metrics", "slices"}
STUDY_OPTIONS = {"output": Option("str"), "figures": Option("text",
                                                            help='folder of figures ("": none)'),
                 "device": Option("str", "cpu"),
                 "seed": SEED,
                 "name": Option("str")}
CHECKPOINT_OPTIONS = {"files": Option("globs"), "runs": Option("globs"),
                      "run_checkpoints": choice("all", "final")}
_STEP = re.compile(r"step-(\d+)\.pt$")


# ------------------------------------------------------------------------ the parsed study
@dataclass(frozen=True)
class CheckpointRef:
    """A checkpoint of the study: its file, its stable label (the HDF5 group name) and where the
    study file named it (``source``: the glob or run directory; ``line``)."""

    path: Path
    label: str
    source: str
    line: int


@dataclass(frozen=True)
class Item:
    """A metric or slice of the study, computed on every checkpoint: ``name`` (the HDF5 group),
    ``kind`` (a key of :data:`KINDS`), ``settings`` (every setting resolved, defaults filled),
    ``problem`` (resolved problem settings), ``line`` (its table in the study file)."""

    name: str
    kind: str
    settings: dict
    problem: dict
    line: int

    @property
    def group(self) -> str:
        return KINDS[self.kind].group

    def key(self) -> dict:
        """What the result depends on (hashed, with the checkpoint's sha256, into
        ``settings_hash``)."""
        return {"kind": self.kind, "settings": self.settings, "problem": self.problem}


@dataclass
class Study:
    """A validated study: ``path`` (the TOML file), ``text`` (its contents), ``output`` (HDF5),
    ``figures`` (folder or None), ``device``, ``checkpoints``, ``items``, ``load`` (model/data/loss
    for foreign checkpoints)."""

    path: Path
    text: str
    name: str
    output: Path
    figures: Path | None
    device: str
    checkpoints: list[CheckpointRef]
    items: list[Item]
    load: dict = field(default_factory=dict)

    def select(self, only: list[str] | None) -> Study:
        """The same study with only the named items (``--only``)."""
        if not only:
            return self
        names = schema_names(only)
        unknown = [n for n in names if n not in {i.name for i in self.items}]
        if unknown:
            raise ConfigError(f"--only {unknown[0]!r} names no metric or slice of {self.path}",
                              f"choose from {', '.join(i.name for i in self.items)}")
        return Study(self.path, self.text, self.name, self.output, self.figures, self.device,
                     self.checkpoints,
                     [i for i in self.items if i.name in names], self.load)


# ------------------------------------------------------------------------ key lines
def _split_key(key: str) -> tuple[str, ...]:
    """``a."b.c".d`` -> ``("a", "b.c", "d")`` (bare and quoted TOML key parts)."""
    parts, buf, quote = [], "", None
    for ch in key.strip():
        if quote:
            if ch == quote:
                quote = None
            else:
                buf += ch
        elif ch in "\"'":
            quote = ch
        elif ch == ".":
            parts.append(buf.strip())
            buf = ""
        else:
            buf += ch
    parts.append(buf.strip())
    return tuple(parts)


def _strip_comment(line: str) -> str:
    """The line without its ``#`` comment (a ``#`` inside a string is kept)."""
    quote = None
    for i, ch in enumerate(line):
        if quote:
            if ch == quote:
                quote = None
        elif ch in "\"'":
            quote = ch
        elif ch == "#":
            return line[:i]
    return line


def _depth(text: str) -> int:
    """Open ``[`` / ``{`` minus closed ones outside strings."""
    d, quote = 0, None
    for ch in text:
        if quote:
            if ch == quote:
                quote = None
        elif ch in "\"'":
            quote = ch
        elif ch in "[{":
            d += 1
        elif ch in "]}":
            d -= 1
    return d


_HEADER = re.compile(r"^\s*(\[\[?)\s*(.+?)\s*\]\]?\s*$")
_KEYVAL = re.compile(
    r"^\s*((?:[A-Za-z0-9_\-]+|\"[^\"]*\"|'[^']*')(?:\s*\.\s*(?:[A-Za-z0-9_\-]+|\"[^\"]*\"|'[^']*'))*)\s*=(.*)$"
)


def key_lines(text: str) -> dict[tuple[str, ...], int]:
    """``{key path: line number}`` (1-based) of every table header and ``key = value`` in a TOML
    text: ``[metrics.trace]`` gives ``("metrics", "trace")``, ``probes = 3`` below it
    ``("metrics", "trace", "probes")``. Lines inside multi-line arrays, inline tables and strings
    are skipped (their keys resolve to the line of the key that opens them).

    >>> key_lines("[a]\\nx = [1,\\n 2]\\ny = 3\\n")[("a", "y")]
    4
    """
    out: dict[tuple[str, ...], int] = {}
    table: tuple[str, ...] = ()
    depth, in_string = 0, None
    arrays: dict[tuple[str, ...], int] = {}
    for no, raw in enumerate(text.splitlines(), start=1):
        if in_string:
            if in_string in raw:
                in_string = None
            continue
        line = _strip_comment(raw)
        if depth > 0:
            depth += _depth(line)
            continue
        m = _HEADER.match(line)
        if m and _depth(line) == 0:
            table = _split_key(m.group(2))
            if m.group(1) == "[[":
                arrays[table] = arrays.get(table, -1) + 1
                table = table + (str(arrays[table]),)
            out.setdefault(table, no)
            continue
        m = _KEYVAL.match(line)
        if m:
            out.setdefault(table + _split_key(m.group(1)), no)
            value = m.group(2)
            for q in ('"""', "'''"):
                if value.count(q) % 2 == 1:
                    in_string = q
            depth = max(0, _depth(value)) if not in_string else 0
    return out


class _Where:
    """Errors that name the study file and the line of a key."""

    def __init__(self, path: Path, text: str) -> None:
        self.path, self.lines = path, key_lines(text)

    def line(self, *key: str) -> int:
        """The line of ``key``; else of the first key below it (``[a.b]`` for ``a``); else of the
        nearest enclosing key; else 1."""
        for n in range(len(key), 0, -1):
            head = key[:n]
            if head in self.lines:
                return self.lines[head]
            below = [no for k, no in self.lines.items() if k[:n] == head]
            if below:
                return min(below)
        return 1

    def error(self, key: tuple[str, ...], message: str, hint: str = "") -> ConfigError:
        return ConfigError(f"{self.path}:{self.line(*key)}: {message}", hint)


def _table_name(key: tuple[str, ...]) -> str:
    return "[" + ".".join(key) + "]" if key else "the top level"


# ------------------------------------------------------------------------ value checks
def _suggest(key: str, known) -> str:
    import difflib

    close = difflib.get_close_matches(key, list(known), n=1)
    return f"did you mean {close[0]!r}? " if close else ""


def _check_table(where: _Where, key: tuple[str, ...], table: Any, options: dict[str, Option],
                 extra: tuple[str, ...] = ()) -> dict:
    """The table's values checked against ``options`` (unknown key or bad value: an error)."""
    if not isinstance(table, dict):
        raise where.error(key, f"{'.'.join(key)} must be a table", f"write it as [{'.'.join(key)}]")
    out = {}
    for k, v in table.items():
        if k in extra:
            continue
        if k not in options:
            raise where.error(
                key + (k,),
                f"unknown key {k!r} in {_table_name(key)}",
                f"{_suggest(k, options)}known keys: {', '.join(list(options) + list(extra))}",
            )
        ok, value = coerce(options[k], v)
        if not ok:
            raise where.error(
                key + (k,),
                f"{_table_name(key)} {k} must be {describe(options[k])}, got {json.dumps(v)}",
                f"fix {k} in {where.path}",
            )
        out[k] = value
    return out


# ------------------------------------------------------------------------ checkpoints
def _glob(base: Path, pattern: str) -> list[Path]:
    pat = os.path.expanduser(pattern)
    full = pat if os.path.isabs(pat) else str(base / pat)
    return sorted(Path(p) for p in globmod.glob(full, recursive=True))


def run_files(run: Path, which: str) -> list[Path]:
    """A run directory's checkpoints: ``step-XXXXXX.pt`` by step, then ``final.pt`` (``all``),
    or ``final.pt`` alone (``final``)."""
    final = [run / "final.pt"] if (run / "final.pt").is_file() else []
    if which == "final":
        return final
    steps = sorted((int(m.group(1)),
                    p) for p in run.glob("step-*.pt") if (m := _STEP.search(p.name)))
    return [p for _, p in steps] + final


def _label(path: Path, base: Path) -> str:
    """A stable group name: the path relative to the study folder, without ``../``, ``.pt``, with
    ``/`` as ``|`` (HDF5 names cannot hold ``/``)."""
    rel = Path(os.path.relpath(path.resolve(), base.resolve()))
    parts = [p for p in rel.parts if p not in ("..", ".")]
    if parts and parts[-1].endswith(".pt"):
        parts[-1] = parts[-1][:-3]
    return "|".join(parts) or path.stem


def _checkpoints(where: _Where, base: Path, table: dict) -> list[CheckpointRef]:
    spec = _check_table(where, ("checkpoints",), table, CHECKPOINT_OPTIONS)
    found: list[tuple[Path, str, int]] = []
    for i, pattern in enumerate(spec.get("files", [])):
        line = where.line("checkpoints", "files")
        files = [p for p in _glob(base, pattern) if p.is_file()]
        if not files:
            what = "matches no file" if globmod.has_magic(pattern) else "does not exist"
            raise where.error(("checkpoints", "files"),
                              f"checkpoint {pattern!r} {what} (relative to {base})",
                              "check the path in [checkpoints] files")
        found += [(p, pattern, line) for p in files]
    which = spec.get("run_checkpoints", "all")
    for pattern in spec.get("runs", []):
        line = where.line("checkpoints", "runs")
        dirs = [p for p in _glob(base, pattern) if p.is_dir()]
        if not dirs:
            raise where.error(
                ("checkpoints", "runs"),
                f"run directory {pattern!r} "
                f"{'matches no directory' if globmod.has_magic(pattern) else 'does not exist'} "
                f"(relative to {base})",
                "pass the --out directory of landscape train",
            )
        for d in dirs:
            files = run_files(d, which)
            if not files:
                raise where.error(
                    ("checkpoints", "runs"),
                    f"run directory {d} holds no "
                    f"{'final.pt' if which == 'final' else 'checkpoint (step-*.pt, final.pt)'}",
                    "train it to the end (or with --checkpoint-every), or drop it",
                )
            found += [(p, str(d), line) for p in files]
    if not found:
        raise where.error(("checkpoints",), "the study names no checkpoint",
                          'add [checkpoints] files = ["path/*.pt"] or runs = ["runs/*"]')
    refs, seen, labels = [], set(), {}
    for p, source, line in found:
        key = p.resolve()
        if key in seen:
            continue
        seen.add(key)
        label = _label(p, base)
        if label in labels:  # e.g. ../a/x.pt and a/x.pt: keep the ../ to tell them apart
            label = os.path.relpath(p.resolve(), base.resolve()).replace("/", "|")
        labels[label] = p
        refs.append(CheckpointRef(p, label, source, line))
    return refs


# ------------------------------------------------------------------------ items
def _items(where: _Where, base: Path, data: dict, problem: dict, seed: int) -> list[Item]:
    items = []
    names: dict[str, tuple[str, ...]] = {}
    for group in ("metrics", "slices"):
        tables = data.get(group, {})
        if not isinstance(tables, dict):
            raise where.error((group,), f"{group} must be a table of tables",
                              f"write [{group}.NAME] tables")
        for name, table in tables.items():
            key = (group, name)
            if not isinstance(table, dict):
                raise where.error(key, f"{group}.{name} must be a table",
                                  f"write [{group}.{name}] and its settings below it")
            if not re.fullmatch(r"[A-Za-z0-9_.\-]+", name):
                raise where.error(
                    key,
                    f"name {name!r} of {_table_name(key)} may hold only letters, digits, '_', "
                    "'-', '.'",
                    "rename the table",
                )
            if name in names:
                raise where.error(
                    key,
                    f"{name!r} is both [{names[name][0]}.{name}] and [{group}.{name}]",
                    "give every metric and slice its own name",
                )
            names[name] = key
            kind = table.get("kind", name if group == "metrics" else "slice")
            if kind not in KINDS or KINDS[kind].group != group:
                known = [k for k, s in KINDS.items() if s.group == group]
                where_key = key + (("kind",) if "kind" in table else ())
                raise where.error(where_key,
                                  f"unknown {group[:-1]} kind {kind!r} in {_table_name(key)}",
                                  f"{_suggest(str(kind), known)}kinds: {', '.join(known)} "
                                  f"(name the table after one, or set kind = \"...\")")
            schema = KINDS[kind]
            item_problem_opts = {k: v for k, v in PROBLEM.items() if k not in LOADING}
            options = {**schema.options, **item_problem_opts}
            given = _check_table(where, key, table, options, extra=("kind",))
            settings = {k: opt.default for k, opt in schema.options.items()}
            settings["seed"] = seed
            settings.update({k: v for k, v in given.items() if k in schema.options})
            if settings.get("per_layer") is False:  # the whole Hessian: recorded as before
                del settings["per_layer"]
            pb = {**problem, **{k: v for k, v in given.items() if k in item_problem_opts}}
            for k in ("trajectory",):
                if settings.get(k) and settings[k] != "run":
                    settings[k] = _existing(where, key + (k,), base, settings[k], directory=True)
            if settings.get("toward"):
                settings["toward"] = [_existing(where, key + ("toward",), base, p, directory=False)
                                      for p in settings["toward"]]
            if schema.check:
                for bad_key, message in schema.check({**settings, **pb}):
                    raise where.error(key + (bad_key,), f"{_table_name(key)}: {message}",
                                      f"fix {bad_key} in {where.path}")
            items.append(Item(name, kind, settings, pb, where.line(*key)))
    if not items:
        raise where.error((), "the study names no metric or slice",
                          "add e.g. [metrics.trace] or [slices.random-1d]")
    return items


def _existing(where: _Where, key: tuple[str, ...], base: Path, value: str, directory: bool) -> str:
    p = Path(os.path.expanduser(value))
    p = p if p.is_absolute() else base / p
    ok = p.is_dir() if directory else p.is_file()
    if not ok:
        raise where.error(
            key,
            f"{_table_name(key[:-1])} {key[-1]}: {value!r} "
            f"{'is not a directory' if directory else 'does not exist'} (relative to {base})",
            "check the path",
        )
    return str(p)


# ------------------------------------------------------------------------ entry point
def read_text(path: Path) -> str:
    if not path.is_file():
        raise ConfigError(f"no such study file: {path}",
                          "pass a TOML study file (see examples/study.toml)")
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read {path}: {e}", "pass a UTF-8 TOML file") from e


def parse_study(path: str | Path, text: str | None = None) -> Study:
    """Read, check and resolve a study file (see the module docstring); raises ConfigError
    naming the file, line and key of the first problem. Nothing is computed or written."""
    path = Path(path)
    text = read_text(path) if text is None else text
    if tomllib is None:  # pragma: no cover
        raise LandscapeError(
            "reading a study file needs Python 3.11 (tomllib) or the tomli package",
            "pip install tomli",
        )
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        m = re.search(r"line (\d+)", str(e))
        raise ConfigError(
            f"{path}:{m.group(1) if m else 1}: invalid TOML: {str(e).split(' (at')[0]}",
            "see https://toml.io for the syntax",
        ) from e
    where = _Where(path, text)
    base = path.resolve().parent
    for k in data:
        if k not in STUDY_KEYS:
            raise where.error((k,), f"unknown key {k!r} at the top level",
                              f"{_suggest(k, STUDY_KEYS)}tables: {', '.join(sorted(STUDY_KEYS))}")
    study = _check_table(where, ("study",), data.get("study", {}), STUDY_OPTIONS)
    problem_given = _check_table(where, ("problem",), data.get("problem", {}), PROBLEM)
    problem = {k: opt.default for k, opt in PROBLEM.items() if k not in LOADING}
    problem.update({k: v for k, v in problem_given.items() if k not in LOADING})
    load = {k: v for k, v in problem_given.items() if k in LOADING}
    for k in ("model", "data"):
        if k in load and ":" in load[k] and load[k].split(":")[0].endswith(".py"):
            file = Path(load[k].rsplit(":", 1)[0])
            if not file.is_absolute():
                load[k] = str(base / file) + ":" + load[k].rsplit(":", 1)[1]
    checkpoints = _checkpoints(where, base, data.get("checkpoints", {}))
    items = _items(where, base, data, problem, study.get("seed", 0))
    name = study.get("name") or path.stem
    output = Path(study.get("output") or f"{name}.h5")
    output = output if output.is_absolute() else base / output
    figures_value = study.get("figures", f"{name}-figures")
    figures = (
        None
        if not figures_value
        else (Path(figures_value) if Path(figures_value).is_absolute() else base / figures_value)
    )
    if output.exists() and output.is_dir():
        raise where.error(("study", "output"), f"output {output} is a directory",
                          "name an .h5 file")
    for key, target in (("output", output), ("figures", figures)):
        if target is None:
            continue
        folder = target if key == "figures" else target.parent
        while not folder.exists() and folder != folder.parent:
            folder = folder.parent
        if not folder.is_dir() or not os.access(folder, os.W_OK | os.X_OK):
            raise where.error(("study", key),
                              f"{key} {target}: the folder {folder} is not writable",
                              "choose another path")
    return Study(path, text, name, output, figures, study.get("device", "cpu"), checkpoints, items,
                 load)


__all__ = [
    "KINDS",
    "PROBLEM",
    "CheckpointRef",
    "Item",
    "KindSchema",
    "Option",
    "Study",
    "key_lines",
    "parse_study",
    "run_files",
]
