"""What several commands share: the problem options (checkpoint → problem), and report assembly.

Every command that measures a checkpoint takes the same options to build its problem: the
model and data factories with their arguments, the loss, the split, the sample subset, the
product batch, the memory budget, the device and precision. :func:`problem_options` declares
them once and adds them to a command's signature; the command receives one :class:`ProblemSpec`.
:func:`declared_options` adds the flags of settings declared as :class:`~landscape.schema.Option`
(the metrics' settings), which the command receives as one dict.
"""

from __future__ import annotations

import functools
import inspect
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from ..errors import ConfigError
from ..results import Table
from ..schema import Option, check
from ..settings import PROBLEM
from .options import CheckpointArg, DataArgOpt, ModelArgOpt


def parse_kv(items: list[str] | None, flag: str) -> dict:
    """``["widths=[128,128]", "activation=tanh"]`` -> ``{"widths": [128, 128], "activation":
    "tanh"}`` (values parsed as JSON when possible; ``-`` in keys becomes ``_``)."""
    out: dict = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            raise ConfigError(f"{flag} {item!r} is not key=value",
                              f"write e.g. {flag} widths=[128,128]")
        try:
            out[key] = json.loads(value)
        except ValueError:
            out[key] = value
    return out


@dataclass
class ProblemSpec:
    """The options that build a checkpoint's problem (see :func:`problem_options`)."""

    model: str | None = None
    model_kwargs: dict = field(default_factory=dict)
    data: str | None = None
    data_kwargs: dict = field(default_factory=dict)
    loss: str | None = None
    split: str = "train"
    samples: int | None = None
    product_batch: int | None = None
    bn_batch: int | None = None
    params: str | None = None
    device: str = "cpu"
    dtype: str = "float32"
    seed: int = 0
    train_mode: bool = False
    memory: str | None = None
    allow_random_data: bool = False
    check_precision: bool = False

    def checkpoint(self, path: Path):
        from ..io.checkpoint import Checkpoint

        return Checkpoint.load(path, model=self.model, data=self.data, loss=self.loss,
                               model_kwargs=self.model_kwargs, data_kwargs=self.data_kwargs)

    def problem(self, ckpt, split: str | None = None, params: str | None | bool = True):
        """The problem of ``ckpt`` on ``split`` (default: the spec's)."""
        return ckpt.problem(split=split or self.split, samples=self.samples, seed=self.seed,
                            batch_size=self.product_batch,
                            params=self.params if params is True else params,
                            device=self.device, dtype=self.dtype, train_mode=self.train_mode,
                            bn_batch=self.bn_batch,
                            memory=self.memory, allow_random_data=self.allow_random_data)

    def load(self, path: Path, split: str | None = None):
        """``(checkpoint, problem)``."""
        ckpt = self.checkpoint(path)
        problem = self.problem(ckpt, split)
        if self.check_precision:
            from ..curvature.hessian import precision_check
            from ..problem import LOW_PRECISION

            if problem.dtype not in LOW_PRECISION:
                from ..errors import ConfigError

                raise ConfigError("--check-precision compares bfloat16 or float16 products with "
                                  f"float32's, and the products run in {self.dtype}",
                                  "add --dtype bfloat16 (or float16)")
            problem.precision = precision_check(problem)
        return ckpt, problem

    def settings(self) -> dict:
        """What a report records of these options."""
        d = asdict(self)
        d["params_regex"] = d.pop("params")
        return d


# the problem options besides the declared ones (landscape.settings.PROBLEM): the factories'
# keyword options, device, seed, and the old spelling of --product-batch
_OPTIONS = [
    ("model_arg", ModelArgOpt, None),
    ("data_arg", DataArgOpt, None),
    ("device", Annotated[str, typer.Option("--device", help="cpu, cuda, cuda:1, ...")], "cpu"),
    ("seed", Annotated[int, typer.Option("--seed", help="Seed of probes and subsets: same seed, "
                                         "same numbers.")], 0),
    ("legacy_batch", Annotated[int | None, typer.Option("--batch-size", hidden=True,
                                                        help="Deprecated: --product-batch.")],
     None),
]


def join(device: str | None) -> None:
    """Under torchrun, join the process group (NCCL for a CUDA ``device``, else gloo); nothing in a
    single process."""
    from .. import distributed

    distributed.init_from_env(device)


def _extend(fn, dest: str, added: list[tuple[str, Any, Any]], build: Callable[[dict], Any]):
    """``fn`` with the options ``added`` (``(name, annotation, default)``) in its signature, placed
    before the output options; their values reach ``fn`` as one argument ``dest =
    build(values)``."""
    sig = inspect.signature(fn, eval_str=True)  # Typer reads __signature__ as it is
    keep = [p for p in sig.parameters.values() if p.name != dest]
    new = [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=ann)
           for name, ann, default in added]
    names = [p.name for p in new]
    tail = [p for p in keep if p.name in ("json_", "out", "plot", "debug")]
    head = [p for p in keep if p not in tail]
    params = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) if p.kind == p.POSITIONAL_OR_KEYWORD
              and p.default is not p.empty else p for p in head]
    params += new + [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in tail]

    @functools.wraps(fn)
    def command(*args, **kwargs):
        values = {n: kwargs.pop(n) for n in names if n in kwargs}
        return fn(*args, **{dest: build(values)}, **kwargs)

    command.__signature__ = sig.replace(parameters=params)
    return command


