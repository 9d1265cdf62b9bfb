"""Short forms of the ``scripts/repro_*.py`` reproductions (their ``--quick`` configurations): each
writes its HDF5 file with the expected groups, a figure and a table, and its result satisfies an
inequality the theory requires (or the experiment is meant to show)."""

from __future__ import annotations

import math

import h5py
import pytest

from landscape.optim.registry import OPTIMIZERS
from scripts import (
    repro_eos,
    repro_escape,
    repro_fisher_alignment,
    repro_optimizers,
    repro_sharpness_nonuniformity,
)


def _files(out, h5name: str, png: str) -> h5py.File:
    assert (out / png).stat().st_size > 1000
    assert "|" in (out / "table.md").read_text()
    assert not (out / "runs").exists()  # training runs are cleaned up
    return h5py.File(out / h5name, "r")


def test_eos_gd_rises_to_the_edge_of_stability(tmp_path):
    res = repro_eos.main(["--quick", "--out", str(tmp_path)])
    with _files(tmp_path, "eos.h5", "eos.png") as f:
        assert set(f) == {"mse", "cross-entropy"} and set(f["cross-entropy"]) == {"lr_0.4",
                                                                                  "lr_0.8"}
        g = f["cross-entropy/lr_0.8"]
        assert (
            g.attrs["two_over_lr"] == pytest.approx(2.5)
            and g["lambda_max"].shape == g["step"].shape
        )
        # what reproduces the file: the command, the torch build, the thread count
        assert "repro_eos" not in f.attrs["command"] or "--quick" in f.attrs["command"]
        assert f.attrs["torch_version"] and f.attrs["threads"] >= 1
    for (loss, _), r in res.items():
        if loss == "cross-entropy":  # progressive sharpening from the initialisation
            assert r["lambda_peak"] > 3 * r["lambda_max"][0]
    # at the largest rate GD's sharpness reaches the stability bound 2/η
    assert res[("cross-entropy", 0.8)]["lambda_peak"] >= 2 / 0.8
    # with mse GD rises to the edge of stability: its late λ_max sits near 2/η
    mse = res[("mse", 0.4)]
    assert 0.7 * 2 / 0.4 <= mse["lambda_late"] <= 1.3 * 2 / 0.4


def test_optimizers_all_train_and_report_curvature(tmp_path):
    res = repro_optimizers.main(["--quick", "--out", str(tmp_path)])
    with _files(tmp_path, "optimizers.h5", "optimizers.png") as f:
        names = {f[k].attrs["optimizer"] for k in f}
        # every minibatch optimizer of the registry (gd, full batch, is left out)
        assert names == set(OPTIMIZERS) - {"gd"}
        assert "seed_0" in f["sam"]
    for label, rows in res.items():
        for r in rows:
            assert r["status"] == "finished", (label, r["status"])
            assert r["lambda_max"] > 0 and math.isfinite(r["lambda_max"])
            # tr(H) ≥ λ_max up to Hutchinson's error when H is (nearly) PSD; bounded by 4 s.e.
            assert r["trace"] + 4 * r["trace_stderr"] >= r["lambda_max"] * 0.5
            if r["batch_size"] == 32:  # the small-batch methods learn: far above chance (0.1)
                assert r["test_accuracy"] > 0.3, (label, r["test_accuracy"])
    two_pass = {rows[0]["optimizer"]: rows[0]["passes_per_step"] for rows in res.values()}
    assert two_pass["sam"] == 2 and two_pass["sgd"] == 1 and two_pass["adam-tracer"] == 2
    adam = next(rows for rows in res.values() if rows[0]["optimizer"] == "adam-tracer")
    assert adam[0]["momentum"] is None and adam[0]["lr"] == pytest.approx(
        3e-3
    )  # Adam, not SGD's 0.05


def test_escape_sgd_leaves_a_gd_minimum_that_gd_keeps(tmp_path):
    res = repro_escape.main(["--quick", "--out", str(tmp_path)])
    with _files(tmp_path, "escape.h5", "escape.png") as f:
        assert {"start", "sgd", "isotropic", "small-noise", "gd"} <= set(f)
        assert f["sgd"]["losses"].shape[0] == 8
    st = res["start"]
    assert st["lambda_max"] <= st["two_over_lr"]  # the start is linearly stable for GD
    runs = {k: (t, s) for k, (t, s) in res["runs"].items()}
    assert runs["gd"][1].escaped == 0 and runs["small-noise"][1].escaped == 0
    # SGD's noise drives the loss up from the GD minimum; GD's and the small noise's do not
    assert runs["sgd"][1].final_mean_loss > 1.5 * runs["gd"][1].final_mean_loss
    assert runs["small-noise"][1].final_mean_loss < 1.5 * runs["gd"][1].final_mean_loss


def test_sharpness_nonuniformity_solutions_satisfy_the_gd_bound(tmp_path):
    rows = repro_sharpness_nonuniformity.main(["--quick", "--out", str(tmp_path)])
    with _files(tmp_path, "sharpness_nonuniformity.h5", "diagram.png") as f:
        assert "all" in f and f["all"]["lambda_max"].shape == (len(rows),)
    assert all(r["status"] == "finished" for r in rows)
    for r in rows:
        assert r["s"] > 0 and r["lambda_max"] > 0
        assert r["s_low"] <= r["s"] <= r["s_high"]
        # a point SGD converged to is linearly stable: λ_max ≤ 2/η (10% slack: not exactly a
        # minimum)
        assert r["lambda_max"] <= 1.1 * r["lambda_bound"]
        assert r["s_bound"] == pytest.approx(
            1 / (r["lr"] * math.sqrt((r["n"] - r["batch_size"]) / (r["batch_size"] * (r["n"] - 1))))
        )


def test_fisher_alignment_cosines_and_factors_are_consistent(tmp_path):
    rows = repro_fisher_alignment.main(["--quick", "--out", str(tmp_path)])
    with _files(tmp_path, "fisher_alignment.h5", "fisher_alignment.png") as f:
        assert f["series"]["mu"].shape == (len(rows),)
        assert len([k for k in f if k.startswith("step_")]) == len(rows)
    assert len(rows) >= 2
    for r in rows:
        for key in ("F~F_emp", "H~F", "H~F_emp"):
            c, se = r[f"cos_{key}"], r[f"cos_{key}_stderr"]
            assert -1 - 4 * se <= c <= 1 + 4 * se
        assert r["cos_F~F_emp"] > 0.5  # both Fishers are PSD and share their dominant directions
        assert 0 < r["alpha"] <= 1 + 1e-9  # Cauchy-Schwarz: α = tr(ΣG)/(‖Σ‖_F‖G‖_F) ≤ 1
        assert r["mu"] == pytest.approx(r["alpha"] * r["beta"], rel=1e-9)
        assert r["trace_F"] > 0 and r["trace_F_emp"] > 0
