"""Memory budgets: sizes, what a device has free, out-of-memory errors, and peak memory.

A budget is the memory landscape may allocate beyond what the model and the problem already
hold. ``--memory 20GiB`` sets it; by default it is 90% of the free memory of a CUDA device, and
half of the available RAM on a CPU (``MemAvailable`` of ``/proc/meminfo``; split between the
processes of a torchrun job on the node), since the operating system kills a CPU process that
runs out rather than raising an error.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import re
import sys
from dataclasses import dataclass

import torch

from .errors import ConfigError

_UNITS = {"": 1 << 20, "b": 1, "k": 10**3, "kb": 10**3, "kib": 1 << 10, "m": 10**6, "mb": 10**6,
          "mib": 1 << 20, "g": 10**9, "gb": 10**9, "gib": 1 << 30, "t": 10**12, "tb": 10**12,
          "tib": 1 << 40}


class OutOfBudget(MemoryError):
    """A product would pass the memory budget (raised by the saved-tensor meter, or by a plan that
    cannot fit); handled like a device's own out-of-memory error."""

    def __init__(self, used: int, limit: int) -> None:
        super().__init__(f"{fmt_bytes(used)} needed, budget {fmt_bytes(limit)}")
        self.used, self.limit = used, limit


def parse_size(text: str | int | None) -> int | None:
    """Bytes from ``"20GiB"``, ``"512MB"``, ``"1.5g"`` or a string holding a plain number of MiB
    (the command line's ``--memory 512``); an int is bytes already; None stays None.

    >>> parse_size("2GiB"), parse_size("512"), parse_size("1.5kB"), parse_size(4096)
    (2147483648, 536870912, 1500, 4096)
    """
    if text is None:
        return None
    if isinstance(text, int) and not isinstance(text, bool):
        if text <= 0:
            raise ConfigError(f"the memory budget must be positive, got {text}",
                              "pass e.g. memory='4GiB'")
        return text
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", str(text))
    if not m or m.group(2).lower() not in _UNITS:
        raise ConfigError(f"cannot read the memory size {text!r}",
                          "write e.g. --memory 20GiB, 512MiB or 800MB (a plain number is MiB)")
    value = int(float(m.group(1)) * _UNITS[m.group(2).lower()])
    if value <= 0:
        raise ConfigError(f"the memory budget must be positive, got {text!r}",
                          "write e.g. --memory 4GiB")
    return value


def fmt_bytes(n: float) -> str:
    """``1536 -> '1.5 KiB'``."""
    n = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.3g} {unit}"
        n /= 1024
    return f"{n:.3g} TiB"  # pragma: no cover


def available(device: torch.device) -> int:
    """Bytes free now: the CUDA device's free memory, or the host's available RAM."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):  # pragma: no cover - exotic platforms
        return 8 << 30


@dataclass(frozen=True)
class Budget:
    """``bytes`` that may be allocated on ``device``; ``source`` says where the figure came from."""

    bytes: int
    device: torch.device
    source: str

    @classmethod
    def resolve(cls, memory: str | int | None, device: torch.device) -> Budget:
        """``--memory`` if given, else the device's default share of its free memory."""
        given = parse_size(memory)
        if given is not None:
            return cls(given, device, f"--memory {fmt_bytes(given)}")
        free = available(device)
        if device.type == "cuda":
            return cls(int(0.9 * free), device, f"90% of the free GPU memory ({fmt_bytes(free)})")
        # the processes of a torchrun job on this node share its RAM
        local = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1))
        share = "half" if local == 1 else f"half / {local} local processes"
        return cls(int(0.5 * free / local), device,
                   f"{share} of the available RAM ({fmt_bytes(free)})")

    def __str__(self) -> str:
        return f"{fmt_bytes(self.bytes)} ({self.source})"


def is_out_of_memory(e: BaseException) -> bool:
    """A device's out-of-memory error, a failed host allocation, or an :class:`OutOfBudget`."""
    if isinstance(e, MemoryError):
        return True
    oom = getattr(torch.cuda, "OutOfMemoryError", None)
    if oom is not None and isinstance(e, oom):
        return True
    text = str(e)
    return isinstance(e,
                      RuntimeError) and ("out of memory" in text or "can't allocate memory" in text
                                            or "DefaultCPUAllocator" in text)


def release(device: torch.device) -> None:
    """Give cached allocator blocks back after an out-of-memory error."""
    if device.type == "cuda":
        torch.cuda.empty_cache()


# ----------------------------------------------------------------------------- peak memory


def reset_peak(device: torch.device | None = None) -> None:
    """Start a new peak: the process's resident high-water mark (Linux ``VmHWM``, reset through
    ``/proc/self/clear_refs``) and, on a CUDA device, ``max_memory_allocated``."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass
    if device is not None and device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak(device: torch.device | None = None) -> dict:
    """``{"rss": bytes, "cuda": bytes | None}``: the peak resident set size of this process since
    the last :func:`reset_peak` (None where the platform does not report it) and the CUDA peak."""
    rss = None
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    rss = int(line.split()[1]) * 1024
    except OSError:
        pass
    cuda = None
    if device is not None and device.type == "cuda":
        cuda = int(torch.cuda.max_memory_allocated(device))
    return {"rss": rss, "cuda": cuda}


# ----------------------------------------------------------------------------- host allocator
_KEPT = False


def keep_freed_memory() -> bool:
    """Ask glibc's malloc to keep freed memory for reuse instead of returning it to the system:
    buffers up to 32 MiB come from the heap (``M_MMAP_THRESHOLD``, glibc's largest) and the heap
    is never trimmed (``M_TRIM_THRESHOLD``). Hessian products allocate and free the same
    activation buffers batch after batch; with glibc's defaults every reallocation faults its
    pages in again, which measured a third to a half of a CPU product's time (ResNet-18 and a
    BatchNorm CNN, batch 128). The peak memory is unchanged: what is kept is reused.

    Linux with glibc only; a no-op elsewhere, or when ``LANDSCAPE_KEEP_FREED=0``. Returns whether
    the setting is in force. Called by the command line and by the first CPU product."""
    global _KEPT
    if _KEPT:
        return True
    if os.environ.get("LANDSCAPE_KEEP_FREED", "1") == "0" or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        ok = libc.mallopt(-3, 32 << 20) == 1  # M_MMAP_THRESHOLD
        ok = libc.mallopt(-1, (1 << 31) - 1) == 1 and ok  # M_TRIM_THRESHOLD
    except (OSError, AttributeError):
        return False
    _KEPT = bool(ok)
    return _KEPT
