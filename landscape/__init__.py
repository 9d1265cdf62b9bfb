"""landscape: the geometry of a neural network's loss landscape, from its checkpoints.

>>> import landscape
>>> H = landscape.Hessian(model, "cross-entropy", (X, Y), batch_size=256)   # doctest: +SKIP
>>> landscape.trace(H, probes=200, method="hutchpp")                        # doctest: +SKIP
>>> landscape.top_eigenvalues(H, k=5, which="both", tol=1e-6)               # doctest: +SKIP
"""

from .curvature import DenseOperator, Hessian, LinearOperator
from .curvature.fisher import EmpiricalFisher, Fisher
from .curvature.ggn import GGN
from .curvature.noise import NoiseCovariance, NonUniformity
from .errors import LandscapeError
from .estimators import frobenius, frobenius_inner, spectral_density, top_eigenvalues, trace
from .estimators.alignment import alignment
from .problem import Problem
from .results import Density, Eigen, Estimate

__version__ = "0.1.0"

__all__ = [
           "GGN",
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
           "spectral_density",
           "top_eigenvalues",
           "trace",
]
