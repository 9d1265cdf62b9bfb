"""Curvature metrics tracked during training, every K steps.

:data:`TRACKERS` maps a ``--track`` name to a :class:`Tracker` whose ``fn(problem, settings)``
returns the scalars to record at that step. A value is a float, a ``(value, stderr)`` pair, or
an :class:`~landscape.results.Estimate`; a pair or an Estimate becomes two columns of the run's
time series, ``NAME`` and ``NAME_stderr``. Built in:

=============  =========================================================================
``trace``      ``tr(H)`` by Hutchinson / Hutch++ (docs/algorithms.md §1) -> ``trace ± stderr``
``eig``        top Hessian eigenvalue by Lanczos -> ``lambda_max`` and its Ritz residual
               ``lambda_max_residual`` (``‖Hx − θx‖``, which bounds its error)
``frobenius``  ``‖H‖_F = sqrt(E‖Hv‖²)`` -> ``frobenius ± stderr``
``density``    SLQ spectral density (Ghorbani et al. 2019) -> its support ``density_min``,
               ``density_max`` and the weight on negative eigenvalues ``density_negative``
``perturbation``, ``keskar``  the perturbation sharpness metrics -> ``perturbation ± stderr``,
               ``keskar``
``gradnorm``   ``‖∇L(θ)‖`` on the tracking samples (exact) -> ``grad_norm``
``loss``       ``L(θ)`` on the tracking samples (exact) -> ``track_loss``
``nonuniformity``  SGD non-uniformity ``s = sqrt(λ_max(Σ_H))`` (lecture eq. 5; Lanczos, as
               ``landscape noise``) -> ``nonuniformity`` and ``nonuniformity_residual`` (the
               Ritz residual of ``λ_max(Σ_H)``)
``top-overlap``  the top-k eigenspace (Lanczos, ``--track-arg top_k=K``) against the one at
               the previous tracked step: the mean squared cosine of their principal angles
               (:func:`~landscape.estimators.subspace.overlap`) -> ``top_overlap`` (NaN at the
               first tracked step)
``mu``         alignment of the SGD noise with G, ``μ = α·β = tr(ΣG)/(2L ‖G‖_F²)`` (exact,
               :func:`~landscape.estimators.alignment.alignment`) -> ``mu``, ``alpha``,
               ``beta``; its cost grows as n² (n = ``--track-samples``): about 24 s per
               evaluation for 1,024 samples of the digits MLP on 2 CPU cores, 4 s for 256
               (``--track-arg noise_samples=256`` takes a seeded subset for these two only)
=============  =========================================================================

The Hessian metrics are those of :data:`landscape.metrics.METRICS` that declare tracked columns
(``Metric.scalars``), computed by :func:`landscape.metrics.run.measure`, the code behind ``landscape
sharpness``; ``nonuniformity`` and ``mu`` through the functions behind ``landscape noise``.
:func:`register_tracker` adds members. ``settings.extra`` holds the run's context for trackers that
need it: ``lr``, ``batch_size``, ``n_train``, ``step``, and ``memory``, a dict kept for the whole
run (in its state, so a resumed run continues it)."""

from __future__ import annotations

import math
from collections import ChainMap
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError
from ..metrics import METRICS, Metric, MetricView, Settings
from ..schema import names

TrackerFn = Callable[[Any, Settings], dict]


@dataclass(frozen=True)
class Tracker:
    """``fn(problem, settings) -> {column: float | (value, stderr) | Estimate}``."""

    name: str
    fn: TrackerFn
    help: str
    primary: str  # the column shown in the progress bar


def _metric_tracker(name: str, metric: Metric) -> Tracker | None:
    """The ``--track`` member of a registered metric that declares its tracked columns."""
    if metric.scalars is None:
        return None

    def fn(problem, settings: Settings) -> dict:
        from ..metrics.run import measure

        return metric.scalars(measure(problem, [name], settings)[metric.key])

    return Tracker(name, fn, metric.help, metric.primary or name)


def _gradnorm(problem, s: Settings) -> dict:
    _, g = problem.gradient()
    return {"grad_norm": float(g.norm())}


def _loss(problem, s: Settings) -> dict:
    return {"track_loss": problem.loss_value()}


def _nonuniformity(problem, s: Settings) -> dict:
    from ..metrics.stability import nonuniformity

    r = nonuniformity(problem, samples=s.noise_samples, seed=s.seed, tol=s.tol,
                      max_steps=s.max_steps)
    return {"nonuniformity": r.value, "nonuniformity_residual": r.extra["residual"]}


def _mu(problem, s: Settings) -> dict:
    from ..estimators.alignment import alignment

    a = alignment(problem, samples=s.noise_samples, seed=s.seed)
    return {"mu": a.mu, "alpha": a.alpha, "beta": a.beta}


