"""Fully connected built-in models: ``mlp``, ``two-layer`` and ``linear``.

Every model flattens its input ``[N, ...]`` to ``[N, in_dim]`` first, so image-shaped data
(``[N, C, H, W]``) can be fed to it unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from landscape.errors import ConfigError

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "gelu": nn.GELU,
    "sigmoid": nn.Sigmoid,
}


def make_activation(name: str) -> nn.Module:
    """A fresh activation module by name (``relu``, ``tanh``, ``gelu``, ``sigmoid``)."""
    try:
        return ACTIVATIONS[name]()
    except KeyError:
        raise ConfigError(
            f"unknown activation {name!r}", f"choose one of {', '.join(ACTIVATIONS)}"
        ) from None


class MLP(nn.Module):
    """``Flatten -> [Linear -> act] * len(widths) -> Linear``: logits or outputs ``[N,
    out_dim]``."""

    def __init__(
        self,
        *,
        in_dim: int,
        out_dim: int,
        widths: Sequence[int] = (128, 128),
        activation: str = "relu",
        bias: bool = True,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        d = int(in_dim)
        for w in widths:
            layers += [nn.Linear(d, int(w), bias=bias), make_activation(activation)]
            d = int(w)
        layers.append(nn.Linear(d, int(out_dim), bias=bias))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class TwoLayer(nn.Module):
    """The lecture slides' two-layer net ``f(x) = sum_j a_j sigma(w_j^T x + b_j)``, j = 1..m.

    Source: implicit-bias lecture, "Two-layer networks (without bias)" / "with bias". ``w_j`` are
    the rows of ``hidden.weight`` ``[m, d]``, ``b_j`` is ``hidden.bias`` (absent when
    ``bias=False``), ``a_j`` are the columns of ``output.weight`` ``[out_dim, m]`` (no output
    bias, as in the slides). ``out_dim > 1`` gives one such sum per output.
    """

    def __init__(
        self,
        *,
        in_dim: int,
        width: int = 64,
        out_dim: int = 1,
        bias: bool = True,
        activation: str = "relu",
    ) -> None:
        super().__init__()
        self.flatten = nn.Flatten()
        self.hidden = nn.Linear(int(in_dim), int(width), bias=bias)
        self.act = make_activation(activation)
        self.output = nn.Linear(int(width), int(out_dim), bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.output(self.act(self.hidden(self.flatten(x))))


class Linear(nn.Module):
    """A linear model ``f(x) = W x + b`` on the flattened input."""

    def __init__(self, *, in_dim: int, out_dim: int = 1, bias: bool = True) -> None:
        super().__init__()
        self.flatten = nn.Flatten()
        self.linear = nn.Linear(int(in_dim), int(out_dim), bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(self.flatten(x))
