"""The lecture's one-dimensional escape examples (implicit-bias-lecture.md, "What affects the
stability of SGD" and "An illustrative example"; docs/algorithms.md §2), as per-sample losses for
:func:`landscape.escape.simulate`.

- :func:`slides_pair`: ``f1 = min(x², 0.1(x−1)²)``, ``f2 = min(x², 1.9(x−1)²)``, ``L = ½(f1 + f2)``,
  printed by the slides both with and without a factor ½; only the version WITHOUT ½ (the default)
  shows the escape (docs/algorithms.md §5). Near ``x = 1``: ``a_1 = f1'' = 0.2``, ``a_2 = 3.8``, so
  GD
  with ``η = 0.7`` multiplies ``x − 1`` by ``1 − 0.7·2 = −0.4`` (stable) while SGD (B = 1)
  multiplies
  ``E(x − 1)²`` by ``(0.86² + 1.66²)/2 ≈ 1.75`` (it leaves).
- :func:`quadratic_family`: ``f(x) = (1/2n) Σ_i a_i x²`` (slides eq. 2), per-sample ``l_i = ½ a_i
x²``,
  for which SGD is ``x_{t+1} = (1 − η ā_{B_t}) x_t`` (eq. 3) and
  ``E x_{t+1}² = [(1 − ηa)² + η² (n−B)/(B(n−1)) s²] E x_t²`` (eq. 5; eq. 6 for batch B) exactly,
  with sharpness ``a = mean a_i`` and non-uniformity ``s = sqrt(mean a_i² − a²)``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from ..errors import ConfigError
from .engine import FlatObjective


def slides_pair(half: bool = False, dtype: torch.dtype = torch.float64) -> FlatObjective:
    """``l_1 = min(x², 0.1(x−1)²)``, ``l_2 = min(x², 1.9(x−1)²)`` (``half=True``: both times ½),
    n = 2 samples, p = 1; ``x = 0`` and ``x = 1`` are global minima.

    >>> f = slides_pair()
    >>> at = lambda x: torch.tensor([x], dtype=torch.float64)
    >>> f.loss(at(1.0)), round(f.loss(at(0.9)), 6)
    (0.0, 0.01)
    """
    c = torch.tensor([0.1, 1.9], dtype=dtype)
    k = 0.5 if half else 1.0

    def fn(theta: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        x = theta[0]
        return k * torch.minimum(x * x, c[idx] * (x - 1) ** 2)

    return FlatObjective(fn, n=2, p=1, dtype=dtype,
                         name="slides-pair-half" if half else "slides-pair")


def quadratic_family(a: Sequence[float], dtype: torch.dtype = torch.float64) -> FlatObjective:
    """``l_i(x) = ½ a_i x²``, ``L = (1/2n) Σ a_i x²`` (slides eq. 2), ``a_i ≥ 0``."""
    at = torch.as_tensor(a, dtype=dtype).reshape(-1)
    if at.numel() < 1 or bool((at < 0).any()):
        raise ConfigError("the quadratic family needs a_i ≥ 0", "pass non-negative curvatures")

    def fn(theta: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        return 0.5 * at[idx] * theta[0] ** 2

    return FlatObjective(fn, n=at.numel(), p=1, dtype=dtype, name="quadratic-family")


def sharpness_nonuniformity(a: Sequence[float]) -> tuple[float, float]:
    """``(a, s) = (mean a_i, sqrt(mean a_i² − a²))``: the slides' sharpness and non-uniformity."""
    at = torch.as_tensor(a, dtype=torch.float64).reshape(-1)
    mean = float(at.mean())
    return mean, math.sqrt(max(float((at * at).mean()) - mean * mean, 0.0))


def second_moment_factor(a: Sequence[float], lr: float, batch_size: int = 1) -> float:
    """``(1 − ηa)² + η² (n−B)/(B(n−1)) s²``: the exact factor ``E x_{t+1}² / E x_t²`` of SGD with
    batch B drawn without replacement on the quadratic family (slides eqs. 5-6). SGD is stable at
    ``x* = 0`` iff it is ≤ 1 (eq. 6)."""
    n = len(a)
    mean, s = sharpness_nonuniformity(a)
    c = 0.0 if n <= 1 else (n - batch_size) / (batch_size * (n - 1))
    return (1 - lr * mean) ** 2 + lr * lr * c * s * s


def quadratic_gamma0(a: Sequence[float], lr: float, batch_size: int = 1) -> float:
    """Theorem 4's ``γ_0 = η² μ c_B ‖H‖_F²`` for the quadratic family, minibatches drawn without
    replacement: ``H = G = a`` and ``Σ = s² x²``, ``L = a x²/2``, so ``μ = tr(ΣG)/(2L‖G‖_F²) =
    s²/a²`` and ``γ_0 = η² c_B s²``, exactly the noise term of eq. 5 (with ``c_B =
    (n−B)/(B(n−1))``)."""
    from ..metrics.stability import sgd_noise_factor

    _, s = sharpness_nonuniformity(a)
    return lr * lr * sgd_noise_factor(len(a), batch_size) * s * s


def slides_pair_curvatures() -> list[float]:
    """``[f1'', f2'']`` at ``x = 1`` of :func:`slides_pair` (without ½): ``[0.2, 3.8]``; near
    ``x = 1`` the pair is the quadratic family with ``l_i ≈ ½ a_i (x − 1)²``."""
    return [0.2, 3.8]
