"""The optimizer registry: name -> class, and :func:`build_optimizer`.

Adding an optimizer = a rule in ``rules.py``, a small subclass of
:class:`~landscape.optim.wrapper.SharpnessAware`, and one line here; ``tests/test_optim.py``
parametrizes its contract test over this dict.
"""

from __future__ import annotations

import inspect
from typing import Any

from ..errors import ConfigError
from .base import GD, SGD
from .noise import LBDiagNoise, LBFullNoise
from .sam import ASAM, SAM, FisherSAM
from .tracer import AdamTracer, SGDTracer
from .variational import MFVI, RandomSAM, VariationalSAM
from .wrapper import BASES, SharpnessAware

OPTIMIZERS: dict[str, type[SharpnessAware]] = {
    "gd": GD,
    "sgd": SGD,
    "sam": SAM,
    "asam": ASAM,
    "fsam": FisherSAM,
    "sgd-tracer": SGDTracer,
    "adam-tracer": AdamTracer,
    "rsam": RandomSAM,
    "mfvi": MFVI,
    "vsam": VariationalSAM,
    "lb-diag-noise": LBDiagNoise,
    "lb-full-noise": LBFullNoise,
}

#: Default learning rate and momentum of each base (momentum 0 for ``gd``: plain gradient descent).
BASE_DEFAULTS: dict[str, dict[str, Any]] = {
    "sgd": {"lr": 0.1, "momentum": 0.9},
    "adam": {"lr": 1e-3},
    "adamw": {"lr": 1e-3},
}

_COMMON = {"model", "seed"}


def hyperparameters(name: str) -> dict[str, Any]:
    """The optimizer's own settings and their defaults (``inspect.Parameter.empty``: required
    in effect, or ``None`` where the class checks it)."""
    cls = _get(name)
    out: dict[str, Any] = {}
    for klass in reversed(cls.__mro__):
        if "__init__" not in klass.__dict__ or not issubclass(klass, SharpnessAware):
            continue
        for pname, par in inspect.signature(klass.__init__).parameters.items():
            if par.kind is inspect.Parameter.KEYWORD_ONLY:
                out[pname] = par.default
    return out


def _get(name: str) -> type[SharpnessAware]:
    key = name.lower().replace("_", "-")
    if key not in OPTIMIZERS:
        raise ConfigError(f"unknown optimizer {name!r}", f"choose one of {', '.join(OPTIMIZERS)}")
    return OPTIMIZERS[key]


def build_optimizer(
    name: str,
    params,
    base: str | None = None,
    lr: float | None = None,
    momentum: float | None = None,
    weight_decay: float = 0.0,
    **hyper: Any,
) -> SharpnessAware:
    """Build the optimizer ``name`` of :data:`OPTIMIZERS` around a base optimizer.

    Args:
        name: a key of :data:`OPTIMIZERS`.
        params: the parameters (or parameter groups) to optimize.
        base: ``"sgd"`` (default; torch SGD) or ``"adam"`` (``"adamw"`` also works);
            ``adam-tracer`` runs on Adam and ``sgd-tracer`` on SGD.
        lr: learning rate (default 0.1 for SGD, 1e-3 for Adam).
        momentum: SGD momentum (default 0.9; 0 for ``gd``); not for Adam (use ``betas=``).
        weight_decay: applied once, by the base optimizer.
        **hyper: the optimizer's own settings (:func:`hyperparameters`, e.g. ``rho=0.05``,
            ``model=model``, ``num_data=n``) and further base settings (``nesterov``, ``betas``).
    """
    cls = _get(name)
    default_base = getattr(cls, "default_base", "sgd")
    base = (base or default_base).lower()
    if base not in BASES:
        raise ConfigError(f"unknown base optimizer {base!r}", f"choose one of {', '.join(BASES)}")
    if hasattr(cls, "default_base") and base != default_base:
        raise ConfigError(
            f"{cls.name} runs on the {default_base} base, not {base!r}",
            f"use {base}-tracer" if base in ("sgd", "adam") else "use sgd-tracer or adam-tracer",
        )
    base_kwargs: dict[str, Any] = dict(BASE_DEFAULTS[base])
    if lr is not None:
        base_kwargs["lr"] = lr
    if base == "sgd":
        if momentum is not None:
            base_kwargs["momentum"] = momentum
        elif cls is GD:
            base_kwargs["momentum"] = 0.0
    elif momentum is not None:
        raise ConfigError(f"momentum is an SGD setting; the {base} base takes betas=",
                          "pass betas=(0.9, 0.999) for Adam")
    base_kwargs["weight_decay"] = weight_decay
    own = set(hyperparameters(cls.name)) | _COMMON
    for k, v in hyper.items():
        if k in own:
            continue
        base_kwargs[k] = v
    wrapper_kwargs = {k: v for k, v in hyper.items() if k in own}
    base_cls = BASES[base]
    accepted = set(inspect.signature(base_cls.__init__).parameters) - {"self", "params"}
    unknown = sorted(set(base_kwargs) - accepted)
    if unknown:
        raise ConfigError(f"{cls.name} does not take {', '.join(unknown)}",
                          f"its settings: {', '.join(sorted(own))}; the {base} base's: "
                          f"{', '.join(sorted(accepted))}")
    return cls(params, base=base, **wrapper_kwargs, **base_kwargs)
