"""Issue 16: the Hessian where the optimizer moves, and eigenvectors one can keep and compare.

``update-curvature`` against the dense Hessian along the update recovered from two checkpoints;
the Ritz vectors ``--out`` stores against ``‖Hv − λv‖``; ``landscape overlap`` on a space with
itself and with a rotated copy; the ``top-overlap`` tracker; and their bad inputs."""

from __future__ import annotations

import json
import math

import h5py
import pytest
import torch

import landscape
from landscape.estimators.subspace import overlap
from landscape.train import read_run
from tests.cli import one_line_error, run

TINY = ["--model-arg", "widths=[8]", "--data-arg", "n_train=100", "--dtype", "float64",
        "--no-plot"]




@pytest.fixture(scope="module")
def sgd_run(tmp_path_factory):
    """Six momentum-SGD steps in float64, checkpoints at steps 5 and 6, update-curvature and
    top-overlap tracked at every step."""
    out = tmp_path_factory.mktemp("runs") / "sgd"
    r = run("train", *TINY, "--optimizer", "sgd", "--momentum", "0.9", "--batch-size", "32",
            "--lr", "0.2", "--steps", "6", "--checkpoint-every", "5", "--track",
            "update-curvature,top-overlap", "--track-arg", "top_k=2", "--track-arg", "tol=1e-10",
            "--every", "1", "--out", out)
    assert r.exit_code == 0, r.output
    return out


def test_update_curvature_matches_the_dense_hessian_along_the_last_step(sgd_run):
    """``uᵀHu/‖u‖²`` with ``u = θ_6 − θ_5`` read from the two checkpoints, to 1e-10; the same
    number tracked during the run and measured from ``final.pt``."""
    final, before = (landscape.load(sgd_run / f) for f in ("final.pt", "step-000005.pt"))
    pb = final.problem(dtype="float64")
    u = torch.cat([(final.state_dict[n] - before.state_dict[n]).reshape(-1)
                   for n in pb.layout.names]).double()
    H = landscape.Hessian(pb).dense()
    exact = float(u @ H @ u / (u @ u))
    r = run("sharpness", sgd_run / "final.pt", "-m", "update-curvature", "--dtype", "float64",
            "--json")
    assert r.exit_code == 0, r.output
    got = json.loads(r.stdout)["metrics"]["update_curvature"]
    assert got["estimate"] == pytest.approx(exact, rel=1e-10, abs=1e-13)
    assert got["update_norm"] == pytest.approx(float(u.norm()), rel=1e-12)
    assert got["matvecs"] == 1
    series = read_run(sgd_run)["series"]
    assert math.isnan(series["update_curvature"][0])  # step 0: no update yet
    assert series["update_curvature"][-1] == pytest.approx(exact, rel=1e-10, abs=1e-13)


def test_update_curvature_without_an_update_is_one_line(tmp_path):
    r = run("sharpness", "checkpoints/digits-mlp-gd.pt", "-m", "update-curvature")
    one_line_error(r, "update-curvature needs the optimizer's last update", "landscape train")


def test_saved_eigenvectors_satisfy_their_residuals(tmp_path):
    """The stored Ritz vectors in the checkpoint's layout: ``‖Hv − λv‖`` at the reported
    residual, unit norm, and reshaped into the checkpoint's tensors by name."""
    ckpt = "checkpoints/digits-mlp-gd.pt"
    out = tmp_path / "s.h5"
    r = run("sharpness", ckpt, "-m", "eig", "--top-k", "3", "--dtype", "float64", "--samples",
            "128", "--out", out, "--json")
    assert r.exit_code == 0, r.output
    from landscape.io.eigenvectors import read_eigenspace

    e = read_eigenspace(out)
    pb = landscape.load(ckpt).problem(dtype="float64", samples=128)
    assert e.names == list(pb.layout.names) and e.vectors.shape == (pb.p, 3)
    HV = landscape.Hessian(pb).matmat(e.vectors)
    res = (HV - e.vectors * e.values).norm(dim=0)
    assert torch.allclose(res, e.residuals, rtol=1e-6, atol=1e-12)
    assert torch.allclose(e.vectors.norm(dim=0), torch.ones(3, dtype=torch.float64), atol=1e-12)
    first = e.tensors(0)
    assert {n: tuple(t.shape) for n, t in first.items()} == {
        n: tuple(s) for n, s in zip(pb.layout.names, pb.layout.shapes)}
    with h5py.File(out) as f:  # the JSON report carries no vectors; the file does
        assert f["eigenvectors/vectors"].shape == (pb.p, 3)
    assert "vectors" not in json.loads(r.stdout)["metrics"]["eigenvalues"]


