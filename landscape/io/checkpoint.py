"""The landscape checkpoint: a versioned, self-describing dict of plain values and tensors.

Written with ``torch.save`` and read with ``torch.load(path, weights_only=True,
map_location="cpu")``, so loading never executes pickled code. Version 1 layout::

    {"format": "landscape-checkpoint", "version": 1,
     "model": {"name": str, "kwargs": dict},      # MODELS key or FILE.py:FUNCTION
     "data": {"name": str, "kwargs": dict},       # DATASETS key or FILE.py:FUNCTION
     "loss": "cross-entropy" | "mse",
     "state_dict": {str: Tensor},
     "training": {"optimizer", "lr", "batch_size", "step", "epoch", "seed", ...},
     "split": {"n_train", "n_test", "task", "num_classes", "input_shape", "fingerprint", ...},
     "extra": {...}}

Values are only tensors, str, int, float, bool, None, lists and dicts. A *foreign* file (a plain
``state_dict``, or a dict holding one under ``state_dict`` / ``model_state_dict`` / ``model``) is
read too, given a model factory, a data factory and (optionally) a loss."""

from __future__ import annotations

import hashlib
import math
import os
import pickle
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor, nn

from landscape.errors import CheckpointError, first_line
from landscape.io.atomic import atomic_path

if TYPE_CHECKING:
    from landscape.data import Split
    from landscape.problem import Problem

FORMAT = "landscape-checkpoint"
VERSION = 1
FOREIGN_KEYS = ("state_dict", "model_state_dict", "model")
_FOREIGN_HINT = (
    "pass --model FILE.py:FUNCTION and --data FILE.py:FUNCTION, and --loss unless the data's "
    "targets decide it"
)
_RESAVE_HINT = (
    "if you trust it, load it in Python with torch.load(path, weights_only=False) and re-save "
    "the tensors only: torch.save(model.state_dict(), path)"
)


def normalize_loss(loss: str) -> str:
    """The loss's name from itself or an alias (:func:`landscape.losses.canonical`)."""
    from landscape.losses import canonical

    return canonical(loss)


