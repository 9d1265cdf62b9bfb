"""``landscape doctor`` flags each fault on a model built to have it, and nothing on a clean one
(issue 16)."""

from __future__ import annotations

import json
import os
import textwrap

import h5py
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from landscape.cli.app import app

runner = CliRunner()

FACTORIES = textwrap.dedent('''
    import torch
    from torch import nn
    from torch.utils.data import DataLoader, TensorDataset

    def data(kind="plain"):
        g = torch.Generator().manual_seed(0)
        X = torch.randn(64, 5, generator=g, dtype=torch.float64)
        if kind == "regression":  # an exact linear fit exists
            w = torch.linspace(-1, 1, 5, dtype=torch.float64)
            return X, (X @ w)[:, None]
        Y = torch.randint(0, 3, (64,), generator=g)
        return DataLoader(TensorDataset(X, Y), batch_size=16, shuffle=kind == "shuffled")

    def model(dropout=0.0, bn=False, out=3):
        torch.manual_seed(0)
        if out == 1:
            return nn.Sequential(nn.Linear(5, 1)).double()
        layers = [nn.Linear(5, 8)] + ([nn.BatchNorm1d(8)] if bn else [])
        return nn.Sequential(*layers, nn.Tanh(), nn.Dropout(dropout), nn.Linear(8, 3)).double()
''')


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("doctor")
    (d / "f.py").write_text(FACTORIES)
    import importlib.util

    spec = importlib.util.spec_from_file_location("doctor_factories", d / "f.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    torch.save(mod.model().state_dict(), d / "plain.pt")
    torch.save(mod.model(dropout=0.5).state_dict(), d / "dropout.pt")
    bn = mod.model(bn=True)
    X = mod.data().dataset.tensors[0]
    bn.train()
    with torch.no_grad():
        bn(X)  # running statistics of these data (momentum 0.1: one step toward them)
    bn.eval()
    good = {k: v.clone() for k, v in bn.state_dict().items()}
    good["1.running_mean"] = X.double() @ bn[0].weight.T.double()
    good["1.running_mean"] = (good["1.running_mean"] + bn[0].bias).mean(0).detach()
    good["1.running_var"] = ((X @ bn[0].weight.T + bn[0].bias).var(0)).detach()
    good["4.weight"] = 10 * good["4.weight"]  # outputs that depend on the features
    torch.save(good, d / "bn.pt")
    bad = dict(good, **{"1.running_mean": good["1.running_mean"] + 3.0})
    torch.save(bad, d / "bn_stale.pt")
    lin = mod.model(out=1)
    with torch.no_grad():
        lin[0].weight.copy_(torch.linspace(-1, 1, 5, dtype=torch.float64) + 1e-6)
        lin[0].bias.zero_()
    torch.save(lin.state_dict(), d / "fit.pt")
    nan = mod.model().state_dict()
    nan["0.weight"][0, 0] = float("nan")
    torch.save(nan, d / "nan.pt")
    return d


def doctor(files, ckpt, *args, model_args=(), data_kind="plain"):
    r = runner.invoke(app, ["doctor", str(files / ckpt), "--model", f"{files / 'f.py'}:model",
                            "--data", f"{files / 'f.py'}:data", "--data-arg",
                            f"kind={data_kind}", *model_args, *map(str, args), "--json"])
    assert r.exit_code == 0, r.output
    return {f["name"] if f["name"] != "slice-range" else f"slice-range-{i}": f
            for i, f in enumerate(json.loads(r.stdout)["findings"])}


def flagged(found: dict) -> dict[str, str]:
    return {k: f["verdict"] for k, f in found.items() if f["verdict"] != "ok"}


def test_a_clean_checkpoint_gives_no_finding():
    r = runner.invoke(app, ["doctor", "checkpoints/digits-mlp-gd.pt", "--json"])
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    assert [f["verdict"] for f in d["findings"]] == ["ok"] * 7 and d["problems"] == 0


def test_non_finite_weights(files):
    found = doctor(files, "nan.pt")
    assert list(found) == ["finite"] and found["finite"]["verdict"] == "fail"


def test_a_shuffling_loader(files):
    found = doctor(files, "plain.pt", data_kind="shuffled")
    assert found["data"]["verdict"] == "fail" and "shuffle" in found["data"]["found"]


def test_dropout_active_in_train_mode(files):
    args = ("--model-arg", "dropout=0.5")
    assert "dropout" not in flagged(doctor(files, "dropout.pt", model_args=args))
    found = doctor(files, "dropout.pt", "--train-mode", model_args=args)
    assert found["dropout"]["verdict"] == "fail" and "0" in found["dropout"]["found"]


def test_stale_batchnorm_statistics_and_scale_invariance(files):
    args = ("--model-arg", "bn=true")
    good = doctor(files, "bn.pt", model_args=args)
    assert good["batchnorm"]["verdict"] == "ok"
    assert good["scale-invariance"]["verdict"] == "warn" and "0.weight" in \
        good["scale-invariance"]["found"]  # the Linear before BatchNorm
    stale = doctor(files, "bn_stale.pt", model_args=args)
    assert stale["batchnorm"]["verdict"] == "fail"
    assert "--recompute-bn" in stale["batchnorm"]["fix"]


def test_float32_at_a_loss_too_small_to_resolve(files):
    args = ("--model-arg", "out=1", "--loss", "mse")
    found = doctor(files, "fit.pt", "--dtype", "float32", model_args=args, data_kind="regression")
    assert found["precision"]["verdict"] == "fail" and "float64" in found["precision"]["fix"]
    assert doctor(files, "fit.pt", "--dtype", "float64", model_args=args,
                  data_kind="regression")["precision"]["verdict"] == "ok"


def test_a_point_that_is_no_minimum(files):
    found = doctor(files, "plain.pt")  # the initial weights
    assert found["minimum"]["verdict"] == "warn"
    assert set(flagged(found)) == {"minimum"}


def test_a_slice_too_narrow_too_wide_unnormalised_and_non_finite(files, tmp_path):
    common = ["--model", f"{files / 'f.py'}:model", "--data", f"{files / 'f.py'}:data",
              "--model-arg", "bn=true", "--points", "3", "--dims", "2"]
    for name, extra in (("narrow", ["--range", "-1e-4", "1e-4"]),
                        ("wide", ["--range", "-1e4", "1e4"]),
                        ("layer", ["--norm", "layer"])):
        r = runner.invoke(app, ["slice", str(files / "bn.pt"), *common, *extra, "--out",
                                str(tmp_path / f"{name}.h5")])
        assert r.exit_code == 0, r.output
    args = ("--model-arg", "bn=true")
    narrow = doctor(files, "bn.pt", "--slice", tmp_path / "narrow.h5", model_args=args)
    assert [narrow[k]["verdict"] for k in narrow if k.startswith("slice-range")] == ["warn"] * 2
    assert "too narrow" in narrow["slice-range-9"]["found"]
    wide = doctor(files, "bn.pt", "--slice", tmp_path / "wide.h5", model_args=args)
    assert "too wide" in wide["slice-range-9"]["found"]
    layer = doctor(files, "bn.pt", "--slice", tmp_path / "layer.h5", model_args=args)
    assert layer["slice-normalisation"]["verdict"] == "fail"
    with h5py.File(tmp_path / "layer.h5", "r+") as f:
        v = f["values/train_loss"][()]
        v[0, 0] = np.nan
        f["values/train_loss"][...] = v
    assert doctor(files, "bn.pt", "--slice", tmp_path / "layer.h5",
                  model_args=args)["slice-values"]["verdict"] == "fail"
    r = runner.invoke(app, ["doctor", "checkpoints/digits-mlp-gd.pt", "--slice",
                            str(tmp_path / "missing.h5")])
    assert r.exit_code == 2 and "no such slice file" in r.stderr
    assert os.path.exists(tmp_path / "narrow.h5")
