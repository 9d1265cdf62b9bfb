"""The spectral metrics of the Hessian (``landscape sharpness --metric trace,eig,frobenius,
density``): trace, extreme eigenvalues, Frobenius norm and spectral density (docs/algorithms.md
§1). Importing this module registers them."""

from __future__ import annotations

from typing import Any

from ..schema import choice, integer, positive
from . import (
    Headline,
    Metric,
    Row,
    Settings,
    estimate_headline,
    estimate_rows,
    fmt,
    number,
    register,
)

PROBES = integer(2, 100, "Random probe vectors (one operator product each) of the trace, the "
                         "Frobenius norm and ρ² tr(H)/2.")


def _trace(op, s: Settings):
    from ..estimators import trace

    return trace(op, probes=s.probes, method=s.method, seed=s.seed)


def _eig(op, s: Settings):
    from ..estimators import top_eigenvalues

    return top_eigenvalues(op, k=s.top_k, which=s.which, tol=s.tol, max_steps=s.max_steps,
                           seed=s.seed, method=s.eig_method, block=s.eig_block,
                           return_vectors=True)  # made for the residuals anyway; --out keeps them


def _frobenius(op, s: Settings):
    from ..estimators import frobenius

    return frobenius(op, probes=s.probes, seed=s.seed)


def _density(op, s: Settings):
    from ..estimators import spectral_density

    return spectral_density(op, runs=s.runs, steps=s.steps, seed=s.seed)


def _eig_rows(r) -> list[Row]:
    vals = r.values.tolist()
    res = r.residuals.tolist()
    name = "λ" if r.method == "lanczos" else "λ (power: largest |λ|)"
    block = (r.extra.get("basis") or {}).get("block", 1)
    check = r.extra.get("check")
    matvecs = str(r.matvecs)
    if check:
        missed = f"; missed a copy, block {block}" if check["missed"] else ""
        matvecs += f" (checked: {check['products']}{missed})"
    elif block > 1:
        matvecs += f" (block {block})"
    out = []
    k = len(vals) // 2 if r.which == "both" else len(vals)
    for i, (v, e) in enumerate(zip(vals, res)):
        end, rank = ((r.which, i + 1) if r.which != "both"
                     else (("top", i + 1) if i < k else ("bottom", i - k + 1)))
        out.append((f"{name}[{end} {rank}]", fmt(v), f"residual {e:.2g}",
                    matvecs if i == 0 else ""))
    return out


def _density_rows(r) -> list[Row]:
    nodes = r.nodes
    return [("density support", f"[{fmt(float(nodes.min()))}, {fmt(float(nodes.max()))}]",
             f"{r.runs} runs x {r.steps} steps", str(r.matvecs))]


def _eig_scalars(r) -> dict:
    vals, res = r.values.tolist(), r.residuals.tolist()
    out: dict[str, float] = {"lambda_max": vals[0], "lambda_max_residual": res[0]}
    for i in range(1, len(vals)):  # --track-arg top_k=3 -> lambda_2, lambda_3
        out[f"lambda_{i + 1}"] = vals[i]
        out[f"lambda_{i + 1}_residual"] = res[i]
    return out


def _density_scalars(r) -> dict:
    nodes, weights = r.nodes.double(), r.weights.double()
    negative = float((weights * (nodes < 0)).sum() / r.runs)
    return {"density_min": float(nodes.min()), "density_max": float(nodes.max()),
            "density_negative": negative}


def _seq(x: Any) -> list[float]:
    if hasattr(x, "reshape"):
        return [float(v) for v in x.reshape(-1)]
    return [float(v) for v in (x if isinstance(x, (list, tuple)) else [x])]


def _eig_headlines(stored: dict) -> list[Headline]:
    v, res = _seq(stored.get("values", [])), _seq(stored.get("residuals", []))
    if not v:
        return []
    which = stored.get("which", "top")
    if which == "bottom":
        return [("λ_min", v[0], res[0])]
    out = [("λ_max", v[0], res[0])]
    if which == "both":
        k = len(v) // 2
        out.append(("λ_min", v[k], res[k]))
    return out


def _density_headlines(stored: dict) -> list[Headline]:
    nodes = _seq(stored.get("nodes", []))
    return [("SLQ max Ritz value", max(nodes), number(None))] if nodes else []


#: the Lanczos settings (shared by the metrics that compute eigenvectors)
EIG = {"top_k": integer(1, 1, "How many eigenvalues at each end."),
       "which": choice("top", "bottom", "both",
                       help="Eigenvalues at the top, bottom or both ends of the spectrum."),
       "tol": positive(1e-6, "Relative residual tolerance of Lanczos (or power iteration)."),
       "eig_method": choice("lanczos", "power",
                            help="Lanczos, or power iteration (PyHessian's: largest |λ|)."),
       "eig_block": integer(1, help="Lanczos block size. Default: single-vector Lanczos, checked "
                                    "for copies of a repeated eigenvalue it cannot see (then block "
                                    "--top-k); 1: unchecked; k: block Lanczos, which finds every "
                                    "copy up to k times at about twice the products."),
       "max_steps": integer(1, help="Cap on Lanczos steps (default: enough for --tol).")}


register("trace", Metric(
    "trace", _trace, estimate_rows("tr(H)"), lambda s: s.probes,
    "Hessian trace (Hutchinson or Hutch++) ± standard error",
    options={"probes": PROBES,
             "method": choice("hutchinson", "hutchpp", help="Trace estimator.")},
    scalars=lambda r: {"trace": (r.value, r.stderr)}, primary="trace",
    headlines=lambda stored: [estimate_headline(stored, "tr(H)")]))

register("eig", Metric(
    "eigenvalues", _eig, _eig_rows, lambda s: None,
    "extreme eigenvalues (Lanczos, or power iteration) with residuals",
    options=EIG,
    scalars=_eig_scalars, primary="lambda_max", headlines=_eig_headlines))

register("frobenius", Metric(
    "frobenius", _frobenius, estimate_rows("‖H‖_F"), lambda s: s.probes,
    "Frobenius norm sqrt(E‖Hv‖²) ± standard error",
    options={"probes": PROBES},
    scalars=lambda r: {"frobenius": (r.value, r.stderr)}, primary="frobenius",
    headlines=lambda stored: [estimate_headline(stored, "‖H‖_F")]))

register("density", Metric(
    "density", _density, _density_rows, lambda s: s.runs * s.steps,
    "spectral density by stochastic Lanczos quadrature",
    options={"runs": integer(1, 10, "Spectral density: SLQ runs."),
             "steps": integer(2, 80, "Spectral density: Lanczos steps per run.")},
    scalars=_density_scalars, primary="density_max", headlines=_density_headlines))