def plain(value: Any, where: str = "value") -> Any:
    """``value`` as tensors, str, int, float, bool, None, lists and dicts only (what
    ``torch.load(weights_only=True)`` accepts and tools in other languages can read).

    Tuples become lists, NumPy scalars and paths become Python scalars and strings, arrays become
    tensors, dtypes and devices become strings; anything else raises ``CheckpointError``."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, Tensor):
        return value.detach().cpu()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(value)).clone()
    if isinstance(value, (Path, torch.dtype, torch.device)):
        return str(value)
    if isinstance(value, (list, tuple)):
        return [plain(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if not isinstance(k, (str, int)) or isinstance(k, bool):
                raise CheckpointError(
                    f"cannot store key {k!r} of {where} in a checkpoint",
                    "use str or int dictionary keys",
                )
            out[k] = plain(v, f"{where}[{k!r}]")
        return out
    raise CheckpointError(
        f"cannot store {where} of type {type(value).__name__} in a checkpoint",
        "store tensors, numbers, strings, lists and dicts only",
    )


def _few(items: list[str], k: int = 3) -> str:
    more = f" (+{len(items) - k} more)" if len(items) > k else ""
    return ", ".join(items[:k]) + more


def state_dict_mismatch(have: dict, want: dict, labels: tuple[str, str, str] = (
        "missing keys", "unexpected keys", "shape mismatch (checkpoint vs model)")) -> list[str]:
    """What keeps ``have`` from loading where ``want`` is expected: its missing keys, its
    unexpected keys and its tensors of another shape (a few of each, under ``labels``)."""
    missing = [k for k in want if k not in have]
    unexpected = [k for k in have if k not in want]
    shapes = [f"{k} {list(have[k].shape)} vs {list(want[k].shape)}" for k in want
              if k in have and tuple(have[k].shape) != tuple(want[k].shape)]
    return [f"{label} {_few(items)}" for label, items in zip(labels, (missing, unexpected, shapes))
            if items]


def _is_state_dict(obj: Any) -> bool:
    return (
        isinstance(obj, dict)
        and any(isinstance(v, Tensor) for v in obj.values())
        and all(
            isinstance(k, str) and isinstance(v, Tensor) for k, v in obj.items() if k != "_metadata"
        )
    )


def _strip_prefix(sd: dict[str, Tensor]) -> dict[str, Tensor]:
    """Drop a ``module.`` (DataParallel) or ``_orig_mod.`` (torch.compile) prefix on every key."""
    sd = {k: v for k, v in sd.items() if k != "_metadata"}
    for prefix in ("module.", "_orig_mod."):
        if sd and all(k.startswith(prefix) for k in sd):
            sd = {k[len(prefix) :]: v for k, v in sd.items()}
    return sd


def _read(path: Path) -> Any:
    """``torch.load(weights_only=True)`` with every failure turned into one CheckpointError."""
    if not path.exists():
        raise CheckpointError(f"checkpoint not found: {path}", "check the path")
    if path.is_dir():
        found = sorted(p.name for ext in ("*.pt", "*.pth", "*.ckpt") for p in path.glob(ext))
        hint = (
            f"pass a file inside it, e.g. {path / found[0]}" if found else "pass a checkpoint file"
        )
        raise CheckpointError(f"{path} is a directory, not a checkpoint file", hint)
    try:
        with open(path, "rb") as f:
            head = f.read(8)
    except OSError as e:
        raise CheckpointError(
            f"cannot read checkpoint {path}: {e.strerror or e}", "check the file's permissions"
        ) from e
    if not head:
        raise CheckpointError(f"{path} is empty", "the save was interrupted; write it again")
    if head.startswith(b"PK\x03\x04"):
        try:
            with zipfile.ZipFile(path) as z:
                names = z.namelist()
        except (zipfile.BadZipFile, OSError) as e:
            raise CheckpointError(
                f"{path} is truncated or corrupt (broken zip archive)",
                "copy or save the checkpoint again",
            ) from e
        if not any(n.endswith("data.pkl") for n in names):
            raise CheckpointError(
                f"{path} is a zip archive but not a torch.save file (e.g. an .npz)",
                "pass a file written by torch.save or landscape train",
            )
    elif not head.startswith(b"\x80"):
        kind = {b"\x93NUMPY": "a NumPy .npy file", b"\x89HDF": "an HDF5 file"}.get(
            head[:6] if head.startswith(b"\x93") else head[:4], "not a torch.save file"
        )
        raise CheckpointError(
            f"{path} is not a checkpoint ({kind})",
            "pass a file written by torch.save or landscape train",
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.load(path, weights_only=True, map_location="cpu")
    except pickle.UnpicklingError as e:
        if "weights only" in str(e).lower():
            raise CheckpointError(
                f"{path} is not a plain-tensor file: loading it would execute pickled code",
                _RESAVE_HINT,
            ) from e
        raise CheckpointError(
            f"{path} is corrupt ({first_line(e)})", "copy or save the checkpoint again"
        ) from e
    except Exception as e:  # torch raises RuntimeError, ValueError, EOFError, KeyError, ...
        raise CheckpointError(
            f"{path} is truncated or corrupt ({first_line(e)})",
            "copy or save the checkpoint again",
        ) from e


@dataclass(eq=False)
class Checkpoint:
    """A model's weights with everything needed to rebuild its model, data and loss.

    ``model`` and ``data`` are ``{"name", "kwargs"}`` records resolved through
    ``landscape.models.build_model`` and ``landscape.data.load_dataset`` (a name
    ``FILE.py:FUNCTION`` calls a user factory). ``native`` is False for a foreign state_dict.
    ``path`` is where it was loaded from or last saved to.
    """

    model: dict
    data: dict
    loss: str
    state_dict: dict[str, Tensor]
    training: dict = field(default_factory=dict)
    split: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)
    version: int = VERSION
    native: bool = True
    path: Path | None = None
    _dataset: Any = field(default=None, repr=False, compare=False)
    _module: nn.Module | None = field(default=None, repr=False, compare=False)
    _sha256: str | None = field(default=None, repr=False, compare=False)

    # ------------------------------------------------------------------ file format

    def to_dict(self) -> dict:
        """The version-1 file content (plain values and CPU tensors only)."""
        return {
            "format": FORMAT,
            "version": VERSION,
            "model": plain(
                {"name": self.model["name"], "kwargs": self.model.get("kwargs", {})}, "model"
            ),
            "data": plain(
                {"name": self.data["name"], "kwargs": self.data.get("kwargs", {})}, "data"
            ),
            "loss": normalize_loss(self.loss),
            "state_dict": {str(k): v.detach().cpu() for k, v in self.state_dict.items()},
            "training": plain(self.training, "training"),
            "split": plain(self.split, "split"),
            "extra": plain(self.extra, "extra"),
        }

    def save(self, path: str | os.PathLike) -> Path:
        """Write atomically (:func:`landscape.io.atomic.atomic_path`: an interruption leaves the
        old file or none, never half)."""
        path = Path(path)
        if path.is_dir():
            raise CheckpointError(f"{path} is a directory", "give a file name such as model.pt")
        if not path.parent.is_dir():
            raise CheckpointError(
                f"cannot save checkpoint: folder {path.parent} does not exist", "create it first"
            )
        from landscape.distributed import is_main

        self.path = path
        if not is_main():  # in a torchrun job only rank 0 writes
            return path
        payload = self.to_dict()
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            torch.save(payload, f)
        self.path, self._sha256 = path, None
        return path

    @classmethod
    def load(
        cls,
        path: str | os.PathLike,
        model: str | None = None,
        data: str | None = None,
        loss: str | None = None,
        model_kwargs: dict | None = None,
        data_kwargs: dict | None = None,
    ) -> Checkpoint:
        """Read a checkpoint (never executing pickled code).

        A native file rebuilds its model and data from the registries; ``model`` / ``data``
        (factory specs ``FILE.py:FUNCTION``) and ``loss`` override what it records. A foreign
        file needs ``model`` and ``data``; without ``loss`` the data's task decides
        (classification -> cross-entropy, regression -> mse). ``model_kwargs`` / ``data_kwargs``
        are the factories' keyword options (``--model-arg`` / ``--data-arg``): with a new factory
        they are its options, without one they update the recorded ones.
        """
        from landscape.models import hf

        if str(path).startswith(hf.PREFIX):
            return cls._from_hf(str(path)[len(hf.PREFIX):], data, loss, data_kwargs)
        p = Path(path)
        obj = _read(p)
        if isinstance(obj, dict) and obj.get("format") == FORMAT:
            ckpt = cls._from_native(obj, p)
            if model is not None:
                ckpt.model = {"name": str(model), "kwargs": dict(model_kwargs or {})}
            elif model_kwargs:
                ckpt.model = {**ckpt.model, "kwargs": {**ckpt.model.get("kwargs", {}),
                                                       **model_kwargs}}
            if data is not None:
                ckpt.data = {"name": str(data), "kwargs": dict(data_kwargs or {})}
                ckpt.split = {}
            elif data_kwargs:
                ckpt.data = {**ckpt.data, "kwargs": {**ckpt.data.get("kwargs", {}), **data_kwargs}}
                ckpt.split = {}
        else:
            ckpt = cls._from_foreign(obj, p, model, data)
            ckpt.model["kwargs"] = dict(model_kwargs or {})
            ckpt.data["kwargs"] = dict(data_kwargs or {})
        ckpt.path = p
        if loss is not None:
            ckpt.loss = normalize_loss(loss)
        elif not ckpt.loss:
            ckpt.loss = ckpt.dataset().default_loss
        return ckpt

    @classmethod
    def _from_native(cls, obj: dict, p: Path) -> Checkpoint:
        version = obj.get("version")
        if version != VERSION:
            newer = isinstance(version, int) and not isinstance(version, bool) and version > VERSION
            raise CheckpointError(
                f"{p} has checkpoint format version {version!r}; this landscape reads version "
                f"{VERSION}",
                "upgrade landscape" if newer else "re-save it with landscape",
            )
        for key, kind in (("model", dict), ("data", dict), ("loss", str), ("state_dict", dict)):
            if not isinstance(obj.get(key), kind):
                raise CheckpointError(
                    f"{p} is a malformed landscape checkpoint: {key!r} is missing or not a "
                    f"{kind.__name__}",
                    "re-save it with landscape",
                )
        for key in ("model", "data"):
            if not isinstance(obj[key].get("name"), str):
                raise CheckpointError(
                    f"{p} is a malformed landscape checkpoint: {key}.name is missing",
                    "re-save it with landscape",
                )
        return cls(
            model={"name": obj["model"]["name"], "kwargs": dict(obj["model"].get("kwargs") or {})},
            data={"name": obj["data"]["name"], "kwargs": dict(obj["data"].get("kwargs") or {})},
            loss=normalize_loss(obj["loss"]),
            state_dict=dict(obj["state_dict"]),
            training=dict(obj.get("training") or {}),
            split=dict(obj.get("split") or {}),
            extra=dict(obj.get("extra") or {}),
            version=VERSION,
            native=True,
        )

    @classmethod
    def _from_hf(cls, directory: str, data: str | None, loss: str | None,
                 data_kwargs: dict | None) -> Checkpoint:
        """A local Hugging Face directory (:mod:`landscape.models.hf`) with a data factory."""
        from landscape.models import hf

        if data is None:
            raise CheckpointError(f"hf:{directory} holds a model but no data, and needs --data",
                                  "pass --data FILE.py:FUNCTION returning token batches")
        net = hf.load_pretrained(directory)
        ckpt = cls(model={"name": hf.PREFIX + directory, "kwargs": {}},
                   data={"name": str(data), "kwargs": dict(data_kwargs or {})},
                   loss="", state_dict=net.state_dict(),
                   extra={"architecture": hf.architecture(directory)}, native=False,
                   path=Path(directory).expanduser())
        ckpt._module = net
        ckpt.loss = normalize_loss(loss or hf.default_loss(directory)
                                   or ckpt.dataset().default_loss)
        return ckpt

    @classmethod
    def _from_foreign(cls, obj: Any, p: Path, model: str | None, data: str | None) -> Checkpoint:
        where, key_used, sd = "", "", None
        if _is_state_dict(obj):
            sd = obj
        elif isinstance(obj, dict):
            for key in FOREIGN_KEYS:
                if _is_state_dict(obj.get(key)):
                    where, key_used, sd = f" under {key!r}", key, obj[key]
                    break
        if sd is None:
            what = (
                f"a dict with keys {_few([repr(k) for k in obj], 5)}"
                if isinstance(obj, dict)
                else f"a {type(obj).__name__}"
            )
            raise CheckpointError(
                f"{p} is not a checkpoint: it holds {what} and no state_dict",
                "pass a file saved by landscape train or torch.save(model.state_dict(), path)",
            )
        if model is None or data is None:
            missing = " and ".join(
                n for n, v in (("--model", model), ("--data", data)) if v is None
            )
            raise CheckpointError(
                f"{p} is a foreign checkpoint (a plain state_dict{where}) and needs {missing}",
                _FOREIGN_HINT,
            )
        training = {}
        if isinstance(obj, dict) and sd is not obj:
            training = {
                k: v
                for k, v in obj.items()
                if isinstance(k, str)
                and isinstance(v, (int, float, str, bool))
                and not (isinstance(v, float) and not math.isfinite(v))
            }
        return cls(
            model={"name": str(model), "kwargs": {}},
            data={"name": str(data), "kwargs": {}},
            loss="",
            state_dict=_strip_prefix(sd),
            training=training,
            extra={"foreign_key": key_used},
            native=False,
        )

    # ------------------------------------------------------------------ rebuilding

    def build_model(self) -> nn.Module:
        """The model with this checkpoint's weights loaded strictly, in eval mode.

        A key or shape mismatch raises one CheckpointError naming a few of each.
        """
        from landscape.models import build_model

        if self._module is not None:  # an hf: model, loaded with its weights
            return self._module.eval()
        name = self.model["name"]
        net = build_model(name, **self.model.get("kwargs", {}))
        own = net.state_dict()
        sd = self.state_dict
        parts = state_dict_mismatch(sd, own)
        if parts:
            hint = (
                "the recorded model options do not fit the weights; re-save the checkpoint"
                if self.native and ":" not in name
                else "pass the --model factory that built these weights (same architecture)"
            )
            raise CheckpointError(
                f"state_dict does not fit model {name!r}: {'; '.join(parts)}", hint
            )
        dtype = next((t.dtype for t in sd.values() if t.is_floating_point()), None)
        if dtype is not None:  # a float64 checkpoint keeps its precision
            net = net.to(dtype=dtype)
        net.load_state_dict(sd, strict=True)
        return net.eval()

    def dataset(self) -> Split:
        """The recorded dataset (loaded once, then cached). Warns if its train tensors differ
        from the fingerprint recorded at save time."""
        if self._dataset is None:
            from landscape.data import fingerprint, load_dataset

            split = load_dataset(self.data["name"], **self.data.get("kwargs", {}))
            recorded = self.split.get("fingerprint")
            if recorded and fingerprint(split.train) != recorded:
                warnings.warn(
                    f"the training data of {self.data['name']!r} differ from those recorded in "
                    f"the checkpoint (fingerprint {recorded})",
                    stacklevel=2,
                )
            self._dataset = split
        return self._dataset

    def problem(
        self,
        split: str = "train",
        samples: int | None = None,
        seed: int = 0,
        batch_size: int = 256,
        params: Any = None,
        device: Any = None,
        dtype: Any = None,
        train_mode: bool = False,
        bn_batch: int | None = None,
        memory: Any = None,
        allow_random_data: bool = False,
    ) -> Problem:
        """``landscape.problem.Problem`` for this model, loss and the ``train`` / ``test`` data
        (streamed when the data factory gives a Dataset or a DataLoader)."""
        from landscape.problem import Problem

        model = self.build_model()
        data = (
            self.dataset().for_loss(normalize_loss(self.loss)).part(split)
        )  # one-hot for mse on classes
        problem = Problem(model, self.loss, data, batch_size=batch_size, samples=samples,
                          seed=seed, params=params, device=device, dtype=dtype,
                          train_mode=train_mode, bn_batch=bn_batch, memory=memory,
                          allow_random_data=allow_random_data)
        problem.update = self.extra.get("update")  # the last step's update (landscape train)
        return problem

    # ------------------------------------------------------------------ descriptions

    def sha256(self) -> str | None:
        """First 16 hex digits of the sha256 of the file's bytes (None before it is saved)."""
        if self.path is None:
            return None
        if self._sha256 is None:
            h = hashlib.sha256()
            files = sorted(f for f in self.path.iterdir() if f.is_file()
                           and not f.name.startswith(".")) if self.path.is_dir() else [self.path]
            for file in files:  # a model directory: its files in name order
                with open(file, "rb") as f:
                    for chunk in iter(lambda f=f: f.read(1 << 20), b""):
                        h.update(chunk)
            self._sha256 = h.hexdigest()[:16]
        return self._sha256

    def identity(self) -> dict:
        """What identifies this checkpoint in a report (plain values; None where unknown)."""
        return {
            "path": None if self.path is None else str(self.path),
            "sha256": self.sha256(),
            "format": FORMAT if self.native else (
                "hf" if self._module is not None else "foreign-state-dict"),
            "version": self.version if self.native else None,
            "model": self.model["name"],
            "data": self.data["name"],
            "loss": self.loss,
            "step": self.training.get("step"),
        }

    def describe(self) -> dict:
        """A JSON-ready summary for ``landscape info`` (builds the model, not the data)."""
        net = self.build_model()
        kinds = {n: "parameter" for n, _ in net.named_parameters()}
        tensors = [
            {
                "name": k,
                "shape": list(v.shape),
                "dtype": str(v.dtype).replace("torch.", ""),
                "kind": kinds.get(k, "buffer"),
            }
            for k, v in self.state_dict.items()
        ]
        return {
            "identity": self.identity(),
            "model": {"name": self.model["name"], "kwargs": _summary(self.model.get("kwargs", {}))},
            "parameters": sum(p.numel() for p in net.parameters()),
            "buffers": sum(b.numel() for b in net.buffers()),
            "tensors": tensors,
            "loss": self.loss,
            "training": _summary(self.training),
            "data": {
                "name": self.data["name"],
                "kwargs": _summary(self.data.get("kwargs", {})),
                **_summary(self.split),
            },
            "extra": _summary(self.extra),
        }


