"""Run registered metrics on a problem: the whole library behind ``landscape sharpness``."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from ..curvature.hessian import Hessian
from ..curvature.operator import LinearOperator, Restricted
from ..problem import Problem
from ..results import Eigen, Table
from . import METRICS, Metric, Settings


class Counted(LinearOperator):
    """An operator that reports each block product to ``on_product(k)`` (progress bars)."""

    def __init__(self, op: LinearOperator, on_product: Callable[[int], None]) -> None:
        super().__init__(op.shape[0], op.dtype, op.device)
        self.op, self.on_product = op, on_product
        self.block_size = op.block_size
        self.memory = op.memory

    def _matmat(self, V):
        out = self.op.matmat(V)
        self.on_product(V.shape[1])
        return out


def measure(
    problem: Problem,
    metrics: list[str],
    settings: Settings,
    *,
    operator: Callable[[Problem], LinearOperator] = Hessian,
    registry: dict[str, Metric] = METRICS,
    on_start: Callable[[str, int | None], None] | None = None,
    on_product: Callable[[int], None] | None = None,
) -> dict:
    """``{metric key: result}`` for the problem's operator (the Hessian by default)."""
    op = operator(problem)
    results = {}
    for name in metrics:
        m = registry[name]
        if on_start:
            on_start(name, m.cost(settings))
        target = Counted(op, on_product) if on_product else op
        results[m.key] = m.compute(target, settings)
    return results


def layer_problems(problem: Problem) -> dict[str, Problem]:
    """One sub-problem per layer (parameters grouped by module name)."""
    return {layer: problem.restrict("^(" + "|".join(re.escape(n) for n in names) + ")$")
            for layer, names in problem.layout.groups().items()}


def layer_operators(problem: Problem,
                    operator: Callable[[Problem], LinearOperator] = Hessian
                    ) -> dict[str, LinearOperator]:
    """The diagonal blocks of ``operator`` by layer, as in Zhang et al. 2024 ("Why Transformers
    Need Adam: A Hessian Perspective", §3): one per module, except that a fused attention input
    projection is cut into its query, key and value blocks (GPT-2's ``c_attn``, a ``Conv1D``
    whose output columns are ``[q | k | v]``; ``nn.MultiheadAttention``'s ``in_proj_weight``,
    whose rows are). Every block of one module shares that module's operator."""
    modules = dict(problem.model.named_modules())
    out: dict[str, LinearOperator] = {}
    for layer, sub in layer_problems(problem).items():
        op = operator(sub)
        split = _qkv_indices(modules.get(layer), layer, sub)
        if split is None:
            out[layer] = op
            continue
        for part, idx in split.items():
            out[f"{layer}.{part}"] = Restricted(op, idx)
    return out


def measure_blocks(
    problem: Problem,
    metrics: list[str],
    settings: Settings,
    *,
    on_start: Callable[[str, int | None, str], None] | None = None,
    on_product: Callable[[int], None] | None = None,
) -> tuple[dict[str, LinearOperator], dict[str, dict]]:
    """The metrics on every diagonal block of the Hessian (:func:`layer_operators`):
    ``(operators, {block: {metric key: result}})``; ``on_start(metric, cost, block)``."""
    operators = layer_operators(problem)
    results = {}
    for block, op in operators.items():
        start = (lambda n, t, b=block: on_start(n, t, b)) if on_start else None
        results[block] = measure(problem, metrics, settings, operator=lambda _pb, op=op: op,
                                 on_start=start, on_product=on_product)
    return operators, results


def blocks_report(operators: dict[str, LinearOperator], results: dict[str, dict]) -> dict:
    """``{"layers": {block: {"params", "metrics"}}, "blocks": block_spread(...)}``: what
    ``sharpness --per-layer`` reports and a study's per-layer item stores."""
    layers = {block: {"params": op.shape[0],
                      "metrics": {k: r.to_dict() for k, r in results[block].items()}}
              for block, op in operators.items()}
    return {"layers": layers, "blocks": block_spread(layers)}


def products_report(op: LinearOperator) -> dict:
    """How an operator's products ran: the plan (batch, block, vmap), its changes, the cached
    state, the budget, and the data path (streamed or resident)."""
    out = op.plan_report() if hasattr(op, "plan_report") else {}
    if hasattr(op, "cache_report"):
        out.update(op.cache_report())
    return out


