"""Names of a package imported on first use (PEP 562), so that ``import landscape`` and the
CLI's ``--help`` do not import torch.

>>> getattr_, _ = exports("json", {"JSONDecoder": "decoder"})
>>> getattr_("JSONDecoder").__module__
'json.decoder'
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def exports(package: str, names: dict[str, str]) -> tuple[Callable[[str], Any], Callable[[],
    list[str]]]:
    """``(__getattr__, __dir__)`` for ``package``: ``names`` maps a public name to the submodule
    (relative to ``package``) that defines it."""
    module = importlib.import_module(package)

    def __getattr__(name: str) -> Any:
        if name not in names:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f".{names[name]}", package), name)
        setattr(module, name, value)
        return value

    def __dir__() -> list[str]:
        return sorted(set(vars(module)) | set(names))

    return __getattr__, __dir__
