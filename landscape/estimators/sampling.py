"""Random probe vectors drawn from an explicit, seeded ``torch.Generator``.

Probes are drawn on the CPU and then moved to the target device, so one seed gives the same
probes on every device and on every rank of a distributed run. Probe ``j`` of a block is always
the ``j``-th run of ``p`` draws from the generator, so the probes do not depend on how a caller
splits them into blocks: ``rademacher(p, 3, g)`` equals ``rademacher(p, 1, g)`` then
``rademacher(p, 2, g)`` column by column (same for :func:`gaussian`).
"""

from __future__ import annotations

import torch


def make_generator(seed: int, device: torch.device | str | None = None) -> torch.Generator:
    """A CPU ``torch.Generator`` seeded with ``seed``.

    ``device`` is accepted for symmetry with the samplers and deliberately ignored: probes are drawn
    on the CPU and moved afterwards, which makes them identical on every device."""
    del device
    g = torch.Generator(device="cpu")
    g.manual_seed(int(seed))
    return g


def rademacher(p: int, k: int, generator: torch.Generator, dtype: torch.dtype = torch.float64,
               device: torch.device | str = "cpu") -> torch.Tensor:
    """``[p, k]`` matrix of independent ±1 entries (each with probability 1/2).

    E[v vᵀ] = I, and among such probes Rademacher minimises the Hutchinson variance
    (Hutchinson 1990; Avron & Toledo 2011).
    """
    bits = torch.randint(0, 2, (k, p), generator=generator, dtype=torch.int8)
    V = bits.to(device=device).to(dtype).mul_(2).sub_(1)
    return V.T.contiguous()


def gaussian(p: int, k: int, generator: torch.Generator, dtype: torch.dtype = torch.float64,
             device: torch.device | str = "cpu") -> torch.Tensor:
    """``[p, k]`` matrix of independent standard normal entries (drawn in float64, then cast).

    Each column is its own draw of ``p`` numbers, so the values do not depend on ``k`` splits."""
    cols = [torch.randn(p, generator=generator, dtype=torch.float64) for _ in range(k)]
    V = torch.stack(cols, dim=1) if cols else torch.empty(p, 0, dtype=torch.float64)
    return V.to(device=device, dtype=dtype)


__all__ = ["gaussian", "make_generator", "rademacher"]
