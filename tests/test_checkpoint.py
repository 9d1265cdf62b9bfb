"""Checkpoint format: round trips, atomic save, one-line errors, foreign state_dicts."""

from __future__ import annotations

import hashlib
import os
import sys
import textwrap
import types
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from landscape.data import load_dataset
from landscape.errors import CheckpointError, ConfigError
from landscape.io.checkpoint import FORMAT, VERSION, Checkpoint, make_checkpoint
from landscape.models import build_model, model_kwargs_for

DATA = {"name": "digits", "kwargs": {"n_train": 64, "seed": 1}}


def trained(batchnorm: bool = False) -> tuple[Checkpoint, nn.Module]:
    """A cnn checkpoint on 64 digits, with weights and BN statistics moved off their init."""
    split = load_dataset(DATA["name"], image=True, **DATA["kwargs"])
    kwargs = model_kwargs_for("cnn", split, channels=[2, 3], hidden=[5], batchnorm=batchnorm)
    model = build_model("cnn", **kwargs)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(2):
        opt.zero_grad()
        nn.functional.cross_entropy(model(split.train[0]), split.train[1]).backward()
        opt.step()
    training = {
        "optimizer": "sgd",
        "lr": 0.1,
        "batch_size": 64,
        "step": 2,
        "epoch": 2,
        "seed": 0,
        "losses": (1.5, 1.4),
        "history": {"lr": [0.1, 0.1]},
    }
    ckpt = make_checkpoint(
        "cnn",
        kwargs,
        "digits",
        dict(image=True, **DATA["kwargs"]),
        "ce",
        model,
        training,
        split=split,
        extra={"optimizer_state": opt.state_dict(), "note": Path("x/y")},
    )
    return ckpt, model


def plain_types(obj) -> bool:
    if isinstance(obj, dict):
        return all(isinstance(k, (str, int)) and plain_types(v) for k, v in obj.items())
    if isinstance(obj, list):
        return all(plain_types(v) for v in obj)
    return obj is None or isinstance(obj, (torch.Tensor, str, int, float, bool))


# ---------------------------------------------------------------- round trip


@pytest.mark.parametrize("batchnorm", [False, True])
def test_round_trip_is_bitwise(tmp_path, batchnorm):
    ckpt, model = trained(batchnorm)
    path = ckpt.save(tmp_path / "a.pt")
    raw = torch.load(path, weights_only=True, map_location="cpu")
    assert raw["format"] == FORMAT and raw["version"] == VERSION and plain_types(raw)
    assert raw["training"]["losses"] == [1.5, 1.4] and raw["extra"]["note"] == "x/y"

    back = Checkpoint.load(path)
    assert back.native and back.path == path
    assert back.model == ckpt.model and back.data == ckpt.data and back.loss == "cross-entropy"
    assert back.training == ckpt.training and back.split == ckpt.split
    assert back.state_dict.keys() == model.state_dict().keys()
    for k, v in model.state_dict().items():
        assert back.state_dict[k].dtype == v.dtype and torch.equal(back.state_dict[k], v), k
    rebuilt = back.build_model()
    assert not rebuilt.training
    x = back.dataset().train[0]
    assert torch.equal(rebuilt(x), model.eval()(x))
    state = back.extra["optimizer_state"]
    assert state["param_groups"][0]["lr"] == 0.1


def test_atomic_save_leaves_no_temporary_file(tmp_path, monkeypatch):
    ckpt, _ = trained()
    ckpt.save(tmp_path / "m.pt")
    ckpt.save(tmp_path / "m.pt")  # overwrite in place
    assert os.listdir(tmp_path) == ["m.pt"]
    before = (tmp_path / "m.pt").read_bytes()

    def broken_save(obj, f, *a, **k):
        f.write(b"PK\x03\x04 half a file")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(KeyboardInterrupt):
        ckpt.save(tmp_path / "m.pt")
    assert os.listdir(tmp_path) == ["m.pt"]
    assert (tmp_path / "m.pt").read_bytes() == before


