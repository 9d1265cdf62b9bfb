"""The metrics of a checkpoint's Hessian: one declaration each, in one registry.

A :class:`Metric` is a name, typed settings (:class:`~landscape.schema.Option`, named as the
CLI flags), ``compute(op, settings) -> result``, the result's table rows, tracked columns and
report headlines, and its cost in operator products. Everything else reads :data:`METRICS`:
``landscape sharpness --metric``, its checks of the settings, the study file's ``[metrics.*]``
kinds (:data:`landscape.study.spec.KINDS`), ``landscape train --track``
(:data:`landscape.train.tracking.TRACKERS`) and ``landscape report``'s headlines. Adding a metric
is one :func:`register` call in a module of this package (see CONTRIBUTING.md).

This module and the declarations import no torch: the estimators are imported when a metric is
computed."""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from ..schema import Option, check

Row = tuple[str, str, str, str]  # (quantity, value, ± stderr / note, products)
Headline = tuple[str, float, float]  # (quantity, value, error: stderr or residual; NaN if none)


@dataclass
class Settings:
    """Estimator settings shared by the metrics (CLI flags of the same names); settings that only
    one metric reads and that are not fields here live in ``extra`` (e.g. ``rho``)."""

    probes: int = 100
    method: str = "hutchinson"
    top_k: int = 1
    which: str = "top"
    tol: float = 1e-6
    eig_method: str = "lanczos"
    #: Lanczos block size (None: top_k, which finds every copy of an eigenvalue of multiplicity
    #: up to top_k; 1: single-vector Lanczos, fewer products when eigenvalues are known simple)
    eig_block: int | None = None
    max_steps: int | None = None
    runs: int = 10
    steps: int = 80
    seed: int = 0
    #: seeded subset of the samples for the per-sample noise metrics (non-uniformity, exact
    #: alignment μ, whose cost grows as its square); None: all samples of the problem
    noise_samples: int | None = None
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        d = {k: v for k, v in self.__dict__.items() if k != "extra"}
        d.update(self.extra)
        return d

    @classmethod
    def of(cls, values: dict, **fixed: Any) -> Settings:
        """Settings from declared values (``--probes``, a study table, ``--track-arg``): the
        fields set, the other keys kept in ``extra``."""
        s = cls(**fixed)
        for key, value in values.items():
            if key in cls.__dataclass_fields__ and key != "extra":
                setattr(s, key, value)
            else:
                s.extra[key] = value
        return s

    def get(self, key: str, default: Any = None) -> Any:
        """A field, or an ``extra`` setting (``default`` when unset or None)."""
        value = getattr(self, key) if key in self.__dataclass_fields__ else self.extra.get(key)
        return default if value is None else value

    def validate(self, names: list[str] | None = None) -> Settings:
        """Each setting read by the metrics ``names`` (default: all) checked against its
        declared :class:`Option`: one clear error naming the flag; self if fine."""
        for name in names or list(METRICS):
            for key, opt in METRICS[name].options.items():
                check(opt, self.get(key), opt.flag_for(key),
                      f"pass a valid {opt.flag_for(key)} (metric {name})")
        return self


@dataclass(frozen=True)
class Metric:
    """One metric of the Hessian.

    ``key``: its JSON/HDF5 name; ``compute(op, settings)`` returns a result with ``to_dict()``;
    ``rows(result)``: its table rows; ``cost(settings)``: operator products (None: unknown);
    ``options``: the settings it reads, as flags of ``landscape sharpness`` and keys of a study's
    ``[metrics.NAME]`` table; ``scalars(result)``: its ``--track`` columns (a float, a
    ``(value, stderr)`` pair; None: not trackable) with ``primary`` the one a progress bar shows;
    ``headlines(stored)``: the report's numbers from the stored ``to_dict()``.
    """

    key: str
    compute: Callable[[Any, Settings], Any]
    rows: Callable[[Any], list[Row]]
    cost: Callable[[Settings], int | None]
    help: str
    options: dict[str, Option] = field(default_factory=dict)
    scalars: Callable[[Any], dict] | None = None
    primary: str | None = None
    headlines: Callable[[dict], list[Headline]] = lambda stored: []


