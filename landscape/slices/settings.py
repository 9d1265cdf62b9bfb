"""The settings of a loss slice, declared once: the flags of ``landscape slice`` and the keys of
a study file's ``[slices.NAME]`` tables both follow from :data:`SLICE`, and :func:`check_slice`
is the cross-field check both run. Torch-free."""

from __future__ import annotations

from ..schema import Option, choice, integer, positive

SLICE: dict[str, Option] = {
    "dims": Option("choice", 1, choices=(1, 2), help="1 (a line) or 2 (a plane)."),
    "directions": choice("random", "eigen", "pca", "checkpoints",
                         help="random (Gaussian, normalised), eigen (top Hessian eigenvectors), "
                              "pca (of --trajectory RUN), checkpoints (toward --toward files)."),
    "norm": Option("choice", None, choices=("filter", "layer", "none"),
                   help="Random directions: filter (Li et al.: per output unit / channel), layer "
                        "(per tensor) or none. Default filter."),
    "include_bias_bn": Option("bool", False, help="Random directions also move biases and "
                                                  "normalisation parameters (default: zero "
                                                  "there)."),
    "range": Option("range", help="LO HI of each axis (default -1 1; pca: the trajectory's "
                                  "extent; checkpoints: -0.5 1.5)."),
    "points": integer(2, help="Grid points per axis (default 51 in 1-D, 31 in 2-D)."),
    "batch_points": integer(1, help="Parameter points per vmapped forward pass (memory grows with "
                                    "it). Default: about 16384 sample-rows per pass (points x "
                                    "--product-batch), at most 64 points."),
    "recompute_bn": Option("bool", False, help="Re-estimate BatchNorm running statistics at every "
                                               "grid point from the training data (one extra pass "
                                               "per point: slower)."),
    "test": Option("bool", True, help="Also evaluate the test split where the checkpoint's data "
                                      "have one."),
    "tol": positive(1e-6, "Eigen directions: Lanczos relative residual tolerance."),
    "trajectory": Option("path", help="Run directory (landscape train --out) whose checkpoints "
                                      "give the PCA plane, or several, comma-separated, for one "
                                      "plane of all their paths (in a study: \"run\", the "
                                      "checkpoint's own)."),
    "toward": Option("paths", help="Checkpoint(s) spanning --directions checkpoints (one per "
                                   "dimension; each at coordinate 1)."),
    "save_directions": Option("bool", False, help="Store the [p, k] direction vectors in the "
                                                  "output."),
}


def check_slice(s: dict) -> list[tuple[str, str]]:
    """The settings that contradict each other: ``[(key, message)]``."""
    bad = []
    d, dims = s["directions"], s["dims"]
    if s.get("norm") is not None and d != "random":
        bad.append(("norm", f"norm applies to random directions, not {d}"))
    if d == "pca" and not s.get("trajectory"):
        bad.append(("directions", ('directions "pca" needs trajectory (--trajectory RUN-DIR; in '
                                   'a study file trajectory = "RUN-DIR", or "run" for the '
                                   "checkpoint's run)")))
    if d != "pca" and s.get("trajectory"):
        bad.append(("trajectory", 'trajectory is for directions = "pca"'))
    if d == "checkpoints" and len(s.get("toward") or []) != dims:
        bad.append(("toward", (f'directions = "checkpoints" with dims = {dims} needs {dims} '
                               "toward checkpoint(s)")))
    if d != "checkpoints" and s.get("toward"):
        bad.append(("toward", 'toward is for directions = "checkpoints"'))
    if s.get("recompute_bn") and s.get("train_mode"):
        bad.append(("recompute_bn", ("recompute_bn re-estimates running statistics for eval "
                                     "mode; drop train_mode")))
    return bad
