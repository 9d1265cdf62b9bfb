"""The metrics of ``landscape sharpness``: one registry, one ``compute(op, settings)`` each.

The CLI's ``--metric`` choices, the JSON keys, the HDF5 groups and the table rows all follow from
:data:`METRICS`; adding a metric adds one entry here.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from ..errors import ConfigError


@dataclass
class Settings:
    """Estimator settings shared by the metrics (CLI flags of the same names)."""

    probes: int = 100
    method: Literal["hutchinson", "hutchpp"] = "hutchinson"
    top_k: int = 1
    which: Literal["top", "bottom", "both"] = "top"
    tol: float = 1e-6
    eig_method: Literal["lanczos", "power"] = "lanczos"
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

    def validate(self) -> Settings:
        """One clear error for a setting out of range or an unknown method name; self if fine."""
        for flag, value, choices in (("--method", self.method, ("hutchinson", "hutchpp")),
                                     ("--which", self.which, ("top", "bottom", "both")),
                                     ("--eig-method", self.eig_method, ("lanczos", "power"))):
            if value not in choices:
                raise ConfigError(f"unknown {flag} {value!r}", f"choose {' or '.join(choices)}")
        for flag, v in (("--probes", self.probes), ("--top-k", self.top_k), ("--runs", self.runs),
                        ("--steps", self.steps), ("--eig-block", self.eig_block or 1)):
            if v < 1:
                raise ConfigError(f"{flag} must be at least 1, got {v}", f"pass a positive {flag}")
        return self


@dataclass(frozen=True)
class Metric:
    """``key``: the JSON/HDF5 name; ``compute(op, settings)`` returns a result with ``to_dict()``;
    ``rows(result)`` gives the table rows ``(quantity, value, ± stderr, products)``;
    ``cost(settings)``: expected operator products (for the progress bar), or None if unknown."""

    key: str
    compute: Callable[[Any, Settings], Any]
    rows: Callable[[Any], list[tuple[str, str, str, str]]]
    cost: Callable[[Settings], int | None]
    help: str


def fmt(x: float) -> str:
    return f"{x:.6g}"


def _trace(op, s: Settings):
    from ..estimators import trace

    return trace(op, probes=s.probes, method=s.method, seed=s.seed)


def _eig(op, s: Settings):
    from ..estimators import top_eigenvalues

    return top_eigenvalues(op, k=s.top_k, which=s.which, tol=s.tol, max_steps=s.max_steps,
                           seed=s.seed, method=s.eig_method, block=s.eig_block)


def _frob(op, s: Settings):
    from ..estimators import frobenius

    return frobenius(op, probes=s.probes, seed=s.seed)


def _density(op, s: Settings):
    from ..estimators import spectral_density

    return spectral_density(op, runs=s.runs, steps=s.steps, seed=s.seed)


def stderr_text(r) -> str:
    """``stderr``, and with fewer than 30 degrees of freedom the Student-t 95% half-width too."""
    dof = r.extra.get("dof")
    if dof is not None and dof < 30 and math.isfinite(r.stderr):
        lo, hi = r.interval(0.95)
        return f"{fmt(r.stderr)} (95%: ±{fmt((hi - lo) / 2)}, t with {dof} dof)"
    return fmt(r.stderr)


def _estimate_rows(label: str):
    def rows(r) -> list[tuple[str, str, str, str]]:
        return [(label, fmt(r.value), stderr_text(r), str(r.matvecs))]

    return rows


def _eig_rows(r) -> list[tuple[str, str, str, str]]:
    vals = r.values.tolist()
    res = r.residuals.tolist()
    name = "λ" if r.method == "lanczos" else "λ (power: largest |λ|)"
    block = (r.extra.get("basis") or {}).get("block", 1)
    matvecs = f"{r.matvecs} (block {block})" if block > 1 else str(r.matvecs)
    out = []
    k = len(vals) // 2 if r.which == "both" else len(vals)
    for i, (v, e) in enumerate(zip(vals, res)):
        end, rank = (r.which, i + 1) if r.which != "both" else (("top", i + 1) if i < k else ("bottom", i - k + 1))
        out.append((f"{name}[{end} {rank}]", fmt(v), f"residual {e:.2g}", matvecs if i == 0 else ""))
    return out


def _density_rows(r) -> list[tuple[str, str, str, str]]:
    nodes = r.nodes
    return [("density support", f"[{fmt(float(nodes.min()))}, {fmt(float(nodes.max()))}]",
             f"{r.runs} runs x {r.steps} steps", str(r.matvecs))]


METRICS: dict[str, Metric] = {
    "trace": Metric("trace", _trace, _estimate_rows("tr(H)"), lambda s: s.probes,
                    "Hessian trace (Hutchinson or Hutch++) ± standard error"),
    "eig": Metric("eigenvalues", _eig, _eig_rows, lambda s: None,
                  "extreme eigenvalues (Lanczos, or power iteration) with residuals"),
    "frobenius": Metric("frobenius", _frob, _estimate_rows("‖H‖_F"), lambda s: s.probes,
                        "Frobenius norm sqrt(E‖Hv‖²) ± standard error"),
    "density": Metric("density", _density, _density_rows, lambda s: s.runs * s.steps,
                      "spectral density by stochastic Lanczos quadrature"),
}

DEFAULT_METRICS = ("trace", "eig", "frobenius")


def parse_metrics(spec: str | list[str] | None, registry: dict[str, Metric] = METRICS) -> list[str]:
    """``"trace,eig"`` or repeated names → validated list; ``None`` → the defaults."""
    if not spec:
        return list(DEFAULT_METRICS)
    names = [m.strip() for part in ([spec] if isinstance(spec, str) else spec) for m in part.split(",") if m.strip()]
    for m in names:
        if m not in registry:
            raise ConfigError(f"unknown metric {m!r}", f"choose from {', '.join(registry)}")
    return names


from . import perturbation as _perturbation  # noqa: F401  (registers "perturbation", "keskar")
