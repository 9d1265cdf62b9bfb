"""Data-parallel runs under ``torchrun`` (torch.distributed; NCCL on GPUs, gloo on CPUs).

Each rank holds the shard ``indices[rank::world]`` of the data (see
:class:`~landscape.problem.Problem`);
operator products and losses are summed with ``all_reduce`` (one p-vector per product and probe);
probe vectors come from seeded CPU generators, so they are identical on every rank; only rank 0
prints and writes files.
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

# torch is imported on first use: the CLI's entry point asks launched() before any command runs.


def launched() -> bool:
    """True when this process was started by torchrun (or another launcher setting WORLD_SIZE >
    1)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def active() -> bool:
    """A process group has been joined (never before torch.distributed is imported)."""
    if "torch.distributed" not in sys.modules:
        return False
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    """This process's rank: the process group's, or torchrun's ``RANK`` before it is joined."""
    if active():
        import torch.distributed as dist

        return dist.get_rank()
    return int(os.environ.get("RANK", "0")) if launched() else 0


def world_size() -> int:
    import torch.distributed as dist

    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    """Rank 0 (or a single process): the one that prints and writes."""
    return rank() == 0


def init_from_env(device: str | None = None) -> None:
    """Join the process group torchrun describes (idempotent; nothing to do in a single process).

    The backend is NCCL when ``device`` is CUDA, gloo otherwise."""
    if not launched() or active():
        return
    import torch
    import torch.distributed as dist

    backend = (
        "nccl" if device and device.startswith("cuda") and torch.cuda.is_available() else "gloo"
    )
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend=backend)


def shutdown(wait: bool = True) -> None:
    """Leave the process group, after every rank has finished when ``wait`` (a successful run).

    A rank that tears its group down while another still talks to it can abort at exit ("terminate
    called without an active exception"); a failed run does not wait, as torchrun stops the
    others."""
    if active():
        import torch.distributed as dist

        if wait:
            dist.barrier()
        dist.destroy_process_group()


def local_device(device: torch.device) -> torch.device:
    """``cuda`` without an index means this rank's GPU (LOCAL_RANK) in a torchrun job."""
    if device.type == "cuda" and device.index is None and launched():
        import torch

        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return device


def all_reduce_(t: torch.Tensor) -> torch.Tensor:
    """Sum ``t`` in place over ranks (identity in a single process)."""
    if active():
        import torch.distributed as dist

        dist.all_reduce(t)
    return t
