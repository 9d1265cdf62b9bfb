"""Noise covariance, non-uniformity, exact alignment factors and ``landscape noise``."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

import landscape
from landscape.cli.app import app
from landscape.curvature.noise import NoiseCovariance, NonUniformity
from landscape.errors import LandscapeError
from landscape.estimators.alignment import alignment
from landscape.io.hdf5 import read_tree
from landscape.metrics.stability import nonuniformity

from . import reference as ref
from .cases import CASES, cnn_bn, mlp_ce, mlp_mse

CLOSE = {"rtol": 1e-10, "atol": 1e-12}


def tiny_checkpoint(tmp_path, task: str = "classification", lr: float | None = 0.5,
                    batch_size: int = 8):
    """A 3-class (or regression) MLP on 40 samples, trained a little, saved with the Checkpoint
    API."""
    from landscape.data import load_dataset
    from landscape.io.checkpoint import make_checkpoint
    from landscape.models import build_model, model_kwargs_for

    if task == "classification":
        name, kwargs, loss = "gaussian-mixture", {"n": 40, "dim": 4, "classes": 3}, "cross-entropy"
    else:
        name, kwargs, loss = "teacher-student", {"n": 30, "dim": 3, "width": 4}, "mse"
    split = load_dataset(name, **kwargs)
    mk = model_kwargs_for("mlp", split, widths=[5], activation="tanh")
    model = build_model("mlp", **mk)
    opt = torch.optim.SGD(model.parameters(), lr=0.3)
    lf = landscape.losses.get_loss(loss)
    for _ in range(30):
        opt.zero_grad()
        (lf.sum(model(split.train[0]), split.train[1]) / split.n_train).backward()
        opt.step()
    training = {"optimizer": "sgd", "batch_size": batch_size, "step": 30}
    if lr is not None:
        training["lr"] = lr
    ckpt = make_checkpoint("mlp", mk, name, kwargs, loss, model, training, split=split)
    return ckpt.save(tmp_path / f"{task}.pt")


@pytest.fixture(scope="module")
def problems():
    return {name: landscape.Problem(*CASES[name](), batch_size=5) for name in CASES}


@pytest.fixture(scope="module")
def dense(problems):
    out = {}
    for name, pb in problems.items():
        S, G = ref.noise_covariance(pb), ref.ggn(pb)
        out[name] = {"Sigma": S, "G": G, "L": float(ref.loss(pb)), "SigmaH": ref.nonuniformity(pb)}
    return out


@pytest.mark.parametrize("case", list(CASES))
def test_operators_match_dense(problems, dense, case):
    pb = problems[case]
    torch.testing.assert_close(NoiseCovariance(pb, chunk=3).dense(), dense[case]["Sigma"], **CLOSE)
    V = torch.randn(pb.p, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(NonUniformity(pb, chunk=2).matmat(V), dense[case]["SigmaH"] @ V,
                               **CLOSE)


def test_nonuniformity_subsample_is_seeded(problems):
    pb = problems["mlp_ce"]
    op = NonUniformity(pb, samples=10, seed=3)
    assert op.samples == 10 and op.subsampled
    idx = torch.randperm(pb.n, generator=torch.Generator().manual_seed(3))[:10].sort().values
    torch.testing.assert_close(op.dense(), ref.nonuniformity(pb, idx), **CLOSE)
    other = NonUniformity(pb, samples=10, seed=4).dense()
    assert float((other - op.dense()).norm()) > 1e-6


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("chunk,memory", [(None, 1 << 30), (4, 1 << 30), (4, 1000), (3, 40000)])
def test_alignment_is_exact(problems, dense, case, chunk, memory):
    """alpha, beta, mu, tr(ΣG), ‖Σ‖_F, ‖G‖_F against p x p matrices (cached rows and recomputed
    rows)."""
    pb, d = problems[case], dense[case]
    S, G, L = d["Sigma"], d["G"], d["L"]
    a = alignment(pb, chunk=chunk, memory=memory)
    tr, sf, gf = float((S * G).sum()), float(S.norm()), float(G.norm())
    truth = {"tr_sigma_g": tr, "sigma_frobenius": sf, "g_frobenius": gf, "loss": L,
             "alpha": tr / (sf * gf),
             "beta": sf / (2 * L * gf), "mu": tr / (2 * L * gf**2), "trace_sigma": float(S.trace()),
             "trace_g": float(G.trace()), "decoupling_error": float((S - 2 * L * G).norm()) / sf}
    for key, value in truth.items():
        assert getattr(a, key) == pytest.approx(value, rel=1e-10), key
    assert a.mu == pytest.approx(a.alpha * a.beta, rel=1e-12)
    assert a.g_truncation < 1e-12 * a.trace_g and not a.subsample and a.n == pb.n
    assert a.g_matrix == ("jacobian-gram" if pb.loss.name == "mse" else "ggn")


def test_alignment_subsample_and_truncation(problems):
    pb = problems["mlp_ce"]
    a = alignment(pb, samples=15, seed=2, chunk=4)
    idx = torch.randperm(pb.n, generator=torch.Generator().manual_seed(2))[:15].sort().values
    X, Y = ref.data(pb)
    sub = landscape.Problem(pb.model, "cross-entropy", (X[idx], Y[idx]))
    S, G = ref.noise_covariance(sub), ref.ggn(sub)
    assert a.subsample and a.n == 15
    assert a.tr_sigma_g == pytest.approx(float((S * G).sum()), rel=1e-10)
    assert a.g_frobenius == pytest.approx(float(G.norm()), rel=1e-10)
    full = alignment(pb)
    cut = alignment(pb,
                    rtol=0.9)  # drops each sample's smaller curvature direction where they differ
    assert cut.g_rows < full.g_rows and cut.g_truncation > 0
    assert abs(cut.g_frobenius - full.g_frobenius) <= cut.g_truncation  # the reported bound holds


def one_dimensional(a: torch.Tensor, x: float):
    """L(x) = (1/2n) Σ a_i x² as mse ½(f_i − 0)² with f_i = sqrt(a_i) x (lecture eq. 2)."""
    model = nn.Linear(1, 1, bias=False).double()
    with torch.no_grad():
        model.weight.fill_(x)
    return landscape.Problem(
        model,
        "mse",
        (a.sqrt()[:, None], torch.zeros(a.numel(), 1, dtype=torch.float64)),
        batch_size=4,
    )


def test_one_dimensional_case_of_the_slides():
    """Sharpness mean(a_i), non-uniformity sqrt(mean a_i² − mean(a_i)²); α = 1 and β = μ = s²/ā²."""
    a = torch.tensor([0.5, 1.0, 2.0, 3.5, 0.2, 4.0, 1.3], dtype=torch.float64)
    abar, s = float(a.mean()), math.sqrt(float((a**2).mean() - a.mean() ** 2))
    pb = one_dimensional(a, 0.0)
    assert float(landscape.Hessian(pb).dense()) == pytest.approx(abar, rel=1e-12)
    est = nonuniformity(pb, tol=1e-10)
    assert est.value == pytest.approx(s, rel=1e-10)
    lo, hi = est.extra["interval"]
    assert lo <= s * (1 + 1e-12) and hi >= s * (1 - 1e-12)
    al = alignment(one_dimensional(a, 0.7))
    assert al.alpha == pytest.approx(1.0, rel=1e-12)
    assert al.beta == pytest.approx(s**2 / abar**2, rel=1e-10)
    assert al.mu == pytest.approx(s**2 / abar**2, rel=1e-10)
    assert al.g_frobenius == pytest.approx(abar, rel=1e-12)
    at_min = alignment(pb)  # L = 0 and Σ = 0: the ratios are 0/0
    assert math.isnan(at_min.beta) and math.isnan(at_min.mu) and at_min.notes


def test_per_sample_quantities_refuse_train_mode_batchnorm():
    model, loss, data = cnn_bn()
    for make in (lambda: NoiseCovariance(model, loss, data, train_mode=True),
                 lambda: NonUniformity(model, loss, data, train_mode=True),
                 lambda: alignment(model, loss, data, train_mode=True)):
        with pytest.raises(LandscapeError, match="train mode"):
            make()
    model, _, data = mlp_ce()
    with pytest.raises(LandscapeError, match="integer class labels"):
        alignment(model, "mse", data)


def test_noise_cli_json_keys_subsample_and_hdf5(tmp_path):
    path = tiny_checkpoint(tmp_path)
    runner = CliRunner()
    res = runner.invoke(app, ["noise", str(path), "--json", "--dtype", "float64", "--samples", "25",
                              "--out", str(tmp_path / "n.h5")])
    assert res.exit_code == 0, res.output
    rep = json.loads(res.stdout)
    keys = ("alpha", "beta", "mu", "loss", "tr_sigma_g", "sigma_frobenius", "g_frobenius",
            "nonuniformity")
    assert all(isinstance(rep[k], float) for k in keys)
    assert rep["samples"] == 25 and rep["samples_total"] == 40 and rep["subsample"] is True
    assert rep["mu"] == pytest.approx(rep["alpha"] * rep["beta"], rel=1e-12)
    assert read_tree(tmp_path / "n.h5")["noise"]["alpha"] == pytest.approx(rep["alpha"])
    res = runner.invoke(app, ["noise", str(tiny_checkpoint(tmp_path, "regression")), "--dtype",
                              "float64"])
    assert res.exit_code == 0 and "jacobian-gram" in res.stdout
    # mse on class labels: one-hot targets (Split.for_loss), as train and escape use them
    res = runner.invoke(app, ["noise", str(path), "--loss", "mse", "--json", "--dtype", "float64"])
    assert res.exit_code == 0, res.output
    rep = json.loads(res.stdout)
    assert rep["identity"]["loss"] == "mse" and rep["alignment"]["g_matrix"] == "jacobian-gram"
    assert rep["mu"] == pytest.approx(rep["alpha"] * rep["beta"], rel=1e-12)


def test_mu_and_beta_at_a_loss_of_rounding_size_are_undefined():
    """An exact least-squares interpolation: L ≈ 1e-31, below what float64 resolves at these
    outputs, so the per-sample residuals are rounding noise (μ came out 0.03 in one memory layout
    and 142 in another). α, β, μ are NaN with a note, in float64 and in float32, and the
    stability verdict that needs μ is undefined; an ordinary loss is untouched."""
    from landscape.metrics.stability import stability_report
    from tests.cases import interpolating_mse

    model, loss, data = interpolating_mse()
    for dtype in ("float64", "float32"):
        pb = landscape.Problem(model, loss, data, dtype=dtype)
        al = alignment(pb)
        assert math.isnan(al.mu) and math.isnan(al.beta) and al.loss <= al.loss_floor
        assert any("below what" in n for n in al.notes), al.notes
        assert ("--dtype float64" in al.notes[0]) == (dtype == "float32")
    rep = stability_report(landscape.Problem(model, loss, data), 0.1, 4, probes=4, tol=1e-8)
    assert rep["verdicts"]["alignment"]["holds"] is None
    model, loss, data = mlp_mse()
    al = alignment(model, loss, data)
    assert math.isfinite(al.mu) and al.loss > 1e6 * al.loss_floor and not al.notes


def test_nonuniformity_on_subsets_has_an_error_and_a_caveat():
    """On a 1-D family of 48 samples, s is exact on all samples; on subsets of 12 it comes with
    the spread over independent subsets and the caveat that it is biased upward, and a verdict
    whose bound lies within that spread is undecided (a subset's s had no error, so a 'decided'
    verdict could be overconfident)."""
    from landscape.metrics.stability import stability_report

    a = torch.linspace(0.2, 6.0, 48, dtype=torch.float64) ** 1.5
    exact = math.sqrt(float((a**2).mean() - a.mean() ** 2))
    pb = one_dimensional(a, 0.3)
    full = nonuniformity(pb, tol=1e-10)
    assert (
        full.value == pytest.approx(exact, rel=1e-8)
        and math.isnan(full.stderr)
        and "note" not in full.extra
    )
    sub = nonuniformity(pb, samples=12, seed=0, tol=1e-10, subsets=6)
    assert sub.extra["subsets"] == 6 and len(set(sub.extra["subset_values"])) == 6
    assert sub.stderr > 0 and "biased upward" in sub.extra["note"]
    spread = torch.tensor(sub.extra["subset_values"]).std()
    assert sub.stderr == pytest.approx(float(spread) / math.sqrt(6))
    # a learning rate whose bound 1/(η sqrt(c_B)) sits at the subset estimate: undecided
    n, B = 48, 4
    c = (n - B) / (B * (n - 1))
    lr = 1 / (sub.value * math.sqrt(c))
    rep = stability_report(pb, lr, B, probes=4, tol=1e-10, s_samples=12)
    v = rep["verdicts"]["sgd_nonuniformity"]
    assert v["error"] >= 0.5 * sub.stderr and not v["decided"] and "biased upward" in v["note"]
