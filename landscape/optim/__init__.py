"""Sharpness-aware optimizers as drop-in ``torch.optim.Optimizer`` wrappers.

Pure rules (``rules.py``: ``sam_eps``, ``asam_eps``, ``fisher_sam_eps``, ``rsam_eps``, ``vsam_eps``,
TRACER's penalty pieces, the covariance-noise scale, ...) and one stateful mechanism
(``wrapper.SharpnessAware``: two passes, exact restore, BatchNorm buffers, base optimizer state in
``state_dict``). ``build_optimizer(name, params, ...)`` builds any member of ``OPTIMIZERS``.

Two-line change from plain PyTorch::

    opt = build_optimizer("sam", model.parameters(), lr=0.1, rho=0.05, model=model)
    ...
    opt.step(lambda: F.cross_entropy(model(x), y))   # or PyTorch's closure that calls backward()

Closure conventions: see :mod:`landscape.optim.wrapper` (G-TRACER needs the loss closure,
:mod:`landscape.optim.tracer`; the covariance-noise optimizers need the batch,
:mod:`landscape.optim.noise`).
"""

from __future__ import annotations

from . import rules
from .base import GD, SGD
from .noise import CovarianceNoise, LBDiagNoise, LBFullNoise
from .registry import BASE_DEFAULTS, OPTIMIZERS, build_optimizer, hyperparameters
from .sam import ASAM, SAM, FisherSAM
from .tracer import AdamTracer, SGDTracer, Tracer
from .variational import MFVI, RandomSAM, VariationalSAM
from .wrapper import SharpnessAware

__all__ = [
    "ASAM",
    "BASE_DEFAULTS",
    "GD",
    "MFVI",
    "OPTIMIZERS",
    "SAM",
    "SGD",
    "AdamTracer",
    "CovarianceNoise",
    "FisherSAM",
    "LBDiagNoise",
    "LBFullNoise",
    "RandomSAM",
    "SGDTracer",
    "SharpnessAware",
    "Tracer",
    "VariationalSAM",
    "build_optimizer",
    "hyperparameters",
    "rules",
]
