"""Loss-surface slices (Li et al. 2018) and checkpoint interpolation (Keskar et al. 2017).

``make_directions(kind, problem, dims)`` builds the directions; ``evaluate_grid`` evaluates loss
and accuracy on a 1-D or 2-D grid, several parameter points per vmapped forward pass;
``interpolate`` evaluates ``L((1 − α) θ_A + α θ_B)``; ``compute_slice`` does a whole slice
(directions, default ranges, grid, origin, file tree).
"""

from __future__ import annotations

from ..lazy import exports

__all__ = [
    "KINDS",
    "NORMS",
    "Directions",
    "GridResult",
    "Interpolation",
    "PointEvaluator",
    "SliceRun",
    "axis",
    "check_same_architecture",
    "check_same_model",
    "checkpoint_directions",
    "compute_slice",
    "default_ranges",
    "eigen_directions",
    "evaluate_grid",
    "grid_coordinates",
    "interpolate",
    "interpolate_checkpoints",
    "make_directions",
    "normalize",
    "pca_directions",
    "random_directions",
    "recompute_bn",
    "run_checkpoints",
    "run_slice",
    "theta_from_state",
    "value_rows",
]
__getattr__, __dir__ = exports(__name__, {
    **dict.fromkeys(["KINDS", "NORMS", "Directions", "checkpoint_directions",
                     "eigen_directions", "make_directions", "normalize", "pca_directions",
                     "random_directions", "run_checkpoints", "theta_from_state"], "directions"),
    **dict.fromkeys(["GridResult", "PointEvaluator", "axis", "evaluate_grid",
                     "grid_coordinates", "recompute_bn"], "grid"),
    **dict.fromkeys(["SliceRun", "compute_slice", "default_ranges", "run_slice", "value_rows"],
                    "run"),
    **dict.fromkeys(["Interpolation", "check_same_architecture", "check_same_model",
                     "interpolate", "interpolate_checkpoints"], "line"),
})
