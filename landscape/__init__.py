"""landscape: the geometry of a neural network's loss landscape, from its checkpoints.

>>> import landscape
>>> H = landscape.Hessian(model, "cross-entropy", (X, Y), batch_size=256)   # doctest: +SKIP
>>> landscape.trace(H, probes=200, method="hutchpp")                        # doctest: +SKIP
>>> landscape.top_eigenvalues(H, k=5, which="both", tol=1e-6)               # doctest: +SKIP

The names below are imported on first use (PEP 562), so that ``import landscape`` and the CLI's
``--help`` do not import torch.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from .lazy import exports

try:
    __version__ = version("landscape")
except PackageNotFoundError:  # run from a source tree that is not installed
    __version__ = "0+unknown"

#: public name -> the module that defines it
_EXPORTS = {
    "DenseOperator": "curvature", "Hessian": "curvature", "LinearOperator": "curvature",
    "EmpiricalFisher": "curvature.fisher", "Fisher": "curvature.fisher", "GGN": "curvature.ggn",
    "NoiseCovariance": "curvature.noise", "NonUniformity": "curvature.noise",
    "LandscapeError": "errors",
    "frobenius": "estimators", "frobenius_inner": "estimators", "spectral_density": "estimators",
    "top_eigenvalues": "estimators", "trace": "estimators", "alignment": "estimators.alignment",
    "Problem": "problem", "Density": "results", "Eigen": "results", "Estimate": "results",
    "Checkpoint": "io.checkpoint", "load": "io.checkpoint",
}

__all__ = [
    "GGN",
    "Checkpoint",
    "DenseOperator",
    "Density",
    "Eigen",
    "EmpiricalFisher",
    "Estimate",
    "Fisher",
    "Hessian",
    "LandscapeError",
    "LinearOperator",
    "NoiseCovariance",
    "NonUniformity",
    "Problem",
    "alignment",
    "frobenius",
    "frobenius_inner",
    "load",
    "spectral_density",
    "top_eigenvalues",
    "trace"
]


__getattr__, __dir__ = exports(__name__, _EXPORTS)
