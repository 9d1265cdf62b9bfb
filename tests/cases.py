"""Tiny problems for exact dense checks (float64 by default).

Each factory returns ``(model, loss, (X, Y))``; sizes are chosen so that dense p x p matrices are
cheap (p ≲ 300) and the last batch is uneven for the batch sizes the tests use.
"""

from __future__ import annotations

import torch
from torch import nn


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def mlp_ce(seed: int = 0, n: int = 37, d: int = 5, h: int = 7, k: int = 3, dtype=torch.float64):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(d, h), nn.Tanh(), nn.Linear(h, k)).to(dtype)
    g = _gen(seed)
    X = torch.randn(n, d, generator=g, dtype=dtype)
    Y = torch.randint(0, k, (n,), generator=g)
    return model, "cross-entropy", (X, Y)


def mlp_mse(seed: int = 0, n: int = 29, d: int = 4, h: int = 6, k: int = 2, dtype=torch.float64):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(d, h), nn.Tanh(), nn.Linear(h, k)).to(dtype)
    g = _gen(seed)
    X = torch.randn(n, d, generator=g, dtype=dtype)
    Y = torch.randn(n, k, generator=g, dtype=dtype)
    return model, "mse", (X, Y)


class TinyCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 3, 3)
        self.bn = nn.BatchNorm2d(3)
        self.fc = nn.Linear(3 * 4 * 4, 3)

    def forward(self, x):
        return self.fc(torch.relu(self.bn(self.conv(x))).flatten(1))


def cnn_bn(seed: int = 0, n: int = 21, dtype=torch.float64):
    torch.manual_seed(seed)
    model = TinyCNN().to(dtype)
    g = _gen(seed)
    X = torch.randn(n, 1, 6, 6, generator=g, dtype=dtype)
    model.train()
    with torch.no_grad():  # give the BatchNorm non-trivial running statistics
        model(X * 1.5 + 0.3)
    model.eval()
    Y = torch.randint(0, 3, (n,), generator=g)
    return model, "cross-entropy", (X, Y)


def interpolating_mse(seed: int = 0, n: int = 12, d: int = 20, dtype=torch.float64):
    """A linear least-squares problem with more parameters than samples, solved exactly:
    every residual is ~1e-14, so H = G (the lecture's "important observation")."""
    g = _gen(seed)
    X = torch.randn(n, d, generator=g, dtype=dtype)
    Y = torch.randn(n, 1, generator=g, dtype=dtype)
    model = nn.Linear(d, 1, bias=False).to(dtype)
    with torch.no_grad():
        model.weight.copy_(torch.linalg.lstsq(X, Y).solution.T)
    return model, "mse", (X, Y)


CASES = {"mlp_ce": mlp_ce, "mlp_mse": mlp_mse, "cnn_bn": cnn_bn}