def test_overlap_of_a_space_with_itself_and_a_rotated_copy():
    g = torch.Generator().manual_seed(0)
    Q, _ = torch.linalg.qr(torch.randn(50, 6, generator=g, dtype=torch.float64))
    A = Q[:, :3]
    same = overlap(A, A)
    assert torch.allclose(same.matrix, torch.eye(3, dtype=torch.float64), atol=1e-14)
    assert torch.allclose(same.cosines, torch.ones(3, dtype=torch.float64), atol=1e-14)
    assert same.overlap == pytest.approx(1.0, abs=1e-14)
    angles = torch.tensor([0.1, 0.4, 1.2], dtype=torch.float64)  # rotate a_i towards q_{3+i}
    B = A * torch.cos(angles) + Q[:, 3:] * torch.sin(angles)
    rot = overlap(A, B)
    assert torch.allclose(rot.angles_deg, torch.rad2deg(angles).sort(descending=False).values,
                          atol=1e-10)
    assert rot.overlap == pytest.approx(float(torch.cos(angles).square().mean()), abs=1e-14)
    assert torch.allclose(rot.matrix.diagonal(), torch.cos(angles).square(), atol=1e-14)
    assert overlap(A, Q[:, 3:]).overlap == pytest.approx(0.0, abs=1e-28)


def test_landscape_overlap_cli_and_its_bad_inputs(tmp_path):
    ckpt = "checkpoints/digits-mlp-gd.pt"
    for name, params in (("a", ".*"), ("b", ".*"), ("c", "^net.5")):
        r = run("sharpness", ckpt, "-m", "eig", "--top-k", "2", "--samples", "64", "--params",
                params, "--eig-block", "1" if name == "b" else "2",
                "--out", tmp_path / f"{name}.h5")
        assert r.exit_code == 0, r.output
    r = run("overlap", tmp_path / "a.h5", tmp_path / "b.h5", "--json", "--plot",
            tmp_path / "o.png")
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    assert d["overlap"] == pytest.approx(1.0, abs=1e-4)  # the same space by two Lanczos runs
    assert (tmp_path / "o.png").stat().st_size > 0
    one_line_error(run("overlap", tmp_path / "a.h5", tmp_path / "c.h5"),
                   "different parameter layouts")
    run("sharpness", ckpt, "-m", "trace", "--probes", "2", "--samples", "64", "--out",
        tmp_path / "t.h5")
    one_line_error(run("overlap", tmp_path / "a.h5", tmp_path / "t.h5"), "holds no eigenvectors")


def test_top_overlap_tracks_the_eigenspace_against_the_previous_step(sgd_run):
    """The tracked column equals the overlap of the dense top-2 eigenvectors at steps 5 and 6."""
    series = read_run(sgd_run)["series"]
    assert math.isnan(series["top_overlap"][0])
    tops = []
    for f in ("step-000005.pt", "final.pt"):
        H = landscape.Hessian(landscape.load(sgd_run / f).problem(dtype="float64")).dense()
        tops.append(torch.linalg.eigh(H).eigenvectors[:, -2:])
    assert series["top_overlap"][-1] == pytest.approx(overlap(*tops).overlap, abs=1e-8)
    assert 0.0 <= series["top_overlap"][1:].min() <= series["top_overlap"][1:].max() <= 1 + 1e-12
