"""User ("foreign") factories: ``FILE.py:FUNCTION`` or ``package.module:FUNCTION``.

A model factory is called with keyword options (none for a foreign checkpoint) and returns
an ``nn.Module``. A data factory returns one of

- ``(inputs, targets)``: tensors or NumPy arrays with the same first dimension;
- a ``torch.utils.data.Dataset`` whose items are ``(input, target)`` pairs;
- a ``torch.utils.data.DataLoader`` yielding ``(inputs, targets)`` batches;
- (for ``landscape.data.load_dataset``) a ``landscape.data.Split``, or a dict
  ``{"train": ..., "test": ...}`` of the above.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, IterableDataset

from landscape.errors import ConfigError, LandscapeError

SPEC_HINT = "write FILE.py:FUNCTION or package.module:FUNCTION"


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}"


def _load_file(path: Path) -> Any:
    """Execute a Python file as a fresh module (its folder is on ``sys.path`` meanwhile)."""
    path = path.resolve()
    name = "landscape_user_" + hashlib.sha1(str(path).encode()).hexdigest()[:12]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise LandscapeError(f"cannot import {path} as Python", SPEC_HINT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    folder = str(path.parent)
    sys.path.insert(0, folder)
    try:
        spec.loader.exec_module(module)
    except Exception as e:
        sys.modules.pop(name, None)
        raise LandscapeError(
            f"error while importing {path}: {_first_line(e)}", "fix that file"
        ) from e
    finally:
        try:
            sys.path.remove(folder)
        except ValueError:
            pass
    return module


def load_factory(spec: str) -> Callable[..., Any]:
    """The callable named by ``spec``: ``path/to/file.py:function`` or ``package.module:function``.

    The part after the last ``:`` may be dotted (``module:Class.method``). A missing file,
    module or attribute raises a one-line ``LandscapeError``.
    """
    target, sep, attr = str(spec).rpartition(":")
    if not sep or not target or not attr:
        raise LandscapeError(f"bad factory {spec!r}: no ':FUNCTION' part", SPEC_HINT)
    looks_like_file = target.endswith(".py") or "/" in target or os.sep in target
    if looks_like_file or Path(target).is_file():
        path = Path(target).expanduser()
        if not path.is_file():
            raise LandscapeError(f"factory file not found: {path}", SPEC_HINT)
        module = _load_file(path)
    else:
        try:
            module = importlib.import_module(target)
        except ModuleNotFoundError as e:
            if e.name and (target == e.name or target.startswith(e.name + ".")):
                raise LandscapeError(f"factory module not found: {target}", SPEC_HINT) from e
            raise LandscapeError(
                f"error while importing {target}: {_first_line(e)}", "fix that module"
            ) from e
        except Exception as e:
            raise LandscapeError(
                f"error while importing {target}: {_first_line(e)}", "fix that module"
            ) from e
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            names = sorted(
                k for k, v in vars(module).items() if callable(v) and not k.startswith("_")
            )
            raise LandscapeError(
                f"{target} has no attribute {attr!r}",
                f"its public callables are: {', '.join(names[:10]) or 'none'}",
            )
        obj = getattr(obj, part)
    if not callable(obj):
        raise LandscapeError(f"{spec} is a {type(obj).__name__}, not a callable", SPEC_HINT)
    return obj


def call_with_options(fn: Callable[..., Any], kind: str, name: str, kwargs: dict) -> Any:
    """Call ``fn(**kwargs)``, turning an unknown or missing option into a one-line ConfigError."""
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):  # no introspectable signature: just call it
        return fn(**kwargs)
    named = [p for p in params.values() if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if not any(p.kind == p.VAR_KEYWORD for p in params.values()):
        unknown = [k for k in kwargs if k not in params]
        if unknown:
            raise ConfigError(
                f"{kind} {name!r} has no option {unknown[0]!r}",
                f"its options are: {', '.join(p.name for p in named) or 'none'}",
            )
    missing = [p.name for p in named if p.default is p.empty and p.name not in kwargs]
    if missing:
        raise ConfigError(
            f"{kind} {name!r} needs option {', '.join(missing)}",
            f"pass it, e.g. {missing[0]}=...",
        )
    return fn(**kwargs)


def _tensor(a: Any, what: str) -> Tensor:
    if isinstance(a, Tensor):
        return a.detach()
    if isinstance(a, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(a))
    try:
        return torch.as_tensor(a)
    except (TypeError, ValueError, RuntimeError) as e:
        raise LandscapeError(
            f"data factory returned {what} of type {type(a).__name__}, not a tensor or array",
            "return (inputs, targets) as tensors or NumPy arrays",
        ) from e


def _pair(obj: Any) -> tuple[Tensor, Tensor] | None:
    if isinstance(obj, dict) and "x" in obj and "y" in obj:
        obj = (obj["x"], obj["y"])
    if isinstance(obj, (tuple, list)) and len(obj) == 2:
        x, y = _tensor(obj[0], "inputs"), _tensor(obj[1], "targets")
        if x.dim() == 0 or y.dim() == 0 or x.shape[0] != y.shape[0]:
            raise LandscapeError(
                f"data factory returned inputs {tuple(x.shape)} and targets {tuple(y.shape)}",
                "inputs and targets need the same first (sample) dimension",
            )
        return x, y
    return None


def dataset_from_user(obj: Any) -> tuple[Tensor, Tensor] | Dataset | DataLoader:
    """Normalise a data factory's return value.

    ``(inputs, targets)`` (a tuple or list of two tensors / arrays, or a dict with keys ``x``
    and ``y``) becomes a tuple of two tensors with the same first dimension; a ``Dataset`` or a
    ``DataLoader`` is returned unchanged (``materialize`` turns them into tensors). Anything else
    raises ``LandscapeError``.
    """
    if isinstance(obj, (Dataset, DataLoader)):
        return obj
    pair = _pair(obj)
    if pair is None:
        raise LandscapeError(
            f"data factory returned {type(obj).__name__}",
            "return (inputs, targets), a torch Dataset or a DataLoader",
        )
    return pair


def materialize(obj: Any) -> tuple[Tensor, Tensor]:
    """All samples of ``obj`` (what ``dataset_from_user`` accepts) as ``(inputs, targets)`` tensors.

    A ``TensorDataset`` of two tensors is used as is; other datasets are read item by item and
    a ``DataLoader`` batch by batch (its order, so use ``shuffle=False``), then stacked.
    """
    obj = dataset_from_user(obj)
    if isinstance(obj, tuple):
        return obj
    if isinstance(obj, torch.utils.data.TensorDataset) and len(obj.tensors) == 2:
        return obj.tensors[0], obj.tensors[1]
    if isinstance(obj, DataLoader):
        batches = [_pair(b) for b in obj]
        if not batches or any(b is None for b in batches):
            raise LandscapeError(
                "the DataLoader is empty or does not yield (inputs, targets) batches",
                "make it yield (inputs, targets) pairs",
            )
        return torch.cat([b[0] for b in batches]), torch.cat([b[1] for b in batches])
    items = iter(obj) if isinstance(obj, IterableDataset) else (obj[i] for i in range(len(obj)))
    xs, ys = [], []
    for item in items:
        if isinstance(item, dict) and "x" in item and "y" in item:
            item = (item["x"], item["y"])
        if not (isinstance(item, (tuple, list)) and len(item) == 2):
            raise LandscapeError(
                f"dataset items are {type(item).__name__}, not (input, target) pairs",
                "make __getitem__ return (input, target)",
            )
        xs.append(_tensor(item[0], "an input"))
        ys.append(_tensor(item[1], "a target"))
    if not xs:
        raise LandscapeError("the dataset is empty", "return a dataset with samples")
    return torch.stack(xs), torch.stack(ys)