def problem_options(fn=None, *, split: bool = True, params: bool = True, legacy_batch: bool = True,
                    product_batch: int | None = None):
    """Add the shared problem options to a command; it receives them as ``spec: ProblemSpec``.

    ``split`` / ``params``: offer ``--split`` / ``--params``; ``legacy_batch``: accept the old
    ``--batch-size`` for ``--product-batch`` (with a deprecation line); ``product_batch``: this
    command's default product batch."""
    skip = {n for n, on in (("split", split), ("params", params), ("legacy_batch", legacy_batch))
            if not on}

    def build(opts: dict) -> ProblemSpec:
        declared = {k: check(PROBLEM[k], opts.get(k), PROBLEM[k].flag_for(k)) for k in PROBLEM}
        legacy = opts.get("legacy_batch")
        batch = declared["batch_size"]
        if legacy is not None:
            from . import output

            output.info("note: --batch-size is deprecated here (it means --product-batch); use "
                        "--product-batch")
            batch = batch if batch is not None else legacy
        spec = ProblemSpec(
            model=declared["model"], model_kwargs=parse_kv(opts.get("model_arg"), "--model-arg"),
            data=declared["data"], data_kwargs=parse_kv(opts.get("data_arg"), "--data-arg"),
            loss=declared["loss"], split=declared["split"] or "train", samples=declared["samples"],
            product_batch=batch if batch is not None else product_batch,
            bn_batch=declared["bn_batch"], params=declared["params"],
            device=opts.get("device", "cpu"), dtype=declared["dtype"] or "float32",
            seed=opts.get("seed", 0), train_mode=bool(declared["train_mode"]),
            memory=declared["memory"], allow_random_data=bool(declared["allow_random_data"]),
            check_precision=bool(declared["check_precision"]))
        join(spec.device)
        return spec

    def wrap(fn):
        added = [_typer_option(k, o, o.default) for k, o in PROBLEM.items() if k not in skip]
        added += [o for o in _OPTIONS if o[0] not in skip]
        return _extend(fn, "spec", added, build)

    return wrap(fn) if fn is not None else wrap


#: the Python type Typer parses for each kind of declared setting
_TYPES = {"int": int, "float": float, "bool": bool, "range": tuple[float, float], "path": Path,
          "paths": list[Path]}


def _typer_option(key: str, opt: Option, default: Any) -> tuple[str, Any, Any]:
    """A declared setting as a Typer option ``(name, annotation, default)``; a boolean that
    defaults to true gets its ``--no-`` form."""
    kind = type(opt.choices[0]) if opt.kind == "choice" else _TYPES.get(opt.kind, str)
    note = f" One of: {', '.join(map(str, opt.choices))}." if opt.kind == "choice" else ""
    annotation = kind if default is not None else Optional[kind]  # noqa: UP045  (read by Typer)
    flag, *short = (opt.flag or opt.flag_for(key)).split()
    if opt.kind == "bool" and default:
        flag = f"{flag}/--no-{flag[2:]}"
    option = typer.Option(flag, *short, help=opt.help + note, show_default=default is not None)
    return key, Annotated[annotation, option], default


def _plain_value(value: Any) -> Any:
    """A parsed flag as the study file would give it: tuples as lists, paths as strings."""
    if isinstance(value, (tuple, list)):
        return [_plain_value(v) for v in value]
    return str(value) if isinstance(value, Path) else value


def declared_options(schema: dict[str, Option], defaults: dict[str, Any] | None = None):
    """Add a flag for each declared setting of ``schema`` (:class:`~landscape.schema.Option`) to a
    command; it receives their values as ``settings: dict``, checked against the declarations
    (one error line naming the flag). ``defaults`` overrides declared defaults for this command."""
    defaults = {k: (defaults or {}).get(k, o.default) for k, o in schema.items()}

    def build(values: dict) -> dict:
        return {key: check(schema[key], _plain_value(value), schema[key].flag_for(key))
                for key, value in values.items()}

    def wrap(fn):
        added = [_typer_option(k, o, defaults[k]) for k, o in schema.items()]
        return _extend(fn, "settings", added, build)

    return wrap


@dataclass
class Outputs:
    """Where a command's results go: ``--json`` (one object on stdout instead of tables), ``--out``
    (HDF5), ``--plot`` (a figure), ``--debug`` (tracebacks)."""

    json: bool = False
    out: Path | None = None
    plot: Path | None = None
    debug: bool = False


