"""Escape dynamics: many trajectories of SGD-like methods at once from a minimum found by GD,
measured against the lecture's stability theory (implicit-bias-lecture.md, "A stability
perspective" to "Theorem 4"; ALGORITHMS.md §2)."""

from __future__ import annotations

from .engine import (DYNAMICS, Descent, FlatObjective, Objective, ObjectiveHessian, ProblemObjective,
                     Trajectories, as_objective, descend, eval_subset, lambda_max, sgd_noise_factor, simulate,
                     trajectory_seeds)
from .toys import quadratic_family, second_moment_factor, sharpness_nonuniformity, slides_pair

__all__ = ["DYNAMICS", "Descent", "FlatObjective", "Objective", "ObjectiveHessian", "ProblemObjective",
           "Trajectories", "as_objective", "descend", "eval_subset", "lambda_max", "sgd_noise_factor",
           "simulate", "trajectory_seeds", "quadratic_family", "second_moment_factor",
           "sharpness_nonuniformity", "slides_pair"]
