"""Built-in datasets and their registry; nothing is ever downloaded.

``load_dataset(name, **options) -> Split``. ``DATASETS`` maps a name to a loader taking keyword
options only:

====================  =========================================================================
``digits``            scikit-learn's shipped 8x8 digits: test_fraction=0.2, image=False, seed=0
``gaussian-mixture``  classification: n=512, dim=10, classes=3, separation=3.0, n_test=0, seed=0
``teacher-student``   regression y = teacher(x): n=256, dim=10, width=32, out_dim=1,
                      teacher=two-layer|linear, noise=0.0, n_test=0, seed=0
``parity``            regression y = x_1...x_k on {-1,1}^dim: dim=4, n=None (all 2^dim), k=2
``file``              path (.npz/.h5), x_key=x, y_key=y, x_test_key, y_test_key, task, ...
``mnist``             data_dir=data/mnist (raw idx files), image=True, standardize=False
``fashion-mnist``     data_dir=data/fashion-mnist (raw idx files), image=True, standardize=False
``cifar10``           data_dir=data/cifar10 (cifar-10-batches-bin/), image=True, standardize=False
====================  =========================================================================

Options every dataset takes (applied by ``load_dataset`` after loading): ``n_train`` (a
seeded subset of that many training samples), ``limit`` (caps both train and test sizes) and
``seed`` (for those subsets; also the loader's own seed where it has one). A name
``FILE.py:FUNCTION`` calls a user data factory (see ``landscape.factory``).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import torch

from landscape.data.files import array_file, cifar10, fashion_mnist, mnist, read_cifar_bin, read_idx
from landscape.data.source import DataSource
from landscape.data.split import Split, fingerprint, first, part_len, random_split, subset
from landscape.data.synthetic import digits, gaussian_mixture, parity, teacher_student
from landscape.errors import ConfigError, LandscapeError
from landscape.factory import call_with_options, load_factory

__all__ = [
    "DATASETS",
    "Split",
    "fingerprint",
    "load_dataset",
    "random_split",
    "read_cifar_bin",
    "read_idx",
    "split_from_user",
    "subset",
]

DATASETS: dict[str, Callable[..., Split]] = {
    "digits": digits,
    "gaussian-mixture": gaussian_mixture,
    "teacher-student": teacher_student,
    "parity": parity,
    "file": array_file,
    "mnist": mnist,
    "fashion-mnist": fashion_mnist,
    "cifar10": cifar10,
}


def split_from_user(obj: Any, name: str = "user") -> Split:
    """A ``Split`` from what a user data factory returns (see ``landscape.factory``).

    A ``Split`` passes through; a dict ``{"train": a, "test": b}`` or a single ``a`` (``a``,
    ``b``: ``(inputs, targets)`` tensors or arrays, a Dataset or a DataLoader). Tensors stay
    tensors; a Dataset or a DataLoader becomes a :class:`~landscape.data.source.DataSource`, read
    batch by batch when measured, never held whole. Targets that are 1-D integers make a
    classification task (with ``max + 1`` classes, counted when first needed for a source);
    anything else is regression, and 1-D float targets become ``[N, 1]``.
    """
    if isinstance(obj, Split):
        return obj
    if isinstance(obj, dict) and "train" in obj:
        train = _user_part(obj["train"])
        test = _user_part(obj["test"]) if obj.get("test") is not None else None
    else:
        train, test = _user_part(obj), None
    parts = [train] + ([test] if test is not None else [])
    x0, y0 = first(train, 1)  # one sample tells the shapes and the task
    if y0.dim() >= 2 and not y0.is_floating_point() and not y0.is_complex():
        task, num_classes = "tokens", None  # token labels [N, T]: a sequence task

        def fix(p):
            return p
    elif y0.dim() == 1 and not y0.is_floating_point() and not y0.is_complex():
        task = "classification"
        streamed = any(isinstance(p, DataSource) for p in parts)
        num_classes = (
            None if streamed else int(max(int(p[1].max()) for p in parts if p[1].numel()) + 1)
        )

        def fix(p):
            return (
                p.map_targets(lambda y: y.long())
                if isinstance(p, DataSource)
                else (p[0], p[1].long())
            )
    else:
        task, num_classes = "regression", None

        def fix(p):
            if isinstance(p, DataSource):
                return p.map_targets(lambda y: y.reshape(-1, 1) if y.dim() == 1 else y)
            return p[0], p[1].reshape(-1, 1) if p[1].dim() == 1 else p[1]
    train = fix(train)
    test = fix(test) if test is not None else None
    shape = next(iter(x0.values())).shape if isinstance(x0, dict) else x0.shape
    return Split(train, test, task, num_classes, tuple(shape[1:]), {"factory": name})


def _user_part(obj: Any):
    """Tensors as a pair; a Dataset or a DataLoader as a source (nothing read but a first batch)."""
    from landscape.data.source import TensorSource, as_source

    source = as_source(obj)
    if isinstance(source, TensorSource) and source.index is None:
        return source.x, source.y
    return source


def load_dataset(name: str, **kwargs: Any) -> Split:
    """Load dataset ``name`` (a ``DATASETS`` key or ``FILE.py:FUNCTION``) with ``kwargs``.

    ``info`` of the result records ``name`` and the options as given, so that
    ``load_dataset(info["name"], **info["kwargs"])`` reloads the same split.
    """
    options = dict(kwargs)
    n_train = kwargs.pop("n_train", None)
    limit = kwargs.pop("limit", None)
    if name in DATASETS:
        fn: Callable[..., Any] = DATASETS[name]
    elif ":" in name:
        fn = load_factory(name)
    else:
        raise ConfigError(
            f"unknown dataset {name!r}",
            f"choose one of {', '.join(DATASETS)}, or give FILE.py:FUNCTION",
        )
    params = inspect.signature(fn).parameters
    takes_seed = "seed" in params or any(p.kind == p.VAR_KEYWORD for p in params.values())
    if takes_seed:
        default = params["seed"].default if "seed" in params else 0
        seed = kwargs.get("seed", 0 if default is inspect.Parameter.empty else default)
    else:
        seed = kwargs.pop("seed", 0)
    split = call_with_options(fn, "dataset", name, kwargs)
    if name not in DATASETS:
        split = split_from_user(split, name)
    elif not isinstance(split, Split):
        raise LandscapeError(f"dataset {name!r} returned {type(split).__name__}", "report this bug")

    g = torch.Generator().manual_seed(int(seed))
    train, test = split.train, split.test
    for cap, what in ((n_train, "n_train"), (limit, "limit")):
        if cap is None:
            continue
        if int(cap) < 1:
            raise ConfigError(f"{what} must be a positive integer, got {cap}", f"e.g. {what}=1000")
        if what == "n_train" and int(cap) > part_len(train):
            raise ConfigError(
                f"n_train={cap} exceeds the {part_len(train)} training samples of {name!r}",
                f"use n_train <= {part_len(train)}",
            )
        if int(cap) < part_len(train):
            train = subset(train, int(cap), g)
        if what == "limit" and test is not None and int(cap) < part_len(test):
            test = subset(test, int(cap), g)
    info = {"name": name, "kwargs": options, **split.info}
    return Split(train, test, split.task, split.num_classes, split.input_shape, info)
