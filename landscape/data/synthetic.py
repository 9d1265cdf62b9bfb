"""Generated and shipped datasets: ``digits``, ``gaussian-mixture``, ``teacher-student``,
``parity``.

All randomness comes from a local ``torch.Generator`` seeded with ``seed``.
"""

from __future__ import annotations

import itertools
import math
from typing import Literal

import torch

from landscape.data.split import Split, random_split
from landscape.errors import ConfigError


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(int(seed))


def _positive(name: str, value: int) -> int:
    if int(value) < 1:
        raise ConfigError(f"{name} must be a positive integer, got {value}", f"e.g. {name}=64")
    return int(value)


def _cut(x: torch.Tensor, y: torch.Tensor, n: int) -> tuple[tuple, tuple | None]:
    """First ``n`` rows as train, the rest (if any) as test."""
    train = (x[:n], y[:n])
    test = (x[n:], y[n:]) if x.shape[0] > n else None
    return train, test


def digits(*, test_fraction: float = 0.2, image: bool = False, seed: int = 0) -> Split:
    """scikit-learn's shipped 8x8 handwritten digits (1797 samples, 10 classes; no download).

    Inputs are pixel intensities / 16 in [0, 1], float32 ``[N, 64]`` (``image=True``:
    ``[N, 1, 8, 8]``); labels int64. A seeded ``test_fraction`` of the samples is held out
    (0 keeps all 1797 in train).
    """
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    x = torch.as_tensor(X / 16.0, dtype=torch.float32)
    labels = torch.as_tensor(y, dtype=torch.int64)
    if image:
        x = x.reshape(-1, 1, 8, 8)
    train, test = random_split((x, labels), test_fraction, _gen(seed))
    return Split(
        train,
        test,
        "classification",
        10,
        tuple(x.shape[1:]),
        {"source": "sklearn.datasets.load_digits"},
    )


def gaussian_mixture(
    *,
    n: int = 512,
    dim: int = 10,
    classes: int = 3,
    separation: float = 3.0,
    n_test: int = 0,
    seed: int = 0,
) -> Split:
    """``classes`` isotropic unit-variance Gaussians in ``dim`` dimensions.

    Class means are ``separation * u_c`` with ``u_c`` uniform random unit vectors; labels are
    balanced (``i mod classes``, shuffled); ``x = mu_y + N(0, I)``. The first ``n`` samples form
    the train split and the next ``n_test`` the test split.
    """
    n, dim, classes = _positive("n", n), _positive("dim", dim), _positive("classes", classes)
    g = _gen(seed)
    u = torch.randn(classes, dim, generator=g)
    means = float(separation) * u / u.norm(dim=1, keepdim=True)
    total = n + int(n_test)
    y = (torch.arange(total) % classes)[torch.randperm(total, generator=g)]
    x = means[y] + torch.randn(total, dim, generator=g)
    train, test = _cut(x, y, n)
    return Split(train, test, "classification", classes, (dim,), {})


def teacher_student(
    *,
    n: int = 256,
    dim: int = 10,
    width: int = 32,
    out_dim: int = 1,
    teacher: Literal["two-layer", "linear"] = "two-layer",
    noise: float = 0.0,
    n_test: int = 0,
    seed: int = 0,
) -> Split:
    """Regression targets from a random teacher: ``y = teacher(x) + noise * N(0, 1)``, ``x ~ N(0,
    I_dim)``.

    ``teacher="two-layer"``: ``y = A relu(W x) / sqrt(width)`` with ``W ~ N(0, 1/dim)`` ``[width,
    dim]`` and ``A ~ N(0, 1)`` ``[out_dim, width]`` (the slides' two-layer net without bias).
    ``teacher="linear"``: ``y = M x`` with ``M ~ N(0, 1/dim)``. With ``noise=0`` a student
    containing the teacher's function class interpolates the data. Targets are float32 ``[N,
    out_dim]``."""
    n, dim, out_dim = _positive("n", n), _positive("dim", dim), _positive("out_dim", out_dim)
    g = _gen(seed)
    total = n + int(n_test)
    x = torch.randn(total, dim, generator=g)
    if teacher == "linear":
        M = torch.randn(out_dim, dim, generator=g) / math.sqrt(dim)
        y = x @ M.T
    elif teacher == "two-layer":
        width = _positive("width", width)
        W = torch.randn(width, dim, generator=g) / math.sqrt(dim)
        A = torch.randn(out_dim, width, generator=g)
        y = torch.relu(x @ W.T) @ A.T / math.sqrt(width)
    else:
        raise ConfigError(f"unknown teacher {teacher!r}", "use two-layer or linear")
    if noise:
        y = y + float(noise) * torch.randn(y.shape, generator=g)
    train, test = _cut(x, y, n)
    return Split(train, test, "regression", None, (dim,), {})


def parity(
    *, dim: int = 4, n: int | None = None, k: int = 2, n_test: int = 0, seed: int = 0
) -> Split:
    """Sparse parity regression: ``x in {-1, +1}^dim``, ``y = x_1 x_2 ... x_k`` as float ``[N, 1]``.

    ``n=None`` enumerates all ``2^dim`` points once (``dim <= 20``; no test split); otherwise
    ``n`` (+ ``n_test``) points are drawn uniformly with the seeded generator.
    """
    dim = _positive("dim", dim)
    if not 1 <= int(k) <= dim:
        raise ConfigError(f"parity: k={k} must be in [1, dim={dim}]", "e.g. k=2 for y = x1*x2")
    if n is None:
        if dim > 20:
            raise ConfigError(
                f"parity: all 2^{dim} points is too many", "pass n=... to sample points"
            )
        x = torch.tensor(list(itertools.product((-1.0, 1.0), repeat=dim)), dtype=torch.float32)
        train, test = (x, x[:, : int(k)].prod(dim=1, keepdim=True)), None
    else:
        n = _positive("n", n)
        total = n + int(n_test)
        x = torch.randint(0, 2, (total, dim), generator=_gen(seed)).float() * 2 - 1
        train, test = _cut(x, x[:, : int(k)].prod(dim=1, keepdim=True), n)
    return Split(train, test, "regression", None, (dim,), {})
