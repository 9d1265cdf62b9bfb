"""Escape dynamics: many trajectories of SGD-like methods at once from a minimum found by GD,
measured against the lecture's stability theory (implicit-bias-lecture.md, "A stability
perspective" to "Theorem 4"; docs/algorithms.md §2).

>>> import torch
>>> from landscape.escape import simulate, slides_pair, summarize
>>> run = simulate(slides_pair(), torch.tensor([1 - 1e-5], dtype=torch.float64), "sgd", lr=0.7,
...                batch_size=1, steps=100, trajectories=20, seed=0)
>>> summarize(run, escape_factor=10).fraction_escaped
1.0
"""

from __future__ import annotations

from ..lazy import exports

__all__ = [
    "DYNAMICS", "Descent", "EscapeSummary", "FlatObjective", "GrowthFit", "Objective",
    "ObjectiveHessian", "ProblemObjective", "Trajectories", "alignment_bound", "as_objective",
    "descend", "escape_steps", "eval_subset", "gamma0", "growth_rate", "lambda_max",
    "minimum_stats", "predicted_growth", "problem_at", "quadratic_family", "quadratic_gamma0",
    "second_moment_factor", "sgd_noise_factor", "sharpness_nonuniformity", "simulate",
    "slides_pair", "summarize", "trajectory_seeds"
]
__getattr__, __dir__ = exports(__name__, {
    **dict.fromkeys(["DYNAMICS", "Descent", "FlatObjective", "Objective", "ObjectiveHessian",
                     "ProblemObjective", "Trajectories", "as_objective", "descend",
                     "eval_subset", "lambda_max", "simulate", "trajectory_seeds"], "engine"),
    **dict.fromkeys(["EscapeSummary", "GrowthFit", "escape_steps", "growth_rate",
                     "minimum_stats", "predicted_growth", "problem_at", "summarize"], "analysis"),
    **dict.fromkeys(["alignment_bound", "gamma0", "sgd_noise_factor"], ".metrics.stability"),
    **dict.fromkeys(["quadratic_family", "quadratic_gamma0", "second_moment_factor",
                     "sharpness_nonuniformity", "slides_pair"], "toys"),
})