def test_save_rejects_non_plain_values(tmp_path):
    ckpt, _ = trained()
    ckpt.training["optimizer"] = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1)
    with pytest.raises(CheckpointError, match="training\\['optimizer'\\].*SGD"):
        ckpt.save(tmp_path / "m.pt")
    assert os.listdir(tmp_path) == []
    with pytest.raises(CheckpointError, match="folder .* does not exist"):
        trained()[0].save(tmp_path / "no" / "m.pt")


def test_identity_and_describe(tmp_path):
    ckpt, model = trained(batchnorm=True)
    path = ckpt.save(tmp_path / "c.pt")
    back = Checkpoint.load(path)
    ident = back.identity()
    assert ident["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    assert ident["path"] == str(path) and ident["format"] == FORMAT and ident["version"] == 1
    assert (ident["model"], ident["data"], ident["step"]) == ("cnn", "digits", 2)
    info = back.describe()
    assert info["parameters"] == sum(p.numel() for p in model.parameters())
    kinds = {t["name"]: t["kind"] for t in info["tensors"]}
    assert kinds["features.1.running_mean"] == "buffer"
    assert kinds["features.0.weight"] == "parameter"
    assert info["data"]["n_train"] == 64 and info["training"]["lr"] == 0.1
    assert info["extra"]["optimizer_state"]["param_groups"][0]["lr"] == 0.1
    import json

    json.dumps(info)  # JSON-ready


def test_dataset_fingerprint_mismatch_warns(tmp_path):
    ckpt, _ = trained()
    ckpt.split["fingerprint"] = "0" * 16
    back = Checkpoint.load(ckpt.save(tmp_path / "c.pt"))
    with pytest.warns(UserWarning, match="differ"):
        back.dataset()


def test_problem_passes_everything_to_problem(tmp_path, monkeypatch):
    calls = {}

    class FakeProblem:
        def __init__(self, model, loss, data, **kw):
            calls.update(model=model, loss=loss, data=data, **kw)

    monkeypatch.setitem(
        sys.modules, "landscape.problem", types.SimpleNamespace(Problem=FakeProblem)
    )
    ckpt, _ = trained()
    back = Checkpoint.load(ckpt.save(tmp_path / "c.pt"))
    back.problem("test", samples=10, seed=3, batch_size=7, dtype=torch.float64, train_mode=True)
    assert calls["loss"] == "cross-entropy" and isinstance(calls["model"], nn.Module)
    assert calls["data"][0].shape[0] == back.dataset().n_test
    assert (calls["samples"], calls["seed"], calls["batch_size"]) == (10, 3, 7)
    assert calls["dtype"] == torch.float64 and calls["train_mode"] is True
    assert calls["params"] is None and calls["device"] is None


def test_problem_with_the_real_problem(tmp_path):
    problem = pytest.importorskip("landscape.problem")
    ckpt, _ = trained()
    back = Checkpoint.load(ckpt.save(tmp_path / "c.pt"))
    prob = back.problem(samples=16, dtype=torch.float64, batch_size=5)
    assert isinstance(prob, problem.Problem)
    assert prob.n == 16 and prob.dtype == torch.float64 and prob.loss.name == "cross-entropy"
    n_params = sum(t.numel() for t in back.state_dict.values() if t.is_floating_point())
    assert prob.theta.numel() == n_params


# ---------------------------------------------------------------- bad inputs


class NotPlain:
    pass


def _bad_files(tmp: Path) -> dict[str, tuple[Path, str]]:
    """name -> (file, a word the error message must contain)."""
    ckpt, _ = trained()
    good = ckpt.save(tmp / "good.pt")
    data = good.read_bytes()
    files = {}

    def put(name, content, word):
        p = tmp / name
        p.write_bytes(content) if isinstance(content, bytes) else p.write_text(content)
        files[name] = (p, word)

    put("text.pt", "this is just text\n", "not a checkpoint")
    put("empty.pt", b"", "empty")
    put("truncated.pt", data[: len(data) // 2], "truncated or corrupt")
    # damage the stored pickle inside an intact zip archive
    with zipfile.ZipFile(good) as z:
        members = {n: z.read(n) for n in z.namelist()}
    pkl = next(n for n in members if n.endswith("data.pkl"))
    members[pkl] = members[pkl][: len(members[pkl]) // 2]
    with zipfile.ZipFile(tmp / "corrupt.pt", "w") as z:
        for n, b in members.items():
            z.writestr(n, b)
    files["corrupt.pt"] = (tmp / "corrupt.pt", "corrupt")
    torch.save({"state_dict": {"w": torch.ones(2)}, "obj": NotPlain()}, tmp / "code.pt")
    files["code.pt"] = (tmp / "code.pt", "not a plain-tensor file")
    np.savez(tmp / "arrays.npz", x=np.ones(3))
    files["arrays.npz"] = (tmp / "arrays.npz", "not a torch.save file")
    np.save(tmp / "array.npy", np.ones(3))
    files["array.npy"] = (tmp / "array.npy", "NumPy")
    torch.save({"format": FORMAT, "version": 99, "state_dict": {}}, tmp / "future.pt")
    files["future.pt"] = (tmp / "future.pt", "version 99")
    torch.save({"format": FORMAT, "version": 1, "model": {"name": "mlp"}}, tmp / "malformed.pt")
    files["malformed.pt"] = (tmp / "malformed.pt", "malformed")
    torch.save({"epoch": 3, "lr": 0.1}, tmp / "nostate.pt")
    files["nostate.pt"] = (tmp / "nostate.pt", "no state_dict")
    torch.save({"w": torch.ones(2)}, tmp / "foreign.pt")
    files["foreign.pt"] = (tmp / "foreign.pt", "--model and --data")
    files["missing.pt"] = (tmp / "missing.pt", "not found")
    (tmp / "folder").mkdir()
    files["folder"] = (tmp / "folder", "directory")
    return files


BAD = [
    "text.pt",
    "empty.pt",
    "truncated.pt",
    "corrupt.pt",
    "code.pt",
    "arrays.npz",
    "array.npy",
    "future.pt",
    "malformed.pt",
    "nostate.pt",
    "foreign.pt",
    "missing.pt",
    "folder",
]


def test_every_bad_input_raises_one_line_checkpoint_error(tmp_path):
    files = _bad_files(tmp_path)
    assert sorted(BAD) == sorted(files)
    for name in BAD:
        path, word = files[name]
        with pytest.raises(CheckpointError) as e:
            Checkpoint.load(path)
        text = str(e.value)
        assert word in e.value.message, (name, text)
        assert "\n" not in text and e.value.hint, (name, text)


def test_unreadable_file(tmp_path, monkeypatch):
    ckpt, _ = trained()
    path = ckpt.save(tmp_path / "c.pt")

    def denied(*a, **k):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr("landscape.io.checkpoint.open", denied, raising=False)
    with pytest.raises(CheckpointError, match="cannot read checkpoint .*Permission denied"):
        Checkpoint.load(path)


def test_mismatched_weights_list_keys_and_shapes(tmp_path):
    ckpt, _ = trained()
    ckpt.model["kwargs"]["hidden"] = [6]  # a different architecture than the weights
    back = Checkpoint.load(ckpt.save(tmp_path / "c.pt"))
    with pytest.raises(CheckpointError) as e:
        back.build_model()
    assert (
        "shape mismatch" in e.value.message
        and "classifier.1.weight [5, 12] vs [6, 12]" in e.value.message
    )
    assert "\n" not in str(e.value)
    ckpt.model["kwargs"]["hidden"] = [5, 4]
    with pytest.raises(CheckpointError, match="missing keys classifier.5.weight"):
        Checkpoint.load(ckpt.save(tmp_path / "c.pt")).build_model()


def test_unknown_loss(tmp_path):
    ckpt, _ = trained()
    path = ckpt.save(tmp_path / "c.pt")
    with pytest.raises(ConfigError, match="unknown loss"):
        Checkpoint.load(path, loss="hinge")
    assert Checkpoint.load(path, loss="mse").loss == "mse"


# ---------------------------------------------------------------- foreign files

FACTORIES = """
import torch
from torch import nn

def net():
    torch.manual_seed(123)
    return nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))

def wrong_net():
    return nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2), nn.Linear(2, 2))

def data():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(20, 3, generator=g)
    return x, (x[:, 0] > 0).long()

def regression():
    x = torch.randn(20, 3, generator=torch.Generator().manual_seed(0))
    return x, x[:, :2]
"""


@pytest.mark.parametrize("wrap", ["plain", "state_dict", "model_state_dict", "model", "module."])
def test_foreign_state_dict_with_factories(tmp_path, wrap):
    factories = tmp_path / "facts.py"
    factories.write_text(textwrap.dedent(FACTORIES))
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    sd = model.state_dict()
    if wrap == "module.":
        obj = {f"module.{k}": v for k, v in sd.items()}
    elif wrap == "plain":
        obj = sd
    else:
        obj = {wrap: sd, "epoch": 7, "optimizer": {"state": {}}}
    torch.save(obj, tmp_path / "foreign.pt")

    with pytest.raises(CheckpointError, match="needs --data"):
        Checkpoint.load(tmp_path / "foreign.pt", model=f"{factories}:net")
    ckpt = Checkpoint.load(
        tmp_path / "foreign.pt", model=f"{factories}:net", data=f"{factories}:data"
    )
    assert not ckpt.native and ckpt.loss == "cross-entropy"  # inferred from integer labels
    net = ckpt.build_model()
    x = ckpt.dataset().train[0]
    assert torch.equal(net(x), model(x))
    if wrap not in ("plain", "module."):
        assert ckpt.training == {"epoch": 7} and ckpt.extra["foreign_key"] == wrap
    assert ckpt.identity()["format"] == "foreign-state-dict"
    assert ckpt.describe()["parameters"] == 3 * 4 + 4 + 4 * 2 + 2

    # re-saved, it is a native checkpoint that remembers its factories
    again = Checkpoint.load(ckpt.save(tmp_path / "native.pt"))
    assert again.native and torch.equal(again.build_model()(x), model(x))

    reg = Checkpoint.load(
        tmp_path / "foreign.pt", model=f"{factories}:net", data=f"{factories}:regression"
    )
    assert reg.loss == "mse" and reg.dataset().task == "regression"
    with pytest.raises(CheckpointError, match="missing keys 3.weight, 3.bias"):
        Checkpoint.load(
            tmp_path / "foreign.pt", model=f"{factories}:wrong_net", data=f"{factories}:data"
        ).build_model()


def test_factory_spec_errors(tmp_path):
    from landscape.data.source import as_source
    from landscape.errors import LandscapeError
    from landscape.factory import load_factory

    (tmp_path / "f.py").write_text("def a():\n    return 1\nx = 3\n")
    (tmp_path / "broken.py").write_text("import does_not_exist_anywhere\n")
    assert load_factory(f"{tmp_path / 'f.py'}:a")() == 1
    assert load_factory("landscape.models:build_model").__name__ == "build_model"
    cases = {
        f"{tmp_path / 'nope.py'}:a": "factory file not found",
        f"{tmp_path / 'f.py'}:b": "has no attribute 'b'",
        f"{tmp_path / 'f.py'}:x": "not a callable",
        f"{tmp_path / 'broken.py'}:a": "error while importing",
        "no_such_package_xyz.mod:fn": "factory module not found",
        "landscape.models": "no ':FUNCTION' part",
    }
    for spec, word in cases.items():
        with pytest.raises(LandscapeError) as e:
            load_factory(spec)
        assert word in e.value.message and "\n" not in str(e.value), spec
    with pytest.raises(LandscapeError, match="got str"):
        as_source("data")
    with pytest.raises(LandscapeError, match="inputs hold 3 samples but targets 4"):
        as_source((torch.zeros(3, 2), torch.zeros(4)))
    ds = torch.utils.data.TensorDataset(torch.zeros(3, 2), torch.zeros(3))
    assert as_source(ds).x is ds.tensors[0]
    src = as_source([np.zeros((3, 2)), np.arange(3)])
    assert isinstance(src.x, torch.Tensor) and src.y.tolist() == [0, 1, 2]
