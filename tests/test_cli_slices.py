"""`landscape slice`, `landscape interpolate` and `landscape plot` as a user runs them."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from landscape.data import load_dataset
from landscape.io.checkpoint import Checkpoint, make_checkpoint
from landscape.io.hdf5 import read_tree
from landscape.models import build_model
from tests.cli import run

DATA = {"n": 64, "dim": 5, "classes": 3, "n_test": 32}
KW = {"in_dim": 5, "out_dim": 3, "widths": [8]}


def _save(model, path, step=0, kw=KW):
    split = load_dataset("gaussian-mixture", **DATA)
    make_checkpoint("mlp", kw, "gaussian-mixture", DATA, "cross-entropy", model, {"step": step},
                    split=split).save(path)
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A short SGD run (checkpoints every 5 steps), a second model, and a different architecture."""
    root = tmp_path_factory.mktemp("slices")
    split = load_dataset("gaussian-mixture", **DATA)
    X, Y = split.train
    model = build_model("mlp", **KW)
    opt = torch.optim.SGD(model.parameters(), lr=0.3)
    g = torch.Generator().manual_seed(0)
    (root / "run").mkdir()
    for step in range(21):
        if step % 5 == 0:
            _save(model, root / "run" / f"step-{step:06d}.pt", step)
        idx = torch.randint(0, 64, (8,), generator=g)
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(X[idx]), Y[idx]).backward()
        opt.step()
    _save(model, root / "run" / "final.pt", 21)
    _save(build_model("mlp", seed=1, **KW), root / "b.pt")
    _save(build_model("mlp", **{**KW, "widths": [6]}), root / "other.pt", kw={**KW, "widths": [6]})
    return root



def test_slice_json_is_one_object_with_grid_and_values(files):
    r = run("slice", files / "run" / "final.pt", "--dims", "1", "--points", "7", "--dtype",
            "float64", "--json")
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    assert d["grid"]["alpha"] == pytest.approx(np.linspace(-1, 1, 7).tolist())
    assert set(d["values"]) == {"train_loss", "train_accuracy", "test_loss", "test_accuracy"}
    assert d["directions"]["kind"] == "random" and d["directions"]["norm"] == "filter"
    pb = Checkpoint.load(files / "run" / "final.pt").problem(dtype="float64")
    assert d["values"]["train_loss"][3] == pytest.approx(pb.loss_value(),
                                                         rel=1e-12)  # α = 0 is the checkpoint
    assert d["origin"]["train_loss"] == pytest.approx(pb.loss_value(), rel=1e-12)
    assert d["samples"] == 64


def test_eigen_slice_writes_hdf5_and_figure_and_plot_rerenders(files, tmp_path):
    out, fig = tmp_path / "s2.h5", tmp_path / "s2.png"
    r = run("slice", files / "run" / "final.pt", "--dims", "2", "--directions", "eigen", "--range",
            "-0.5", "0.5",
            "--points", "5", "--dtype", "float64", "--out", out, "--plot", fig, "--batch-points",
            "4")
    assert r.exit_code == 0, r.output
    assert fig.stat().st_size > 1000
    tree = read_tree(out)
    assert tree["format"] == "landscape-slice" and tree["values"]["train_loss"].shape == (5, 5)
    assert (
        len(tree["directions"]["eigenvalues"]) == 2 and tree["directions"]["vectors"].shape[1] == 2
    )
    assert tree["settings"]["range"] == [[-0.5, 0.5], [-0.5, 0.5]]
    r = run("plot", out, "--kind", "surface")
    assert r.exit_code == 0, r.output
    assert (tmp_path / "s2-surface.png").stat().st_size > 1000


def test_pca_slice_draws_the_trajectory(files):
    r = run("slice", files / "run" / "final.pt", "--dims", "2", "--directions", "pca",
            "--trajectory", files / "run",
            "--points", "4", "--json", "--no-test")
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    traj = np.asarray(d["directions"]["trajectory"])
    assert traj.shape == (6, 2) and np.allclose(traj[-1], 0, atol=1e-5)  # final.pt is the origin
    assert d["directions"]["trajectory_labels"][0] == "step-000000"
    assert set(d["values"]) == {"train_loss", "train_accuracy"}


def test_interpolate_endpoints_are_the_two_checkpoints(files, tmp_path):
    a, b = files / "run" / "final.pt", files / "b.pt"
    r = run("interpolate", a, b, "--range", "-0.5", "1.5", "--points", "9", "--dtype", "float64",
            "--json",
            "--plot", tmp_path / "i.png")
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    loss = d["values"]["train_loss"]
    la = Checkpoint.load(a).problem(dtype="float64").loss_value()
    lb = Checkpoint.load(b).problem(dtype="float64").loss_value()
    assert loss[2] == pytest.approx(la, rel=1e-10) and loss[6] == pytest.approx(lb, rel=1e-10)
    assert d["endpoints"]["A"]["train_loss"] == pytest.approx(la, rel=1e-12)
    assert d["endpoints"]["B"]["train_loss"] == pytest.approx(lb, rel=1e-12)
    assert (tmp_path / "i.png").stat().st_size > 1000


@pytest.mark.parametrize("args, message", [
    (("slice", "missing.pt"), "not found"),
    (("interpolate", "RUN/final.pt", "missing.pt"), "not found"),
    (("interpolate", "RUN/final.pt", "OTHER"), "architectures differ"),
    (("slice", "RUN/final.pt", "--directions", "checkpoints", "--toward", "OTHER"),
     "architectures differ"),
    (("slice", "RUN/final.pt", "--directions", "pca"), "--trajectory"),
    (("slice", "RUN/final.pt", "--directions", "eigen", "--norm", "layer"), "random directions"),
    (("slice", "RUN/final.pt", "--norm", "nope"), "unknown --norm"),
    (("slice", "RUN/final.pt", "--range", "1", "-1"), "LO < HI"),
    (("plot", "missing.h5"), "no such file"),
])
def test_bad_input_one_line_exit_2(files, args, message):
    sub = {"RUN/final.pt": str(files / "run" / "final.pt"), "OTHER": str(files / "other.pt")}
    r = run(*[sub.get(a, a) for a in args])
    assert r.exit_code == 2, r.output
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and message in lines[0] and "Traceback" not in r.output
