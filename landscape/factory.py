"""User ("foreign") factories: ``FILE.py:FUNCTION`` or ``package.module:FUNCTION``.

A model factory is called with keyword options (``--model-arg``) and returns an ``nn.Module``.
A data factory, called with its options (``--data-arg``), returns one of

- ``(inputs, targets)``: tensors or NumPy arrays with the same first dimension;
- a ``torch.utils.data.Dataset`` whose items are ``(input, target)`` pairs;
- a ``torch.utils.data.DataLoader`` yielding ``(inputs, targets)`` batches;
- (for ``landscape.data.load_dataset``) a ``landscape.data.Split``, or a dict
  ``{"train": ..., "test": ...}`` of the above.

Datasets and loaders are read batch by batch (:mod:`landscape.data.source`), never held whole."""

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

from landscape.errors import ConfigError, LandscapeError, first_line

SPEC_HINT = "write FILE.py:FUNCTION or package.module:FUNCTION"


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
            f"error while importing {path}: {first_line(e)}", "fix that file"
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
                f"error while importing {target}: {first_line(e)}", "fix that module"
            ) from e
        except Exception as e:
            raise LandscapeError(
                f"error while importing {target}: {first_line(e)}", "fix that module"
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
        return _call(fn, kind, name, kwargs)
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
    return _call(fn, kind, name, kwargs)


def _call(fn: Callable[..., Any], kind: str, name: str, kwargs: dict) -> Any:
    """``fn(**kwargs)``; an exception raised by a user's factory is the user's to fix: one line
    naming the factory, its options and the error (a LandscapeError of its own passes through)."""
    try:
        return fn(**kwargs)
    except LandscapeError:
        raise
    except Exception as e:
        opts = ", ".join(f"{k}={v!r}" for k, v in kwargs.items())
        called = f" (called with {opts})" if opts else ""
        flag = "--data-arg" if kind == "dataset" else f"--{kind}-arg"
        if ":" not in name:  # a built-in model or dataset: only a bad option value is the user's
            if isinstance(e, (TypeError, ValueError)):
                raise ConfigError(f"{kind} {name!r} rejected its options{called}: {first_line(e)}",
                                  f"check the {flag} values") from e
            raise
        label = "data" if kind == "dataset" else kind
        raise LandscapeError(f"the {label} factory {name} raised {first_line(e)}{called}",
                             f"fix the factory or its {flag} options") from e
