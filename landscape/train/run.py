"""A training run on disk: ``RUN/run.h5`` (time series), ``RUN/state.pt`` (resume state),
``RUN/step-XXXXXX.pt`` and ``RUN/final.pt`` (checkpoints in the core format), ``RUN/run.png``.

``run.h5`` (rewritten atomically at each flush: temporary file + rename)::

    /            attrs: format="landscape-run", version, status (running | interrupted |
                 finished | diverged), step, epoch, stop_reason, landscape_version and every
                 setting of the run (model, model_kwargs, data, optimizer, lr, hyper, ...)
    /series/     one float64 dataset per column, one row per recorded step (NaN where a column
                 was not measured at that step): step, epoch, wall_seconds, train_seconds,
                 eval_seconds, track_seconds, batch_loss, train_loss, train_accuracy, test_loss,
                 test_accuracy, then every tracked column (trace, trace_stderr, lambda_max, ...)
    /final/      attrs: the last recorded value of each column

``state.pt`` holds plain values and tensors only (read with ``torch.load(weights_only=True)``):
the settings, counters, model and optimizer ``state_dict`` (base moments included), the data
order generator's state and the current epoch's permutation, the global RNG state, the series so
far and the cumulative timers. It alone decides where a resumed run continues, so ``run.h5`` and
the state can never disagree.
"""

from __future__ import annotations

import math
import os
import pickle
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import ConfigError, LandscapeError, first_line

FORMAT = "landscape-run"
STATE_FORMAT = "landscape-run-state"
VERSION = 1

#: Columns every run has, in this order; tracked columns follow.
BASE_COLUMNS = ("step", "epoch", "wall_seconds", "train_seconds", "eval_seconds", "track_seconds",
                "batch_loss", "train_loss", "train_accuracy", "test_loss", "test_accuracy")
TIMING_COLUMNS = ("wall_seconds", "train_seconds", "eval_seconds", "track_seconds")


class Series:
    """Columns of floats, one row per recorded step; NaN where a column was not measured."""

    def __init__(self, columns: dict[str, list[float]] | None = None) -> None:
        self.columns: dict[str, list[float]] = {c: [] for c in BASE_COLUMNS}
        if columns:
            for k, v in columns.items():
                self.columns[k] = [float(x) for x in v]
        n = {len(v) for v in self.columns.values()}
        if len(n) > 1:
            raise LandscapeError("the run's time series has columns of different lengths",
                                 "the run state is corrupt; start the run again with --force")

    def __len__(self) -> int:
        return len(self.columns["step"])

    def append(self, row: dict[str, float]) -> None:
        n = len(self)
        for k in row:
            if k not in self.columns:
                self.columns[k] = [math.nan] * n
        for k, col in self.columns.items():
            v = row.get(k, math.nan)
            col.append(math.nan if v is None else float(v))

    def update_last(self, row: dict[str, float]) -> None:
        """Set columns of the last row (adding columns as needed)."""
        n = len(self)
        for k, v in row.items():
            if k not in self.columns:
                self.columns[k] = [math.nan] * n
            self.columns[k][-1] = math.nan if v is None else float(v)

    def last(self, column: str) -> float | None:
        """The last non-NaN value of ``column`` (None if never measured)."""
        for v in reversed(self.columns.get(column, [])):
            if not math.isnan(v):
                return v
        return None

    def final(self) -> dict[str, float | None]:
        return {k: self.last(k) for k in self.columns}

    def arrays(self) -> dict[str, np.ndarray]:
        return {k: np.asarray(v, dtype=np.float64) for k, v in self.columns.items()}

    def to_state(self) -> dict[str, torch.Tensor]:
        return {k: torch.tensor(v, dtype=torch.float64) for k, v in self.columns.items()}

    @classmethod
    def from_state(cls, d: dict) -> Series:
        return cls({k: (v.tolist() if isinstance(v, torch.Tensor) else list(v)) for k,
                    v in d.items()})


