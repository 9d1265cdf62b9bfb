"""What a measurement will cost, before it runs: ``landscape sharpness --plan`` and
``landscape info --plan``.

From the Hessian's product plan (one timed calibration batch, see
:class:`~landscape.curvature.base.Plan`) and each metric's number of products, it predicts the
peak memory beyond what the model and data already hold, and the time.

Time of one pass of ``k`` vectors over ``n`` samples: ``n (t_setup + k t_vector)`` with the
calibration's per-sample times; a batch whose gradient graph is cached pays no ``t_setup`` (passes
of ``CACHED_BLOCK`` or more vectors use the cache only when the plan allows, ``Plan.wide_cache``).
Lanczos' product count is not known in advance: it is shown as a typical count for k wanted
eigenvalues at the default tolerance (:func:`eig_products`) and its cap.
"""

from __future__ import annotations

import math

import torch

from ..curvature.base import CACHED_BLOCK
from ..curvature.hessian import Hessian
from ..estimators.lanczos import _BASIS_CAP, basis_placement
from ..memory import fmt_bytes
from ..problem import Problem
from . import METRICS, Settings


def _products(name: str, s: Settings, p: int) -> tuple[int, str]:
    """(products expected, how the number is known) for metric ``name``."""
    if name in ("trace", "frobenius"):
        return s.probes, "exact"
    if name == "density":
        return s.runs * min(s.steps, p), "exact"
    if name == "eig":
        cap = s.max_steps or max(1000, 10 * _BASIS_CAP)
        return eig_products(s, p), f"typical (stops at tol {s.tol:g}; at most {cap})"
    cost = METRICS[name].cost(s)
    return int(cost or 0), "loss or gradient passes, no Hessian products"


def eig_products(s: Settings, p: int) -> int:
    """Typical products of ``eig`` for the ``k`` extreme eigenvalues at each wanted end, measured
    on the digits MLP and CNN, a BatchNorm CNN and ResNet-18. At the top, single-vector Lanczos
    takes about ``10 + 3k`` steps (block Lanczos ``max(10 + 3k, 9k)``) and the default's check for
    missed copies about 10 more (7-13 measured). The bottom of a trained network's spectrum is a
    dense cluster near zero: about ``40k`` steps (``50k`` in blocks) and a check of about ``12k``
    (38-96 measured for k = 5); with both ends the bottom sets the length of the one run. Then
    one product per returned pair for its true residual."""
    k = s.top_k
    block = s.eig_block or 1
    top, bottom = (10 + 3 * k, 40 * k) if block == 1 else (max(10 + 3 * k, 9 * k), 50 * k)
    checked = s.eig_block is None and k > 1
    if s.which == "top":
        steps, check, pairs = top, 10, k
    elif s.which == "bottom":
        steps, check, pairs = bottom, 12 * k, k
    else:
        steps, check, pairs = bottom, 10 + 12 * k, 2 * k
    return min(p, steps) + pairs + (check if checked else 0)


def estimate(problem: Problem, names: list[str], settings: Settings,
             op: Hessian | None = None) -> dict:
    """``{p, n, data, budget, products: plan, metrics: {name: {products, passes, seconds, memory}},
    seconds, peak_bytes}`` for the Hessian metrics ``names`` on ``problem``."""
    op = op or Hessian(problem)
    plan = op.plan()
    n, p = problem.n, problem.p
    item = torch.empty(0, dtype=problem.dtype).element_size()
    t_setup, t_vec = op.timing()
    graph_bytes = plan.fixed * n  # all batches' graphs
    cached = min(1.0, plan.cache / graph_bytes) if graph_bytes > 0 else 1.0
    working = plan.working(p_bytes=p * item)
    rows = {}
    total_s = 0.0
    peak = working
    for name in names:
        prods, how = _products(name, settings, p)
        extra = 0
        width = plan.block
        if name == "eig":
            where, vectors, _ = basis_placement(
                op, _BASIS_CAP, 8, min(p, 2 * settings.top_k + 10, 20)
            )
            extra = vectors * p * 8 if where == problem.device else 0
            width = max(1, settings.eig_block or 1)
            k = settings.top_k * (2 if settings.which == "both" else 1)
            # one block of vectors per pass, then one pass for the k true residuals
            passes = math.ceil(max(prods - k, 0) / width) + 1
        elif name == "density":
            per_run = min(settings.steps, p) * p * item
            lock = max(1, min(settings.runs, int((op.memory or per_run) // per_run)))
            extra = lock * per_run
            passes = math.ceil(settings.runs / lock) * min(settings.steps, p)
        else:
            passes = math.ceil(prods / max(1, plan.block)) if prods else 0
            extra = 3 * min(prods, plan.block) * p * item if prods else 0
        hessian = name in ("trace", "frobenius", "eig", "density")
        kept = cached if plan.keeps(width) and passes > 1 else 0.0  # a last pass keeps none
        secs = (n * (passes * t_setup * (1 - kept) + prods * t_vec)) if hessian else None
        rows[name] = {"products": prods, "how": how, "passes": passes, "seconds": secs,
                      "memory_bytes": extra}
        total_s += secs or 0.0
        peak = max(peak, working + (min(plan.cache, graph_bytes) if kept else 0) + extra)
    return {"p": p, "n": n, "dtype": str(problem.dtype).replace("torch.", ""),
            "device": str(problem.device),
            "data": problem.data_report(), "budget": str(problem.budget),
            "products": op.plan_report(),
            "calibration": {"seconds_per_sample_vector": t_vec, "setup_seconds_per_sample": t_setup,
                            "graph_bytes_per_sample": plan.fixed, "graphs_cached_fraction": cached,
                            "wide_passes_cache": plan.wide_cache, "wide_width": CACHED_BLOCK},
            "metrics": rows, "seconds": total_s, "peak_bytes": int(peak), "peak": fmt_bytes(peak)}
