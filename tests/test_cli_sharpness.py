"""`landscape sharpness` and `landscape info` as a user runs them (Typer's CliRunner)."""

import json

import h5py
import pytest
import torch

import landscape
from landscape.data import load_dataset
from landscape.io.checkpoint import Checkpoint, make_checkpoint
from landscape.models import build_model
from tests.cli import run


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    data_kwargs = {"n_train": 150, "test_fraction": 0.2}
    split = load_dataset("digits", **data_kwargs)
    kw = {"in_dim": 64, "out_dim": 10, "widths": [12]}
    model = build_model("mlp", **kw)
    path = tmp_path_factory.mktemp("ck") / "tiny.pt"
    make_checkpoint("mlp", kw, "digits", data_kwargs, "cross-entropy", model, {"optimizer": "none"},
                    split=split).save(path)
    return path



def test_json_is_one_object_with_the_asked_metrics(ckpt):
    r = run("sharpness", ckpt, "--metric", "trace", "--probes", "40", "--dtype", "float64",
            "--json")
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    assert set(d["metrics"]) == {"trace"}
    t = d["metrics"]["trace"]
    assert {"estimate", "stderr", "method", "matvecs"} <= set(t) and t["matvecs"] == 40
    assert (
        d["params"] == 64 * 12 + 12 + 12 * 10 + 10
        and d["samples"] == 150
        and d["loss"] == "cross-entropy"
    )
    # the estimate agrees with the exact trace of the dense Hessian within its standard error
    pb = Checkpoint.load(ckpt).problem(dtype="float64")
    exact = float(torch.trace(landscape.Hessian(pb).dense()))
    assert abs(t["estimate"] - exact) < 4 * t["stderr"]


def test_eigenvalues_match_dense_and_same_seed_same_numbers(ckpt):
    args = ("sharpness", ckpt, "-m", "eig", "--top-k", "3", "--which", "both", "--tol", "1e-10",
            "--dtype", "float64", "--json")
    a, b = run(*args), run(*args)
    assert a.exit_code == 0, a.output
    ea, eb = (
        json.loads(a.stdout)["metrics"]["eigenvalues"],
        json.loads(b.stdout)["metrics"]["eigenvalues"],
    )
    assert ea["values"] == eb["values"]
    pb = Checkpoint.load(ckpt).problem(dtype="float64")
    ev = torch.linalg.eigvalsh(landscape.Hessian(pb).dense())
    truth = torch.cat([ev[-3:].flip(0), ev[:3]])
    torch.testing.assert_close(torch.tensor(ea["values"], dtype=torch.float64), truth, rtol=1e-8,
                               atol=1e-10)


def test_per_layer_and_param_subset(ckpt):
    r = run("sharpness", ckpt, "-m", "eig", "--per-layer", "--dtype", "float64", "--json")
    assert r.exit_code == 0, r.output
    layers = json.loads(r.stdout)["layers"]
    assert set(layers) == {"net.0", "net.2"} or len(layers) == 2
    pb = Checkpoint.load(ckpt).problem(dtype="float64")
    H = landscape.Hessian(pb).dense()
    for name, entry in layers.items():
        sl = [pb.layout.slice(n) for n in pb.layout.names if n.rsplit(".", 1)[0] == name]
        idx = torch.cat([torch.arange(s.start, s.stop) for s in sl])
        top = float(torch.linalg.eigvalsh(H[idx][:, idx])[-1])
        assert entry["params"] == idx.numel()
        assert abs(entry["metrics"]["eigenvalues"]["values"][0] - top) < 1e-5 * abs(top)


def test_out_h5_and_density_plot(ckpt, tmp_path):
    out, png = tmp_path / "d.h5", tmp_path / "d.png"
    r = run("sharpness", ckpt, "-m", "density", "--runs", "3", "--steps", "20", "--out", out,
            "--plot", png)
    assert r.exit_code == 0, r.output
    assert png.stat().st_size > 1000
    with h5py.File(out) as f:
        w = f["metrics/density/weights"][()]
        assert w.shape == (3, 20)
        assert abs(w.sum(axis=1) - 1).max() < 1e-5
        assert f.attrs["samples"] == 150 and "sha256" in f.attrs["identity"]
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_table_output(ckpt):
    r = run("sharpness", ckpt, "--probes", "5")
    assert r.exit_code == 0, r.output
    assert "tr(H)" in r.stdout and "‖H‖_F" in r.stdout


