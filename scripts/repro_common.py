"""Shared pieces of the ``scripts/repro_*.py`` reproductions: command line, HDF5 output, markdown
tables, run helpers. Every script runs the toolkit itself (``landscape.train``,
``landscape.escape``, ``landscape.metrics``, ``landscape.estimators``) at CPU scale on
scikit-learn's digits."""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as ``python scripts/repro_x.py`` from anywhere
    sys.path.insert(0, str(ROOT))


def parser(name: str, doc: str | None) -> argparse.ArgumentParser:
    """``--out`` (default ``docs/repro/<name>``), ``--quick`` (test-sized), ``--seed``,
    ``--threads`` (default 1)."""
    p = argparse.ArgumentParser(description=(doc or "").split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "repro" / name,
                   help=f"output folder (default docs/repro/{name})")
    p.add_argument("--quick", action="store_true",
                   help="tiny configuration (seconds; what the tests run)")
    p.add_argument("--seed", type=int, default=0, help="base seed")
    p.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads (default 1: the models are tiny and the machine shared)")
    return p


def setup(args: argparse.Namespace) -> Path:
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    return out


class Clock:
    def __init__(self) -> None:
        self.t0 = time.perf_counter()

    def __call__(self) -> float:
        return time.perf_counter() - self.t0


# ------------------------------------------------------------------------------------------ HDF5
def write_group(h5, path: str, datasets: dict[str, Any] | None = None, attrs: dict[str,
    Any] | None = None):
    """Create (or replace) group ``path`` with float / int / string arrays and attributes."""
    from landscape.io.hdf5 import attr_value

    if path in h5:
        del h5[path]
    g = h5.create_group(path)
    for k, v in (datasets or {}).items():
        arr = np.asarray(v)
        if arr.dtype.kind in "US":
            arr = arr.astype("S")
        g.create_dataset(k, data=arr)
    for k, v in (attrs or {}).items():
        g.attrs[k] = attr_value(v)
    return g


@contextmanager
def result_h5(path: Path, script: str, config: dict):
    """A new HDF5 file, written atomically, with the script's name, its configuration and the
    package version as root attributes (an existing file is replaced: each script run is one
    consistent result)."""
    import h5py
    import torch

    import landscape
    from landscape.io.atomic import atomic_path

    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        f.attrs["script"] = script
        f.attrs["config"] = json.dumps(config, default=str)
        f.attrs["landscape_version"] = getattr(landscape, "__version__", "unknown")
        f.attrs["torch_version"] = str(torch.__version__)
        f.attrs["threads"] = torch.get_num_threads()
        f.attrs["command"] = " ".join(["python", *sys.argv])
        f.attrs["created"] = time.strftime("%Y-%m-%dT%H:%M:%S")
        yield f


# ------------------------------------------------------------------------------------------ tables
def fmt(x: Any, digits: int = 3) -> str:
    if x is None:
        return "–"
    if isinstance(x, str):
        return x
    if isinstance(x, (bool, np.bool_)):
        return "yes" if x else "no"
    x = float(x)
    if math.isnan(x):
        return "–"
    return f"{x:.{digits + 1}g}"


def pm(values: Sequence[float], digits: int = 3) -> str:
    """``mean ± std`` (sample standard deviation over seeds; just the value for one seed)."""
    v = np.asarray([x for x in values if x is not None and np.isfinite(x)], dtype=float)
    if v.size == 0:
        return "–"
    if v.size == 1:
        return f"{v[0]:.{digits}g}"
    return f"{v.mean():.{digits}g} ± {v.std(ddof=1):.2g}"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    for r in rows:
        lines.append("| " + " | ".join(c if isinstance(c, str) else fmt(c) for c in r) + " |")
    return "\n".join(lines)


def write_table(out: Path, text: str, name: str = "table.md") -> None:
    (out / name).write_text(text + "\n")
    print(text)


# ------------------------------------------------------------------------------------------ runs
def series_of(run: dict, column: str) -> tuple[np.ndarray, np.ndarray]:
    """``(steps, values)`` of one column of :func:`landscape.train.read_run` where measured."""
    s = run["series"]
    if column not in s:
        return np.zeros(0), np.zeros(0)
    steps, vals = np.asarray(s["step"], float), np.asarray(s[column], float)
    ok = np.isfinite(vals)
    return steps[ok], vals[ok]


def savefig(fig, path: Path) -> Path:
    from landscape.io.figures import save

    save(fig, path)
    return path
