"""``landscape doctor``: the checks that explain a strange loss landscape (docs/algorithms.md §4,
"When a picture looks wrong").

Each check measures one known cause of misleading curvature numbers or slice pictures on the
checkpoint's own problem, and gives a verdict (``ok``, ``warn``, ``fail`` or ``skip``), what it
found, and the fix:

- ``finite``: the loss and the parameters are finite (the other checks stop otherwise);
- ``data``: two reads of the data give the same batches (a shuffling loader or random
  augmentation makes every pass another function);
- ``dropout``: the model's output is the same for two evaluations (dropout active in train mode);
- ``batchnorm``: the eval-mode loss with the stored running statistics against the loss with the
  statistics re-estimated on these data;
- ``precision``: the loss in the problem's precision against float64;
- ``minimum``: how far a gradient step of ``1/λ_max`` would lower the loss, ``‖g‖²/(2λ_max)``
  (the descent lemma's guarantee), relative to the loss: the point is no minimum when it is large;
- ``scale-invariance``: weight tensors whose scaling leaves the loss unchanged (followed by a
  normalisation layer, its statistics following the weights as in training): their slices and
  sharpness are meaningless without filter normalisation (Li et al. 2018, Sec. 4);
- with a slice file: ``slice-values`` (non-finite grid values), ``slice-normalisation`` and
  ``slice-range``: each axis against the curvature along its direction ``κ = dᵀHd/‖d‖²``: the
  quadratic model's rise at the edge ``½ κ (r‖d‖)²``, and a range that rises by about 2.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from .errors import NumericalError
from .problem import Problem

#: samples of the cheap checks (precision, scale invariance, repeated evaluation)
CHECK_SAMPLES = 256


@dataclass(frozen=True)
class Finding:
    """One check: its ``name``, ``verdict`` (ok, warn, fail, skip), what it ``found`` and the
    ``fix`` (empty when none is needed)."""

    name: str
    verdict: str
    found: str
    fix: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


def _finite(problem: Problem) -> tuple[Finding, float | None]:
    bad = [n for n, t in problem.params.items() if not torch.isfinite(t).all()]
    if bad:
        return Finding("finite", "fail", f"non-finite parameters in {', '.join(bad[:3])}",
                       "use a checkpoint from before the run diverged"), None
    try:
        loss = problem.loss_value()
    except NumericalError as e:
        return Finding("finite", "fail", e.message, "use a checkpoint from before the run "
                       "diverged, or check the inputs for NaN"), None
    return Finding("finite", "ok", f"loss {loss:.6g}, parameters finite"), loss


def _data(problem: Problem) -> Finding:
    from .data.source import RandomDataError, check_repeatable

    try:
        check_repeatable(problem.source, min(problem.batch_size, 8))
    except RandomDataError as e:
        return Finding("data", "fail", e.message, "build the loader with shuffle=False and no "
                       "random augmentation: every estimate assumes one fixed loss")
    return Finding("data", "ok", "two reads of the first batch are identical")


def _dropout(problem: Problem, small: Problem) -> Finding:
    drop = [n for n, m in problem.model.named_modules()
            if isinstance(m, torch.nn.modules.dropout._DropoutNd) and m.p > 0]
    a, b = small.loss_value(), small.loss_value()
    if a != b:
        return Finding("dropout", "fail",
                       f"two evaluations of the loss differ ({a:.6g} against {b:.6g})"
                       + (f"; dropout in {', '.join(drop[:3])}" if drop else ""),
                       "measure in eval mode (drop --train-mode) so that dropout is off")
    if drop:
        return Finding("dropout", "ok", f"dropout in {len(drop)} module(s), off in eval mode")
    return Finding("dropout", "ok", "no dropout; the loss is deterministic")


def _batchnorm(problem: Problem, loss: float) -> Finding:
    from .slices.grid import has_batchnorm, values_at

    if not has_batchnorm(problem):
        return Finding("batchnorm", "ok", "no BatchNorm layer")
    if problem.train_mode:
        return Finding("batchnorm", "ok", "train mode: batch statistics, running ones unused")
    fresh = values_at({"train": problem}, problem.theta, recompute_bn_stats=True)["train_loss"]
    gap = abs(loss - fresh) / max(abs(fresh), 1e-12)
    found = (f"loss {loss:.6g} with the stored running statistics, {fresh:.6g} with statistics "
             f"re-estimated on these data ({100 * gap:.3g}% apart)")
    if gap > 0.1:
        return Finding("batchnorm", "fail", found,
                       "the running statistics do not match the data: slice with --recompute-bn, "
                       "or re-estimate them before saving the checkpoint")
    return Finding("batchnorm", "ok", found)


def _precision(small: Problem) -> Finding:
    if small.dtype == torch.float64:
        return Finding("precision", "ok", "float64")
    low = small.loss_value()
    high = small.retyped(torch.float64).loss_value()
    rel = abs(low - high) / max(abs(high), 1e-300)
    name = str(small.dtype).replace("torch.", "")
    found = (f"{name} loss {low:.6g} against float64 {high:.6g} on {small.n} samples "
             f"(relative difference {rel:.2g})")
    if rel > 1e-3:
        return Finding("precision", "fail", found,
                       f"{name} cannot resolve a loss this small: measure with --dtype float64")
    return Finding("precision", "ok", found)


def _minimum(problem: Problem, loss: float, lam: float) -> Finding:
    _, g = problem.gradient()
    gg = float(g.double().square().sum())
    drop = gg / (2 * lam) if lam > 0 else math.inf
    rel = drop / max(abs(loss), 1e-300)
    found = (f"‖g‖ = {math.sqrt(gg):.3g}, λ_max = {lam:.4g}: a gradient step of 1/λ_max lowers "
             f"the loss by at least {drop:.3g} ({100 * rel:.3g}% of it)")
    if rel > 0.01 or lam <= 0:
        return Finding("minimum", "warn", found,
                       "this is no minimum: slices show a slope, and the eigenvalues describe a "
                       "point on the way; train longer for statements about the minimum")
    return Finding("minimum", "ok", found)


def _scale_invariant(small: Problem) -> list[str]:
    """Weight tensors (dim ≥ 2) whose doubling changes the loss by less than 1e-3 relative, with
    BatchNorm statistics that follow the weights (re-estimated at each point, as in training);
    the normalisation's ε keeps them from exact invariance, and doubling any other weight moves
    the loss far more."""
    from .slices.grid import values_at

    def loss(theta: torch.Tensor) -> float:
        return values_at({"train": small}, theta, recompute_bn_stats=True)["train_loss"]

    theta = small.theta
    base = loss(theta)
    out = []
    for i, name in enumerate(small.layout.names):
        if len(small.layout.shapes[i]) < 2:
            continue
        scaled = theta.clone()
        scaled[small.layout.slice(name)] *= 2
        if abs(loss(scaled) - base) <= 1e-3 * max(abs(base), 1e-12):
            out.append(name)
    return out


def _slice_checks(path: Path, problem: Problem, invariant: list[str], lam: float
                  ) -> list[Finding]:
    from .curvature.hessian import Hessian
    from .estimators.directional import rayleigh_quotient
    from .io.hdf5 import read_tree

    data = read_tree(path)
    out = []
    values = {k: torch.as_tensor(v) for k, v in (data.get("values") or {}).items()}
    bad = {k: int((~torch.isfinite(v)).sum()) for k, v in values.items()}
    bad = {k: n for k, n in bad.items() if n}
    if bad:
        out.append(Finding("slice-values", "fail", "non-finite grid values: " + ", ".join(
            f"{n} in {k}" for k, n in bad.items()), "narrow --range: the loss overflows far out"))
    else:
        out.append(Finding("slice-values", "ok", f"{len(values)} value arrays, all finite"))
    d = data.get("directions") or {}
    if d.get("kind") == "random" and d.get("norm") != "filter" and invariant:
        out.append(Finding("slice-normalisation", "fail",
                           f"random directions with {d.get('norm')} normalisation, and "
                           f"{len(invariant)} scale-invariant weight tensor(s) "
                           f"({', '.join(invariant[:2])})",
                           "slice with --norm filter (Li et al.'s filter normalisation)"))
    else:
        out.append(Finding("slice-normalisation", "ok",
                           f"{d.get('kind', '?')} directions, {d.get('norm', '?')} normalisation"))
    ranges = list((data.get("settings") or {}).get("range") or [])
    vectors = d.get("vectors")
    norms = [float(x) for x in torch.as_tensor(d.get("norms", [])).reshape(-1)]
    for i, (lo, hi) in enumerate(ranges):
        r = max(abs(float(lo)), abs(float(hi)))
        size = float(norms[i]) if i < len(norms) else 1.0
        if vectors is not None:
            v = torch.as_tensor(vectors)[:, i]
            kappa, along = rayleigh_quotient(Hessian(problem), v), "along the direction"
        else:
            kappa, along = lam, "λ_max (the directions are not stored)"
        scale = r * size * math.sqrt(abs(kappa)) if kappa else 0.0
        rise = 0.5 * scale**2
        good = 2.0 / (size * math.sqrt(abs(kappa))) if kappa else math.inf
        found = (f"axis {i + 1}: range ±{r:.3g}, ‖d‖ = {size:.3g}, curvature {along} "
                 f"{kappa:.3g}: the quadratic rise at the edge is {rise:.3g}")
        fix = f"set --range {-good:.3g} {good:.3g} (a rise of about 2)"
        if rise < 5e-3:
            out.append(Finding("slice-range", "warn", found + " (too narrow: the picture is "
                               "flat, rounding and noise show)", fix))
        elif rise > 200:
            out.append(Finding("slice-range", "warn", found + " (too wide: the basin is a few "
                               "grid cells)", fix))
        else:
            out.append(Finding("slice-range", "ok", found))
    return out


def diagnose(problem: Problem, slice_file: str | Path | None = None, *, seed: int = 0,
             tol: float = 1e-3) -> list[Finding]:
    """Every check on ``problem`` (and on the slice file, if given): a list of findings."""
    from .curvature.hessian import Hessian
    from .estimators.lanczos import top_eigenvalues

    first, loss = _finite(problem)
    if loss is None:
        return [first]
    findings = [first, _data(problem)]
    if findings[-1].verdict == "fail":
        return findings
    small = problem.subset(CHECK_SAMPLES, seed)
    findings += [_dropout(problem, small), _batchnorm(problem, loss), _precision(small)]
    lam = float(top_eigenvalues(Hessian(problem), k=1, tol=tol, seed=seed).values[0])
    findings.append(_minimum(problem, loss, lam))
    invariant = _scale_invariant(small)
    findings.append(Finding(
        "scale-invariance", "warn" if invariant else "ok",
        (f"{len(invariant)} weight tensor(s) leave the loss unchanged when scaled "
         f"({', '.join(invariant[:3])}): only their direction matters") if invariant
        else "no weight tensor is scale-invariant",
        "compare sharpness across such models only after filter normalisation (slices do it "
        "by default: --norm filter)" if invariant else ""))
    if slice_file is not None:
        findings += _slice_checks(Path(slice_file), problem, invariant, lam)
    return findings


__all__ = ["Finding", "diagnose"]