@pytest.mark.parametrize("args, message", [
    (("sharpness", "missing.pt"), "not found"),
    (("sharpness", "CKPT", "--metric", "nope"), "unknown metric"),
    (("sharpness", "CKPT", "--method", "nope"), "unknown --method"),
    (("sharpness", "CKPT", "--params", "zzz"), "matches no parameter"),
    (("sharpness", "CKPT", "--dtype", "float8"), "unknown --dtype"),
    (("info", "missing.pt"), "not found"),
])
def test_bad_input_one_line_exit_2(ckpt, args, message):
    r = run(*[str(ckpt) if a == "CKPT" else a for a in args])
    assert r.exit_code == 2, r.output
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and message in lines[0] and "Traceback" not in r.output


def test_not_a_checkpoint_and_cuda(ckpt, tmp_path):
    bad = tmp_path / "x.pt"
    bad.write_text("hello")
    r = run("sharpness", bad)
    assert r.exit_code == 2 and len(r.stderr.strip().splitlines()) == 1
    if not torch.cuda.is_available():
        r = run("sharpness", ckpt, "--device", "cuda")
        assert r.exit_code == 2 and "no CUDA GPU" in r.stderr


def test_info(ckpt):
    r = run("info", ckpt, "--json")
    assert r.exit_code == 0
    d = json.loads(r.stdout)
    assert d["identity"]["model"] == "mlp"


def test_foreign_state_dict_with_factories(tmp_path):
    (tmp_path / "my_models.py").write_text(
        "import torch\n"
        "def build():\n"
        "    torch.manual_seed(0)\n"
        "    return torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.Tanh(), "
        "torch.nn.Linear(6, 3))\n"
    )
    (tmp_path / "my_data.py").write_text(
        "import torch\n"
        "def load():\n"
        "    g = torch.Generator().manual_seed(1)\n"
        "    return torch.randn(30, 4, generator=g), torch.randint(0, 3, (30,), generator=g)\n")
    import importlib.util

    spec = importlib.util.spec_from_file_location("my_models", tmp_path / "my_models.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    torch.save({"model_state_dict": mod.build().state_dict(), "epoch": 3}, tmp_path / "w.pt")
    r = run("sharpness", tmp_path / "w.pt", "--model", f"{tmp_path}/my_models.py:build",
            "--data", f"{tmp_path}/my_data.py:load", "--loss", "cross-entropy", "-m", "eig",
            "--json",
            "--dtype", "float64", "--tol", "1e-10")
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    assert d["params"] == 4 * 6 + 6 + 6 * 3 + 3 and d["samples"] == 30
    model = mod.build()
    g = torch.Generator().manual_seed(1)
    data = (torch.randn(30, 4, generator=g), torch.randint(0, 3, (30,), generator=g))
    top = float(torch.linalg.eigvalsh(landscape.Hessian(model, "cross-entropy", data,
                                                        dtype="float64").dense())[-1])
    assert abs(d["metrics"]["eigenvalues"]["values"][0] - top) < 1e-8 * abs(top)
    r = run("sharpness", tmp_path / "w.pt")
    assert r.exit_code == 2 and "--model" in r.stderr


def test_nan_checkpoint_is_one_clear_line(tmp_path):
    split = load_dataset("digits", n_train=40)
    kw = {"in_dim": 64, "out_dim": 10, "widths": [4]}
    model = build_model("mlp", **kw)
    with torch.no_grad():
        next(model.parameters()).fill_(float("nan"))
    path = tmp_path / "nan.pt"
    make_checkpoint("mlp", kw, "digits", {"n_train": 40}, "cross-entropy", model, {},
                    split=split).save(path)
    r = run("sharpness", path)
    assert (
        r.exit_code == 2 and "loss is nan" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    )


@pytest.mark.parametrize("ckpt_name", ["digits-mlp-gd", "digits-cnn-bn"])
@pytest.mark.parametrize("extra", [[], ["--eig-block", "1"], ["--eig-block", "5"],
                                   ["--which", "bottom"], ["--which", "both"]])
def test_plan_typical_eig_products_are_near_the_measured_ones(ckpt_name, extra):
    """--plan's typical count for eig (the checked default, single-vector and block Lanczos, both
    ends) is within a factor of 2 of what the run then takes on the shipped checkpoints."""
    args = ["sharpness", f"checkpoints/{ckpt_name}.pt", "-m", "eig", "--top-k", "5", *extra,
            "--json"]
    planned = json.loads(run(*args, "--plan").stdout)["plan"]["metrics"]["eig"]["products"]
    measured = json.loads(run(*args).stdout)["metrics"]["eigenvalues"]["matvecs"]
    assert 0.5 <= measured / planned <= 2.0, (planned, measured)
