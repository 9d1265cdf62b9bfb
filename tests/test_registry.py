"""A metric is one declaration: registered alone, it appears in ``landscape sharpness``, the study
file's schema, ``landscape train --track`` and ``landscape report``; its declared settings are
checked the same way everywhere."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

import landscape
from landscape.cli.app import app
from landscape.data import load_dataset
from landscape.errors import ConfigError
from landscape.io.checkpoint import make_checkpoint
from landscape.metrics import METRICS, Metric, Settings, estimate_headline, estimate_rows, register
from landscape.schema import integer
from landscape.study import KINDS, parse_study, run_study
from landscape.study.report import headlines, read_study
from landscape.train.tracking import TRACKERS, parse_track, settings_from, track

runner = CliRunner()


def _rayleigh(op, s: Settings):
    """vᵀHv/vᵀv along the all-ones direction, repeated ``repeats`` times (a deterministic toy)."""
    from landscape.results import Estimate

    v = torch.ones(op.shape[0], 1, dtype=op.dtype, device=op.device)
    value = float((v * op.matmat(v)).sum() / (v * v).sum())
    return Estimate(value, 0.0, int(s.get("repeats", 1)), "rayleigh", {})


@pytest.fixture
def toy():
    register("toy", Metric("toy", _rayleigh, estimate_rows("1ᵀH1/p"), lambda s: 1,
                           "Rayleigh quotient along the ones vector",
                           options={"repeats": integer(1, 1, "how often")},
                           scalars=lambda r: {"toy": r.value}, primary="toy",
                           headlines=lambda stored: [estimate_headline(stored, "1ᵀH1/p")]))
    yield
    METRICS.pop("toy")


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    data = {"n_train": 40, "test_fraction": 0.2}
    kw = {"in_dim": 64, "out_dim": 10, "widths": [4]}
    model = landscape_model(kw)
    path = tmp_path_factory.mktemp("ck") / "m.pt"
    make_checkpoint("mlp", kw, "digits", data, "cross-entropy", model,
                    {"optimizer": "sgd", "lr": 0.1, "batch_size": 8},
                    split=load_dataset("digits", **data)).save(path)
    return path


def landscape_model(kw):
    from landscape.models import build_model

    return build_model("mlp", **kw)


def _exact(ckpt: Path) -> float:
    pb = landscape.load(ckpt).problem(dtype="float64")
    H = landscape.Hessian(pb).dense()
    return float(H.sum() / H.shape[0])


def test_a_registered_metric_runs_in_the_cli(toy, ckpt):
    r = runner.invoke(app, ["sharpness", str(ckpt), "-m", "toy", "--dtype", "float64", "--json"])
    assert r.exit_code == 0, r.output
    got = json.loads(r.stdout)["metrics"]["toy"]["estimate"]
    assert got == pytest.approx(_exact(ckpt), rel=1e-10)


def test_a_registered_metric_is_a_study_kind_and_a_report_headline(toy, ckpt, tmp_path):
    assert "toy" in KINDS and set(KINDS["toy"].options) == {"repeats", "seed", "per_layer"}
    study = tmp_path / "s.toml"
    study.write_text(f'[study]\noutput = "s.h5"\nfigures = ""\n[problem]\ndtype = "float64"\n'
                     f'[checkpoints]\nfiles = ["{ckpt}"]\n[metrics.toy]\nrepeats = 2\n')
    run_study(parse_study(study))
    (item,) = read_study(tmp_path / "s.h5").items
    ((label, value, _),) = headlines(item)
    assert label == "1ᵀH1/p" and value == pytest.approx(_exact(ckpt), rel=1e-10)
    study.write_text(study.read_text().replace("repeats = 2", "repeats = 0"))
    with pytest.raises(ConfigError, match=r"\[metrics.toy\] repeats must be an integer >= 1"):
        parse_study(study)


def test_a_registered_metric_can_be_tracked(toy, ckpt):
    assert parse_track("toy,loss") == ["toy", "loss"] and TRACKERS["toy"].primary == "toy"
    pb = landscape.load(ckpt).problem(dtype="float64")
    cols = track(pb, ["toy"], settings_from(10, 0, {"repeats": 3}))
    assert cols["toy"] == pytest.approx(_exact(ckpt), rel=1e-10)


def test_the_declared_bounds_hold_in_the_cli_and_the_study_alike(ckpt, tmp_path):
    r = runner.invoke(app, ["sharpness", str(ckpt), "-m", "trace", "--probes", "1"])
    assert r.exit_code == 2 and "--probes must be an integer >= 2" in r.output
    study = tmp_path / "s.toml"
    study.write_text(f'[checkpoints]\nfiles = ["{ckpt}"]\n[metrics.trace]\nprobes = 1\n')
    with pytest.raises(ConfigError, match="probes must be an integer >= 2"):
        parse_study(study)
    with pytest.raises(ConfigError, match="--probes must be an integer >= 2"):
        Settings(probes=1).validate(["trace"])
    Settings(probes=1).validate(["eig"])  # eig does not read --probes


def test_grad_curvature_matches_the_dense_hessian(ckpt):
    """``gᵀHg/‖g‖²`` against the dense Hessian and the stacked gradient (float64, to 1e-10), and
    its place between the extreme eigenvalues; through the CLI, as a user runs it."""
    pb = landscape.load(ckpt).problem(dtype="float64")
    H = landscape.Hessian(pb).dense()
    _, g = pb.gradient()
    exact = float(g @ H @ g / (g @ g))
    r = runner.invoke(app, ["sharpness", str(ckpt), "-m", "grad-curvature", "--dtype", "float64",
                            "--json"])
    assert r.exit_code == 0, r.output
    got = json.loads(r.stdout)["metrics"]["grad_curvature"]
    assert got["estimate"] == pytest.approx(exact, rel=1e-10, abs=1e-12)
    assert got["matvecs"] == 1 and got["grad_norm"] == pytest.approx(float(g.norm()), rel=1e-12)
    ev = torch.linalg.eigvalsh(H)
    assert float(ev[0]) - 1e-12 <= got["estimate"] <= float(ev[-1]) + 1e-12
    assert "grad-curvature" in TRACKERS and "grad-curvature" in KINDS


def test_grad_curvature_is_the_top_eigenvalue_along_a_top_eigenvector():
    from landscape.estimators.directional import rayleigh_quotient

    A = torch.diag(torch.tensor([3.0, 1.0, -2.0], dtype=torch.float64))
    assert rayleigh_quotient(A, torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64)) == 3.0
    assert rayleigh_quotient(A, torch.tensor([1.0, 1.0, 0.0], dtype=torch.float64)) == 2.0


def test_top_subspace_matches_the_dense_eigenvectors(ckpt):
    """``‖V_kᵀg‖²/‖g‖²`` against the dense top-3 eigenvectors (Lanczos at tol 1e-10)."""
    pb = landscape.load(ckpt).problem(dtype="float64")
    H = landscape.Hessian(pb).dense()
    _, g = pb.gradient()
    U = torch.linalg.eigh(H).eigenvectors[:, -3:]
    exact = float((U.T @ g).square().sum() / (g @ g))
    r = runner.invoke(app, ["sharpness", str(ckpt), "-m", "top-subspace", "--top-k", "3",
                            "--tol", "1e-10", "--dtype", "float64", "--json"])
    assert r.exit_code == 0, r.output
    got = json.loads(r.stdout)["metrics"]["top_subspace"]
    assert got["estimate"] == pytest.approx(exact, rel=1e-6, abs=1e-9)
    assert "top-subspace" in TRACKERS and set(KINDS["top-subspace"].options) >= {"top_k", "tol"}


def test_subspace_fraction_is_one_in_the_span_and_zero_orthogonal_to_it():
    from landscape.estimators.subspace import subspace_fraction

    V = torch.tensor([[1.0, 1.0], [0.0, 1.0], [0.0, 0.0]], dtype=torch.float64)  # not orthonormal
    assert subspace_fraction(V, torch.tensor([2.0, -3.0, 0.0])) == pytest.approx(1.0, abs=1e-15)
    assert subspace_fraction(V, torch.tensor([0.0, 0.0, 5.0])) == 0.0
    assert subspace_fraction(V, torch.tensor([0.0, 1.0, 1.0])) == pytest.approx(0.5, abs=1e-15)