#: name -> Metric (the ``--metric`` names, in the order they are listed)
METRICS: dict[str, Metric] = {}


def declared(names: list[str] | None = None) -> dict[str, Option]:
    """The settings the metrics ``names`` (default: all) declare, each once (a setting read by
    several metrics, like ``probes``, is one declaration)."""
    out: dict[str, Option] = {}
    for name in names or list(METRICS):
        for key, opt in METRICS[name].options.items():
            if out.setdefault(key, opt) != opt:
                raise ValueError(f"metric {name!r} declares {key!r} unlike another metric")
    return out


def register(name: str, metric: Metric) -> Metric:
    """Add ``metric`` as ``name`` to :data:`METRICS` (and so to the CLI, studies, tracking and
    reports)."""
    METRICS[name] = metric
    return metric


V = TypeVar("V")


class MetricView(Mapping[str, V], Generic[V]):
    """A live read-only view of :data:`METRICS` through ``make(metric)``; metrics for which it
    gives None are left out. Other registries chain it (``collections.ChainMap``) so that a
    metric registered later appears in them too."""

    def __init__(self, make: Callable[[str, Metric], V | None]) -> None:
        self.make = make

    def __getitem__(self, name: str) -> V:
        value = self.make(name, METRICS[name]) if name in METRICS else None
        if value is None:
            raise KeyError(name)
        return value

    def __iter__(self) -> Iterator[str]:
        return (n for n, m in list(METRICS.items()) if self.make(n, m) is not None)

    def __len__(self) -> int:
        return sum(1 for _ in self)


def fmt(x: float) -> str:
    return f"{x:.6g}"


def number(x: Any) -> float:
    """A stored value as a float: a number, or the first of an array or list (NaN when missing or
    not a number)."""
    if hasattr(x, "reshape"):
        x = x.reshape(-1)[0] if x.size else None
    elif isinstance(x, (list, tuple)):
        x = x[0] if x else None
    try:
        return float(x)
    except (TypeError, ValueError):
        return math.nan


def estimate_headline(stored: dict | None, label: str) -> Headline:
    """The headline of a stored :class:`~landscape.results.Estimate`: value ± stderr."""
    stored = stored or {}
    return (label, number(stored.get("estimate")), number(stored.get("stderr")))


def stderr_text(r) -> str:
    """``stderr``, and with fewer than 30 degrees of freedom the Student-t 95% half-width too."""
    dof = r.extra.get("dof")
    if dof is not None and dof < 30 and math.isfinite(r.stderr):
        lo, hi = r.interval(0.95)
        return f"{fmt(r.stderr)} (95%: ±{fmt((hi - lo) / 2)}, t with {dof} dof)"
    return fmt(r.stderr)


def estimate_rows(label: str) -> Callable[[Any], list[Row]]:
    """Table rows of an Estimate: ``label``, value, stderr, products."""
    def rows(r) -> list[Row]:
        return [(label, fmt(r.value), stderr_text(r), str(r.matvecs))]

    return rows


DEFAULT_METRICS = ("trace", "eig", "frobenius")


def parse_metrics(spec: str | list[str] | None, registry: dict[str, Metric] = METRICS) -> list[str]:
    """``"trace,eig"`` or repeated names → validated list; ``None`` → the defaults."""
    from ..schema import names

    return names(spec, registry, "metric") if spec else list(DEFAULT_METRICS)


# the modules that declare metrics, in the order the metrics are listed: hessian (trace, eig,
# frobenius, density), perturbation (perturbation, keskar), directional (grad-curvature)
for _module in ("hessian", "perturbation", "directional"):
    importlib.import_module(f".{_module}", __name__)