def _top_overlap(problem, s: Settings) -> dict:
    from ..curvature.hessian import Hessian
    from ..estimators.lanczos import top_eigenvalues
    from ..estimators.subspace import overlap

    eig = top_eigenvalues(Hessian(problem), k=s.top_k, tol=s.tol, seed=s.seed,
                          block=s.eig_block, max_steps=s.max_steps, return_vectors=True)
    memory = s.extra.setdefault("memory", {})  # the run's, kept between tracked steps
    before = memory.get("top_vectors")
    memory["top_vectors"] = eig.vectors.detach().cpu()
    same = before is not None and before.shape == eig.vectors.shape
    return {"top_overlap": overlap(before, eig.vectors).overlap if same else math.nan}


#: ``--track`` name -> Tracker: the metrics of :data:`landscape.metrics.METRICS` that declare
#: tracked columns, then the trackers below (and those added by :func:`register_tracker`).
TRACKERS: ChainMap[str, Tracker] = ChainMap({
    "gradnorm": Tracker("gradnorm", _gradnorm, "full gradient norm on the tracking samples",
                        "grad_norm"),
    "loss": Tracker("loss", _loss, "loss on the tracking samples", "track_loss"),
    "nonuniformity": Tracker("nonuniformity", _nonuniformity,
                             "SGD non-uniformity s = sqrt(lambda_max(Sigma_H)) (Lanczos)",
                             "nonuniformity"),
    "mu": Tracker("mu", _mu,
                  "alignment mu = alpha*beta of the SGD noise with G (exact; cost ~ n^2)", "mu"),
    "top-overlap": Tracker("top-overlap", _top_overlap,
                           "overlap (mean cos² of the principal angles) of the top-k Hessian "
                           "eigenspace with the one tracked before", "top_overlap"),
}, MetricView(_metric_tracker))


def register_tracker(name: str, fn: TrackerFn, help: str, primary: str | None = None) -> None:
    """Add a ``--track`` member."""
    TRACKERS[name] = Tracker(name, fn, help, primary or name)


def parse_track(spec: str | list[str] | None) -> list[str]:
    """``"trace,eig"`` or repeated names -> validated list (``None`` or empty: nothing)."""
    return names(spec, TRACKERS, "tracked metric")


def flatten(values: dict) -> dict[str, float]:
    """A tracker's result as flat float columns: ``(v, se)`` and Estimates -> ``NAME``,
    ``NAME_stderr``."""
    out: dict[str, float] = {}
    for key, v in values.items():
        if hasattr(v, "value") and hasattr(v, "stderr"):
            v = (v.value, v.stderr)
        if isinstance(v, (tuple, list)):
            out[key], out[f"{key}_stderr"] = float(v[0]), float(v[1])
        else:
            out[key] = float(v) if v is not None else math.nan
    return out


def track(problem, names: list[str], settings: Settings) -> dict[str, float]:
    """All requested trackers on ``problem``, as flat columns."""
    out: dict[str, float] = {}
    for name in names:
        out.update(flatten(TRACKERS[name].fn(problem, settings)))
    return out


def settings_from(probes: int, seed: int, options: dict | None = None) -> Settings:
    """:class:`~landscape.metrics.Settings` for tracking: ``probes``, ``seed`` and ``--track-arg``
    options (Settings fields such as ``method``, ``tol``, ``top_k``, ``runs``, ``steps``, and the
    settings the metrics declare, such as ``rho``)."""
    s = Settings(probes=probes, seed=seed)
    declared = {k: o.default for m in METRICS.values() for k, o in m.options.items()}
    for k, v in (options or {}).items():
        if k in s.__dataclass_fields__ and k != "extra":
            setattr(s, k, _checked(k, v, getattr(s, k)))
        elif k in declared:
            s.extra[k] = _checked(k, v, declared[k])
        else:
            fields = [f for f in Settings.__dataclass_fields__ if f != "extra"]
            known = ", ".join(dict.fromkeys(fields + list(declared)))
            raise ConfigError(f"unknown tracking option {k!r}", f"--track-arg takes {known}")
    return s


def _checked(key: str, value: Any, default: Any) -> Any:
    """``value`` if it has the type of the option (that of its default; options defaulting to None
    take integers), else a ConfigError naming the option."""
    if isinstance(default, (bool, str)):
        ok = isinstance(value, type(default))
    elif isinstance(default, float):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    else:  # int, or None (max_steps, noise_samples)
        ok = (value is None and default is None) or (isinstance(value,
            int) and not isinstance(value, bool))
    if not ok:
        kind = {bool: "true or false", str: "a string", float: "a number"}.get(type(default),
                                                                               "an integer")
        raise ConfigError(f"tracking option {key}={value!r} is not {kind}",
                          f"write e.g. --track-arg {key}={default or 256}")
    return float(value) if isinstance(default, float) else value
