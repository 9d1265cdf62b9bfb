"""Randomised and Krylov estimators on any symmetric linear operator (or a dense tensor).

Each takes an object with ``matmat(V[p, k]) -> [p, k]``, ``shape``, ``dtype``, ``device`` and
``matvecs`` (see :mod:`landscape.curvature.operator`), draws its probes from a seeded CPU
``torch.Generator`` and returns a result record with a standard error or residuals and the number of
products used."""

from __future__ import annotations

from landscape.estimators.density import spectral_density
from landscape.estimators.frobenius import frobenius, frobenius_inner
from landscape.estimators.lanczos import LanczosResult, lanczos, top_eigenvalues
from landscape.estimators.sampling import gaussian, make_generator, rademacher
from landscape.estimators.trace import hutchinson_trace, hutchpp_trace, trace

__all__ = [
    "LanczosResult",
    "frobenius",
    "frobenius_inner",
    "gaussian",
    "hutchinson_trace",
    "hutchpp_trace",
    "lanczos",
    "make_generator",
    "rademacher",
    "spectral_density",
    "top_eigenvalues",
    "trace",
]