def outputs(fn=None, *, plot: bool = False):
    """Add ``--json``, ``--out``, ``--plot`` (when ``plot``) and ``--debug`` to a command; it
    receives them as ``io: Outputs``."""
    from .options import DebugOpt, JsonOpt, OutOpt, PlotOpt

    added = [("json_", JsonOpt, False), ("out", OutOpt, None)] + (
        [("plot", PlotOpt, None)] if plot else []
    )
    added.append(("debug", DebugOpt, False))

    def build(values: dict) -> Outputs:
        return Outputs(values.get("json_", False), values.get("out"), values.get("plot"),
                       values.get("debug", False))

    def wrap(fn):
        return _extend(fn, "io", added, build)

    return wrap(fn) if fn is not None else wrap


def measuring(schema: dict[str, Option] | None = None, *, plot: bool = False,
              defaults: dict[str, Any] | None = None, **problem_kwargs):
    """The decorators of a command that measures a checkpoint, in their order: error handling,
    the problem options (``problem_kwargs`` as :func:`problem_options` takes them), the declared
    settings of ``schema`` (received as ``settings``) and the outputs (received as ``io``)."""
    from . import output

    def wrap(fn):
        fn = outputs(fn, plot=plot)
        if schema is not None:
            fn = declared_options(schema, defaults)(fn)
        return output.handle_errors(problem_options(**problem_kwargs)(fn))

    return wrap


def report_command(name: str, doc: str, schema: dict[str, Option], compute: Callable,
                   show: Callable, *,
                   hdf5_keys: tuple[str, ...] | None = None, **problem_kwargs):
    """A command that measures a report on a checkpoint's problem (``fisher``, ``noise``,
    ``stability``): its flags are the problem options, the declared ``schema`` and the outputs.

    ``compute(ckpt, problem, settings, start) -> (result, recorded settings, extra report keys)``
    runs under a progress line (``start(label)`` names the current stage; products are counted);
    the report is the checkpoint's header, the loss and accuracy at the point, the settings, the
    result and the time. ``--out`` writes ``hdf5_keys`` of the result as groups (default: the
    whole result as group ``name``) and the rest as attributes; ``--json`` prints the report;
    otherwise ``show(report, problem, checkpoint)`` prints its tables."""
    def command(checkpoint: CheckpointArg, settings: dict | None = None, spec: ProblemSpec = None,
                io: Outputs = None) -> None:
        from ..curvature.base import count_products
        from . import output

        clock = Stopwatch()
        output.check_writable(io.out)
        ckpt, problem = spec.load(checkpoint)
        at = problem.point()  # a NaN checkpoint fails here
        state = {"advance": lambda k: None}
        with output.progress(not io.json) as bar, count_products(lambda k: state["advance"](k)):
            result, recorded, extra = compute(ckpt, problem, settings,
                                              lambda label: state.update(advance=bar(label, None)))
        report = header(ckpt, problem)
        report.update(at)
        report["settings"] = {**recorded, **spec.settings()}
        report.update(extra)
        report.update(result)
        report["seconds"] = clock()
        if io.out is not None:
            from ..io.hdf5 import write_tree

            keys = hdf5_keys or tuple(result)
            tree = {k: result[k] for k in hdf5_keys} if hdf5_keys else {name: result}
            write_tree(io.out, tree, attrs={k: v for k, v in report.items() if k not in keys})
        if io.json:
            output.emit_json(report)
            return
        show(report, problem, checkpoint)
        output.written(io.out)

    command.__name__, command.__qualname__, command.__doc__ = name, name, doc
    from . import output

    return output.handle_errors(
        problem_options(**problem_kwargs)(declared_options(schema)(outputs(command)))
    )


def build_problems(checkpoint: Path, spec: ProblemSpec, *, test: bool, params: bool = True):
    """The checkpoint and ``{"train": Problem[, "test": Problem]}`` (test where the data have
    one)."""
    ckpt = spec.checkpoint(checkpoint)
    problems = {"train": spec.problem(ckpt, "train", params=params)}
    if test and ckpt.dataset().test is not None:
        problems["test"] = spec.problem(ckpt, "test", params=params)
    return ckpt, problems


def emit(report: dict, tree: dict, attrs: dict, table: Table, *, io: Outputs, kind: str,
         also: Callable[[dict], list] | None = None) -> None:
    """Write a slice's (or line's) HDF5 file and figure (and what ``also(data)`` writes: exports),
    then print its table or the JSON object."""
    from . import output

    if io.out is not None:
        from ..io.hdf5 import write_tree

        write_tree(io.out, tree, attrs=attrs)
    if io.plot is not None:
        from ..io.slice_figures import save, slice_figure

        save(slice_figure({**attrs, **tree}, kind), io.plot)
    extra = also({**attrs, **tree}) if also is not None else []
    if io.json:
        output.emit_json({**report, **({"exported": [str(p) for p in extra]} if extra else {})})
        return
    output.table(*table)
    output.written(io.out, io.plot, *extra)


class Stopwatch:
    def __init__(self) -> None:
        self.t0 = time.perf_counter()

    def __call__(self) -> float:
        return round(time.perf_counter() - self.t0, 4)


def header(ckpt, problem, seconds: float | None = None) -> dict:
    """The report header of every command (:func:`landscape.io.checkpoint.report_header`)."""
    from ..io.checkpoint import report_header

    return report_header(ckpt, problem, seconds)
