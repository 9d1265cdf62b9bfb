"""HDF5 output, written atomically: to a temporary name in the target folder, then renamed, so an
interrupted run never leaves a half-written file.

``write_tree(path, tree, attrs)`` stores a nested dict: dicts become groups, numeric lists and
arrays become datasets, scalars and strings become attributes of their group; ``attrs`` (settings,
the checkpoint's identity) go on the root, nested values JSON-encoded. ``read_tree`` inverts it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from ..errors import LandscapeError
from ..results import to_plain
from .atomic import atomic_path


def attr_value(value: Any) -> Any:
    """An HDF5 attribute: numbers and strings as they are (floats encoded as in the JSON), None as
    "null", lists and dicts as JSON (:func:`~landscape.results.to_plain`), anything else as its
    string."""
    if isinstance(value, (bool, int, str, np.integer)):
        return value
    value = to_plain(value)  # NaN -> None -> "null", ±inf -> ±1e308, as in the JSON
    if value is None:
        return "null"
    if isinstance(value, (dict, list)):
        return json.dumps(value, default=str)
    return value if isinstance(value, (bool, int, float, str)) else str(value)


def _is_numeric_array(v: Any) -> bool:
    if isinstance(v, np.ndarray):
        return True
    if isinstance(v, list) and v:
        try:
            arr = np.asarray(v)
        except ValueError:
            return False
        return arr.dtype.kind in "fiub"
    return False


def write_group(group: h5py.Group, tree: dict) -> None:
    for key, value in tree.items():
        key = str(key).replace("/", "|")
        if hasattr(value, "to_dict"):
            value = value.to_dict()
        if hasattr(value, "detach"):  # tensors stay arrays (NaN included)
            value = value.detach().cpu().numpy()
        elif not isinstance(value, (np.ndarray, dict)):
            value = to_plain(value)
        if isinstance(value, dict):
            write_group(group.create_group(key), value)
        elif _is_numeric_array(value):
            group.create_dataset(key, data=np.asarray(value))
        else:
            group.attrs[key] = attr_value(value)


def write_tree(path: str | Path, tree: dict, attrs: dict | None = None) -> Path:
    """Write ``tree`` to the HDF5 file ``path`` atomically; ``attrs`` on the root group."""
    try:
        with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
            for k, v in (attrs or {}).items():
                f.attrs[k] = attr_value(v)
            write_group(f, tree)
    except OSError as e:
        raise LandscapeError(f"cannot write {path}: {e.strerror or e}",
                             "check the folder exists and is writable") from e
    return Path(path)


def _read_attr(v: Any) -> Any:
    if isinstance(v, bytes):
        v = v.decode()
    if isinstance(v, str):
        if v == "null":
            return None
        if v[:1] in "[{":
            try:
                return json.loads(v)
            except ValueError:
                return v
        return v
    if isinstance(v, np.generic):
        return v.item()
    return v


def read_group(group: h5py.Group) -> dict:
    out: dict[str, Any] = {k: _read_attr(v) for k, v in group.attrs.items()}
    for k, item in group.items():
        out[k] = read_group(item) if isinstance(item, h5py.Group) else item[()]
    return out


@contextmanager
def opened(path: str | Path, hint: str = "pass a file written by landscape") -> Iterator[h5py.File]:
    """``path`` open for reading; a missing or unreadable file is one LandscapeError."""
    path = Path(path)
    if not path.is_file():
        raise LandscapeError(f"no such file: {path}", "check the path")
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise LandscapeError(f"{path} is not a readable HDF5 file", hint) from e
    with f:
        yield f


def read_tree(path: str | Path) -> dict:
    """The whole file as a nested dict (root attributes included)."""
    with opened(path) as f:
        return read_group(f)
