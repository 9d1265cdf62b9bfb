"""The one place where parameter dicts meet flat vectors.

Public boundaries use flat vectors ``[p]`` and blocks ``[p, k]``; the functional core works on dicts
``name -> tensor``. :class:`ParamLayout` converts between the two (names, shapes, offsets)."""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class ParamLayout:
    names: tuple[str, ...]
    shapes: tuple[torch.Size, ...]
    offsets: tuple[int, ...]
    p: int

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor]) -> ParamLayout:
        names, shapes, offsets, off = [], [], [], 0
        for name, t in tensors.items():
            names.append(name)
            shapes.append(t.shape)
            offsets.append(off)
            off += t.numel()
        return cls(tuple(names), tuple(shapes), tuple(offsets), off)

    def numel(self, i: int) -> int:
        return self.shapes[i].numel()

    def slice(self, name: str) -> slice:
        i = self.names.index(name)
        return slice(self.offsets[i], self.offsets[i] + self.numel(i))

    def flatten(self, tensors: dict[str, torch.Tensor]) -> torch.Tensor:
        """``dict -> [p]``."""
        return torch.cat([tensors[n].reshape(-1) for n in self.names])

    def unflatten(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        """``[p] -> dict`` of views."""
        return {
            n: flat[o : o + s.numel()].view(s)
            for n, s, o in zip(self.names, self.shapes, self.offsets)
        }

    def unflatten_rows(self, block: torch.Tensor) -> dict[str, torch.Tensor]:
        """``[k, p] -> dict name -> [k, *shape]`` (views; the leading axis is vmapped over)."""
        k = block.shape[0]
        return {
            n: block[:, o : o + s.numel()].reshape(k, *s)
            for n, s, o in zip(self.names, self.shapes, self.offsets)
        }

    def flatten_rows(self, tensors: dict[str, torch.Tensor]) -> torch.Tensor:
        """``dict name -> [k, *shape]`` to ``[k, p]``."""
        first = tensors[self.names[0]]
        return torch.cat([tensors[n].reshape(first.shape[0], -1) for n in self.names], dim=1)

    def groups(self) -> dict[str, list[str]]:
        """Parameters grouped by layer: the name without its last component
        (``"net.0.weight"`` and ``"net.0.bias"`` form layer ``"net.0"``)."""
        out: dict[str, list[str]] = {}
        for n in self.names:
            out.setdefault(n.rsplit(".", 1)[0] if "." in n else n, []).append(n)
        return out


def select(names: list[str], pattern: str | None) -> list[str]:
    """Names matching the regular expression ``pattern`` (``re.search``); all when None."""
    if pattern is None:
        return list(names)
    try:
        rx = re.compile(pattern)
    except re.error as e:
        from ..errors import ConfigError

        raise ConfigError(
            f"--params {pattern!r} is not a regular expression ({e})",
            "escape special characters, e.g. '^fc\\.' for the parameters of module fc",
        ) from e
    return [n for n in names if rx.search(n)]