@dataclass
class Sharpness:
    """What :func:`sharpness` measured: per operator (``""``: the whole Hessian; else one per
    diagonal block, ``per_layer``) the operator and ``{metric key: result}``."""

    names: list[str]
    per_layer: bool
    operators: dict[str, LinearOperator]
    results: dict[str, dict]

    def report(self) -> dict:
        """``products`` and ``metrics`` (or ``layers`` and ``blocks``), as ``--json`` has them."""
        out = {"products": products_report(next(iter(self.operators.values())))}
        if self.per_layer:
            return {**out, **blocks_report(self.operators, self.results)}
        return {**out, "metrics": {k: r.to_dict() for k, r in self.results[""].items()}}

    def ritz(self) -> Eigen | None:
        """The whole Hessian's eigenvalues when they came with their Ritz vectors."""
        eig = self.results.get("", {}).get("eigenvalues")
        return eig if eig is not None and eig.vectors is not None else None

    def figure(self, path) -> None:
        """The spectral density (one panel per block with ``per_layer``)."""
        from ..io.figures import blocks_density_figure, density_figure, save

        save(blocks_density_figure({b: r["density"] for b, r in self.results.items()})
             if self.per_layer else density_figure(self.results[""]["density"]), path)

    def table(self, title: str) -> Table:
        """One row per metric's quantity (per block with ``per_layer``)."""
        rows = [((block,) if self.per_layer else ()) + row
                for block, res in self.results.items() for name in self.names
                for row in METRICS[name].rows(res[METRICS[name].key])]
        cols = ["quantity", "value", "± stderr / note", "products"]
        return Table(title, (["layer"] if self.per_layer else []) + cols, rows)

    def spread_lines(self, report: dict) -> list[str]:
        """How λ_max and tr(H) vary across the blocks, one line each."""
        lines = []
        for name, sp in (report.get("blocks") or {}).items():
            label = {"lambda_max": "λ_max", "trace": "tr(H)"}[name]
            ratio = f", ratio {sp['ratio']:.3g}" if sp["ratio"] else ""
            cv = f", coefficient of variation {sp['cv']:.3g}" if sp["cv"] is not None else ""
            lines.append(f"blocks: {label} from {sp['min']:.4g} ({sp['min_block']}) to "
                         f"{sp['max']:.4g} ({sp['max_block']}){ratio}{cv}")
        return lines


def sharpness(problem: Problem, names: list[str], settings: Settings, *, per_layer: bool = False,
              on_start: Callable[[str, int | None, str], None] | None = None,
              on_product: Callable[[int], None] | None = None) -> Sharpness:
    """The metrics ``names`` of the problem's Hessian, or of each of its diagonal blocks
    (``per_layer``): ``landscape sharpness``. ``on_start(metric, cost, block)``."""
    if per_layer:
        operators, results = measure_blocks(problem, names, settings, on_start=on_start,
                                            on_product=on_product)
    else:
        operators = {"": Hessian(problem)}
        start = (lambda n, t: on_start(n, t, "")) if on_start else None
        results = {"": measure(problem, names, settings, operator=lambda _pb: operators[""],
                               on_start=start, on_product=on_product)}
    return Sharpness(names, per_layer, operators, results)


def block_spread(layers: dict[str, dict]) -> dict[str, dict]:
    """How the blocks differ (the heterogeneity Zhang et al. 2024 relate to Adam's advantage):
    for λ_max and tr(H) of ``{block: {"metrics": ...}}``, the largest and smallest block, their
    ratio and the coefficient of variation (standard deviation / mean) across blocks."""
    values: dict[str, dict[str, float]] = {"lambda_max": {}, "trace": {}}
    for block, rec in layers.items():
        m = rec.get("metrics", {})
        if "eigenvalues" in m and m["eigenvalues"].get("which") in ("top", "both"):
            values["lambda_max"][block] = float(m["eigenvalues"]["values"][0])
        if "trace" in m:
            values["trace"][block] = float(m["trace"]["estimate"])
    out = {}
    for name, v in values.items():
        if len(v) < 2:
            continue
        t = torch.tensor(list(v.values()), dtype=torch.float64)
        hi, lo = max(v, key=v.get), min(v, key=v.get)
        out[name] = {"max": v[hi], "max_block": hi, "min": v[lo], "min_block": lo,
                     "ratio": v[hi] / v[lo] if v[lo] > 0 else None,
                     "cv": float(t.std() / t.mean().abs()) if float(t.mean()) else None}
    return out


def _qkv_indices(module, layer: str, sub: Problem) -> dict[str, torch.Tensor] | None:
    """``{"q", "k", "v"[, "rest"]}`` coordinates of a fused projection's sub-problem, or None."""
    names = sub.layout.names
    if type(module).__name__ == "Conv1D" and layer.endswith("c_attn"):
        keys = {f"{layer}.weight": 1, f"{layer}.bias": 0}  # the axis of q | k | v
    elif isinstance(module, torch.nn.MultiheadAttention) and module._qkv_same_embed_dim:
        keys = {f"{layer}.in_proj_weight": 0, f"{layer}.in_proj_bias": 0}
    else:
        return None
    parts: dict[str, list[torch.Tensor]] = {"q": [], "k": [], "v": [], "rest": []}
    for i, name in enumerate(names):
        shape, start = sub.layout.shapes[i], sub.layout.offsets[i]
        flat = torch.arange(start, start + shape.numel()).reshape(shape)
        dim = keys.get(name)
        if dim is None or shape[dim] % 3:
            parts["rest"].append(flat.reshape(-1))
            continue
        for part, piece in zip("qkv", flat.chunk(3, dim=dim)):
            parts[part].append(piece.reshape(-1))
    return {k: torch.cat(v) for k, v in parts.items() if v}


def timed(fn, *args, **kwargs):
    t = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - t
