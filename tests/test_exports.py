"""Issue 16: many optimizers on one PCA plane, the paths animated, and slices exported for
ParaView (VTK XML, read back here with the standard library's XML parser) and as CSV."""

from __future__ import annotations

import csv
import json
import xml.etree.ElementTree as ET

import numpy as np
import pytest
import torch

import landscape
from landscape.io.hdf5 import read_tree
from tests.cli import one_line_error, run

TINY = ["--model-arg", "widths=[8]", "--data-arg", "n_train=200", "--batch-size", "50",
        "--lr", "0.1", "--epochs", "2", "--checkpoint-every", "2", "--no-plot"]




@pytest.fixture(scope="module")
def plane(tmp_path_factory):
    """Two runs (sgd, sam) from one initialisation on one PCA plane, exported and animated."""
    root = tmp_path_factory.mktemp("plane")
    for opt in ("sgd", "sam"):
        r = run("train", *TINY, "--optimizer", opt, "--out", root / opt)
        assert r.exit_code == 0, r.output
    out = root / "s.h5"
    r = run("slice", root / "sgd" / "final.pt", "--dims", "2", "--directions", "pca",
            "--trajectory", f"{root / 'sgd'},{root / 'sam'}", "--points", "7", "--out", out,
            "--export", "vtk,csv", "--animate", root / "paths.gif", "--json")
    assert r.exit_code == 0, r.output
    return root, read_tree(out), json.loads(r.stdout)


def _theta(path, names):
    sd = landscape.load(path).state_dict
    return torch.cat([sd[n].reshape(-1) for n in names]).double()


def test_both_runs_lie_on_one_plane_with_exact_coordinates(plane):
    root, data, report = plane
    d = data["directions"]
    assert [r["name"] for r in d["runs"]] == ["sgd", "sam"]
    assert [r["count"] for r in d["runs"]] == [5, 5]  # steps 2, 4, 6, 8 and final
    names = landscape.load(root / "sgd" / "final.pt").problem().layout.names
    origin = _theta(root / "sgd" / "final.pt", names)
    V = torch.as_tensor(d["vectors"])
    assert torch.allclose(V.T @ V, torch.eye(2, dtype=torch.float64), atol=1e-6)
    coords = torch.as_tensor(data["trajectory"]["coords"])
    for run_ in d["runs"]:
        files = sorted((root / run_["name"]).glob("step-*.pt")) + [root / run_["name"] /
                                                                   "final.pt"]
        for i, f in enumerate(files):
            expected = (_theta(f, names) - origin) @ V
            assert torch.allclose(coords[run_["start"] + i], expected, atol=1e-5)
    assert [p.rsplit("/", 1)[1] for p in report["exported"]] == [
        "s.vts", "s-paths.vtp", "s.csv", "s-paths.csv", "paths.gif"]


def _array(node, name):
    for da in node.iter("DataArray"):
        if da.get("Name") == name:
            return np.array(da.text.split(), dtype=float)
    raise AssertionError(f"no DataArray {name}")


def test_vtk_structured_grid_and_paths_read_back(plane):
    root, data, _ = plane
    loss = np.asarray(data["values"]["train_loss"])  # [alpha, beta]
    a, b = np.asarray(data["grid"]["alpha"]), np.asarray(data["grid"]["beta"])
    grid = ET.parse(root / "s.vts").getroot()
    assert grid.get("type") == "StructuredGrid"
    assert grid.find("StructuredGrid").get("WholeExtent") == "0 6 0 6 0 0"
    pts = np.array(grid.find(".//Points/DataArray").text.split(), dtype=float).reshape(-1, 3)
    assert pts.shape == (49, 3)
    A, B = np.meshgrid(a, b, indexing="xy")  # alpha fastest
    np.testing.assert_allclose(pts[:, 0], A.ravel(), rtol=1e-15)
    np.testing.assert_allclose(pts[:, 1], B.ravel(), rtol=1e-15)
    np.testing.assert_allclose(pts[:, 2], loss.T.ravel(), rtol=1e-15)
    np.testing.assert_allclose(_array(grid, "test_accuracy"),
                               np.asarray(data["values"]["test_accuracy"]).T.ravel())
    assert _array(grid, "finite").all()
    paths = ET.parse(root / "s-paths.vtp").getroot()
    piece = paths.find(".//Piece")
    assert piece.get("NumberOfLines") == "2" and piece.get("NumberOfPoints") == "10"
    np.testing.assert_array_equal(_array(paths, "offsets"), [5, 10])
    p = np.array(paths.find(".//Points/DataArray").text.split(), dtype=float).reshape(-1, 3)
    np.testing.assert_allclose(p[:, :2], np.asarray(data["trajectory"]["coords"]), rtol=1e-15)
    assert np.all(p[:, 2] >= loss.min() - 1e-12) and np.all(p[:, 2] <= loss.max() + 1e-12)


def test_csv_rows_are_the_grid(plane):
    root, data, _ = plane
    with open(root / "s.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 49 and list(rows[0])[:3] == ["alpha", "beta", "train_loss"]
    loss = np.asarray(data["values"]["train_loss"])
    got = np.array([float(r["train_loss"]) for r in rows]).reshape(7, 7)  # alpha-major
    np.testing.assert_array_equal(got, loss)
    with open(root / "s-paths.csv") as f:
        path_rows = list(csv.DictReader(f))
    assert [r["run"] for r in path_rows] == ["sgd"] * 5 + ["sam"] * 5


def test_the_animation_has_one_frame_per_checkpoint(plane):
    from PIL import Image

    root, _, _ = plane
    with Image.open(root / "paths.gif") as im:
        assert im.n_frames == 5


def test_bad_exports_and_planes_are_one_line(plane, tmp_path):
    root, _, _ = plane
    ckpt = root / "sgd" / "final.pt"
    r = run("train", *TINY, "--model-arg", "widths=[4]", "--optimizer", "sgd", "--out",
            tmp_path / "narrow")
    assert r.exit_code == 0, r.output
    one_line_error(run("slice", ckpt, "--dims", "2", "--directions", "pca", "--trajectory",
                       f"{root / 'sgd'},{tmp_path / 'narrow'}", "--points", "3"),
                   "trajectories of different models", "widths")
    one_line_error(run("slice", ckpt, "--points", "3", "--out", tmp_path / "x.h5", "--export",
                       "vtx"), "unknown --export format 'vtx'")
    one_line_error(run("slice", ckpt, "--points", "3", "--export", "csv"), "--out")
    one_line_error(run("slice", ckpt, "--points", "3", "--animate", tmp_path / "a.gif"),
                   "2-D PCA plane")
    assert not (tmp_path / "x.h5").exists() and not (tmp_path / "a.gif").exists()