def load(path: str | os.PathLike, **options: Any) -> Checkpoint:
    """``landscape.load``: read a checkpoint, ours or anyone's ``state_dict`` (then with its
    ``model`` and ``data`` factories, ``FILE.py:FUNCTION``). ``options``: ``model``, ``data``,
    ``loss``, ``model_kwargs``, ``data_kwargs``, as :meth:`Checkpoint.load` takes them.

    >>> import landscape, tempfile, os
    >>> from landscape.io.checkpoint import make_checkpoint
    >>> from landscape.models import build_model
    >>> kwargs = {"in_dim": 64, "out_dim": 10, "widths": [8]}
    >>> net = build_model("mlp", **kwargs)
    >>> folder = tempfile.mkdtemp()
    >>> path = os.path.join(folder, "m.pt")
    >>> _ = make_checkpoint("mlp", kwargs, "digits", {}, "cross-entropy", net, {}).save(path)
    >>> ckpt = landscape.load(path)
    >>> problem = ckpt.problem(samples=100, dtype="float64")
    >>> problem.n, problem.p
    (100, 610)
    """
    return Checkpoint.load(path, **options)


def _summary(value: Any) -> Any:
    """JSON-ready: tensors as ``"tensor[shape] dtype"`` (scalars as numbers)."""
    if isinstance(value, Tensor):
        if value.numel() == 1 and value.dim() == 0:
            return value.item()
        return f"tensor{list(value.shape)} {str(value.dtype).replace('torch.', '')}"
    if isinstance(value, dict):
        return {str(k): _summary(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_summary(v) for v in value]
    return value


def make_checkpoint(
    model_name: str,
    model_kwargs: dict,
    data_name: str,
    data_kwargs: dict,
    loss: str,
    model: nn.Module,
    training: dict,
    *,
    split: Split | dict | None = None,
    extra: dict | None = None,
) -> Checkpoint:
    """A native checkpoint of ``model``'s current weights (copied to CPU).

    ``split`` (a ``Split`` or its ``record()``) stores sizes and a data fingerprint; ``extra``
    holds anything else plain (e.g. an optimizer ``state_dict``).
    """
    from landscape.data import Split

    record = split.record() if isinstance(split, Split) else dict(split or {})
    return Checkpoint(
        model={"name": str(model_name), "kwargs": plain(dict(model_kwargs or {}), "model_kwargs")},
        data={"name": str(data_name), "kwargs": plain(dict(data_kwargs or {}), "data_kwargs")},
        loss=normalize_loss(loss),
        state_dict={k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
        training=plain(dict(training or {}), "training"),
        split=plain(record, "split"),
        extra=plain(dict(extra or {}), "extra"),
    )


def report_header(ckpt: Checkpoint, problem: Any, seconds: float | None = None) -> dict:
    """The keys every report (command output, study item) starts with: the checkpoint, its
    identity and the problem's size, loss, device and dtype."""
    out = {"checkpoint": str(ckpt.path) if getattr(ckpt, "path", None) else None,
           "identity": ckpt.identity(), "params": problem.p, "samples": problem.n,
           "loss": problem.loss.name, "device": str(problem.device),
           "dtype": str(problem.dtype).replace("torch.", "")}
    if hasattr(problem, "data_report"):
        out["data"] = problem.data_report()
    if seconds is not None:
        out["seconds"] = seconds
    return out