class RunDir:
    """Paths and files of one run directory."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)

    @property
    def h5(self) -> Path:
        return self.path / "run.h5"

    @property
    def state(self) -> Path:
        return self.path / "state.pt"

    @property
    def final(self) -> Path:
        return self.path / "final.pt"

    @property
    def figure(self) -> Path:
        return self.path / "run.png"

    def step_checkpoint(self, step: int) -> Path:
        return self.path / f"step-{step:06d}.pt"

    def exists(self) -> bool:
        """Whether a run has been started here."""
        return self.state.is_file() or self.h5.is_file()

    def files(self) -> list[Path]:
        """The files a run writes here (what ``--force`` removes)."""
        if not self.path.is_dir():
            return []
        fixed = [self.h5, self.state, self.final, self.figure]
        return [p for p in fixed if p.exists()] + sorted(self.path.glob("step-*.pt"))

    def clear(self) -> None:
        for p in self.files():
            p.unlink()

    # -------------------------------------------------------------------- state.pt
    def save_state(self, state: dict) -> Path:
        """Write ``state.pt`` atomically."""
        from ..io.atomic import atomic_path

        self.path.mkdir(parents=True, exist_ok=True)
        with atomic_path(self.state) as tmp:
            torch.save({"format": STATE_FORMAT, "version": VERSION, **state}, tmp)
        usual_mode(self.state)
        return self.state

    def load_state(self) -> dict:
        """``state.pt`` (never executing pickled code); a one-line error if absent or broken."""
        if not self.path.exists():
            raise ConfigError(f"no run to resume: {self.path} does not exist",
                              "pass the --out directory of an earlier landscape train")
        if not self.state.is_file():
            raise ConfigError(f"no run to resume in {self.path} (no state.pt)",
                              "pass the --out directory of an earlier landscape train")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                state = torch.load(self.state, weights_only=True, map_location="cpu")
        except pickle.UnpicklingError as e:
            if "weights only" in str(e).lower():
                raise LandscapeError(
                    f"{self.state} holds objects that loading would execute as code, not a run "
                    "state",
                    "it was not written by landscape train; start the run again with --force",
                ) from e
            raise LandscapeError(f"{self.state} is corrupt ({first_line(e)})",
                                 "start the run again with --force") from e
        except Exception as e:  # torch raises RuntimeError, EOFError, ... on a truncated file
            raise LandscapeError(f"{self.state} is truncated or corrupt ({first_line(e)})",
                                 "start the run again with --force") from e
        if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
            raise LandscapeError(f"{self.state} is not a landscape run state",
                                 "pass the --out directory of landscape train")
        if state.get("version") != VERSION:
            raise LandscapeError(f"{self.state} has run-state version {state.get('version')!r}, "
                                 f"this landscape reads {VERSION}",
                                 "resume it with the landscape that wrote it")
        return state

    # -------------------------------------------------------------------- run.h5
    def write_h5(self, series: Series, settings: dict, status: dict) -> Path:
        """Rewrite ``run.h5`` atomically (temporary name, then rename)."""
        import h5py

        from .. import __version__
        from ..io.atomic import atomic_path
        from ..io.hdf5 import attr_value

        attrs = {"format": FORMAT, "version": VERSION, "landscape_version": __version__, **status,
                 **settings}
        self.path.mkdir(parents=True, exist_ok=True)
        try:
            with atomic_path(self.h5) as tmp, h5py.File(tmp, "w") as f:
                for k, v in attrs.items():
                    f.attrs[k] = attr_value(v)
                g = f.create_group("series")
                for k, v in series.arrays().items():
                    g.create_dataset(k, data=v)
                fin = f.create_group("final")
                for k, v in series.final().items():
                    fin.attrs[k] = math.nan if v is None else float(v)
        except OSError as e:
            raise LandscapeError(f"cannot write {self.h5}: {e.strerror or e}",
                                 "check the folder is writable") from e
        usual_mode(self.h5)
        return self.h5


def read_run(path: str | os.PathLike) -> dict:
    """A run's ``run.h5`` as ``{"path", "attrs": {...}, "series": {col: array}, "final": {...}}``.

    ``path`` is a run directory or its ``run.h5``."""
    from ..io.hdf5 import read_tree

    p = Path(path)
    h5 = p / "run.h5" if p.is_dir() else p
    if not p.exists():
        raise ConfigError(f"no such run: {p}", "pass a directory written by landscape train --out")
    if not h5.is_file():
        raise ConfigError(f"{p} holds no run.h5",
                          "pass a directory written by landscape train --out")
    tree = read_tree(h5)
    if tree.get("format") != FORMAT:
        raise LandscapeError(f"{h5} is not a landscape run file",
                             "pass a directory written by landscape train")
    series = {k: np.asarray(v, dtype=np.float64) for k, v in (tree.get("series") or {}).items()
              if isinstance(v, np.ndarray)}
    final = {k: (None if isinstance(v, float) and math.isnan(v) else v)
             for k, v in (tree.get("final") or {}).items()}
    attrs = {k: v for k, v in tree.items() if k not in ("series", "final")}
    return {"path": str(h5.parent), "attrs": attrs, "series": series, "final": final}


def usual_mode(path: Path) -> None:
    """Give a file written through a temporary name the usual permissions (0666 minus umask)."""
    umask = os.umask(0)
    os.umask(umask)
    try:
        os.chmod(path, 0o666 & ~umask)
    except OSError:
        pass


def plain_state(obj: Any) -> Any:
    """Tensors moved to CPU (for ``state.pt``), recursively."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: plain_state(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(plain_state(v) for v in obj)
    return obj
