"""Stability verdicts, perturbation and Keskar sharpness, ``landscape stability``."""

from __future__ import annotations

import itertools
import json
import math

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

import landscape
from landscape.cli.app import app
from landscape.errors import ConfigError
from landscape.estimators.perturbation import keskar_sharpness, perturbation_sharpness
from landscape.metrics import METRICS, Settings
from landscape.metrics.run import measure
from landscape.metrics.stability import sgd_noise_factor, stability_report

from . import reference as ref
from .cases import mlp_mse
from .test_noise import one_dimensional, tiny_checkpoint

A = torch.tensor([0.5, 1.0, 2.0, 3.5, 0.2, 4.0, 1.3, 2.5], dtype=torch.float64)


def test_sgd_noise_factor():
    assert sgd_noise_factor(10, 1) == 1.0 and sgd_noise_factor(10, 10) == 0.0
    assert sgd_noise_factor(100, 10) == pytest.approx(90 / (10 * 99))


@pytest.mark.parametrize("lr", [0.4, 1.2])  # both hold; both violated
def test_verdicts_in_one_dimension(lr):
    """L = (1/2n) Σ a_i x²: λ_max = ā, s² = mean a² − ā², ‖H‖_F = ā, μ = s²/ā² (any x ≠ 0), and the
    slides' condition (6) (1 − ηa)² + η²(n−B)/(B(n−1)) s² ≤ 1, exact in one dimension."""
    n, B = A.numel(), 2
    abar = float(A.mean())
    s = math.sqrt(float((A**2).mean()) - abar**2)
    rep = stability_report(one_dimensional(A, 0.3), lr, B, probes=4, tol=1e-10, sufficient=True)
    v = rep["verdicts"]
    c = (n - B) / (B * (n - 1))
    assert v["gd"]["value"] == pytest.approx(abar, rel=1e-10) and v["gd"]["bound"] == pytest.approx(
        2 / lr
    )
    assert v["gd"]["holds"] is (abar <= 2 / lr) and v["gd"]["escape_rate"] == pytest.approx(
        abs(1 - lr * abar)
    )
    assert v["sgd_nonuniformity"]["value"] == pytest.approx(s, rel=1e-9)
    assert v["sgd_nonuniformity"]["bound"] == pytest.approx(1 / (lr * math.sqrt(c)))
    assert v["sgd_nonuniformity"]["holds"] is (s <= 1 / (lr * math.sqrt(c)))
    mu = s**2 / abar**2
    assert v["alignment"]["value"] == pytest.approx(abar,
                                                    rel=1e-12) and v["alignment"]["error"] == 0
    assert v["alignment"]["mu"] == pytest.approx(mu, rel=1e-9)
    assert v["alignment"]["bound"] == pytest.approx(1 / (lr * math.sqrt(c * mu)), rel=1e-9)
    assert v["alignment"]["gamma0"] == pytest.approx(lr**2 * c * s**2, rel=1e-9)
    assert (
        v["alignment"]["escapes"] is (v["alignment"]["gamma0"] > 1) is (not v["alignment"]["holds"])
    )
    exact = (1 - lr * abar) ** 2 + lr**2 * c * s**2
    assert v["matrix_sufficient"]["value"] == pytest.approx(exact, rel=1e-9)
    assert rep["sgd_necessary_holds"] == (v["gd"]["holds"] and v["sgd_nonuniformity"]["holds"])
    assert all(x["decided"] for x in v.values())
    if lr > 1:  # the violated side is exercised too
        assert (
            not v["gd"]["holds"]
            and not v["sgd_nonuniformity"]["holds"]
            and not v["matrix_sufficient"]["holds"]
        )


def test_sampling_convention_on_the_quadratic_family():
    """a = (0, …, 0, 8): ā = 1, s² = 7, n = 8, B = 6, η = 1. SGD without replacement multiplies
    E x² by exactly (1 − ηā)² + η² c_B s² = 1/3 (c_B = 2/42): stable, and γ0 = η² c_B s² = 1/3 says
    so. The with-replacement 1/B (γ0 = 7/6) called it an escape; with replacement it is one
    (the exact factor is then 7/6 too). A Monte-Carlo run of the sampler confirms both factors."""
    a = torch.tensor([0.0] * 7 + [8.0], dtype=torch.float64)
    n, B, lr = 8, 6, 1.0
    pb = one_dimensional(a, 0.5)
    without = stability_report(pb, lr, B, probes=4, tol=1e-12)
    v = without["verdicts"]["alignment"]
    assert without["sampling"] == "without" and without["noise_factor"] == pytest.approx(2 / 42)
    assert v["gamma0"] == pytest.approx(1 / 3, rel=1e-9) and not v["escapes"] and v["holds"]
    with_ = stability_report(pb, lr, B, probes=4, tol=1e-12,
                             sampling="with")["verdicts"]["alignment"]
    assert with_["gamma0"] == pytest.approx(7 / 6,
                                            rel=1e-9) and with_["escapes"] and not with_["holds"]
    g = torch.Generator().manual_seed(0)
    T = 200_000
    idx = torch.stack([torch.randperm(n, generator=g)[:B] for _ in range(T)])
    factor = ((1 - lr * a[idx].mean(1)) ** 2).mean()
    assert float(factor) == pytest.approx(1 / 3, rel=0.02)
    idx = torch.randint(0, n, (T, B), generator=g)
    assert float(((1 - lr * a[idx].mean(1)) ** 2).mean()) == pytest.approx(7 / 6, rel=0.02)


def test_a_rounding_margin_is_not_a_decision():
    from landscape.metrics.stability import _verdict

    assert not _verdict("x", "k", 2.0, 0.0, 2.0 + 4e-16)["decided"]
    assert _verdict("x", "k", 2.0, 0.0, 2.0 + 1e-9)["decided"]


def test_alignment_bound_undefined_at_zero_loss_and_bad_options():
    pb = one_dimensional(A, 0.0)  # an exact minimum: μ = 0/0
    rep = stability_report(pb, 0.5, 2, probes=2, tol=1e-8)
    assert rep["verdicts"]["alignment"]["holds"] is None and rep["verdicts"]["gd"]["holds"] is True
    with pytest.raises(ConfigError, match="learning rate"):
        stability_report(pb, 0.0, 2)
    with pytest.raises(ConfigError, match="batch size"):
        stability_report(pb, 0.1, A.numel() + 1)
    full = stability_report(pb, 0.1, A.numel(), probes=2, tol=1e-8)  # full batch: no SGD noise
    assert full["verdicts"]["sgd_nonuniformity"]["bound"] == math.inf and full["noise_factor"] == 0


def quadratic_problem(seed: int = 0):
    """A linear model with mse: L is exactly quadratic in θ (H = XᵀX/n everywhere)."""
    X, Y = mlp_mse(seed=seed)[2]
    lin = nn.Linear(X.shape[1], Y.shape[1]).double()
    return landscape.Problem(lin, "mse", (X, Y))


def test_perturbation_sharpness_is_rho_squared_trace_over_two_on_a_quadratic():
    pb = quadratic_problem()
    rho = 0.3
    est = perturbation_sharpness(pb, rho=rho, samples=200, probes=50, seed=1)
    truth = rho**2 * float(ref.hessian_matrix(pb).trace()) / 2
    assert abs(est.value - truth) < 4 * est.stderr
    assert abs(est.extra["quadratic"] - truth) < 4 * est.extra["quadratic_stderr"] + 1e-12
    assert est.extra["loss_evaluations"] == 401
    with pytest.raises(ConfigError):
        perturbation_sharpness(pb, rho=0)


def test_keskar_sharpness_finds_the_box_maximum_of_a_quadratic():
    """At the least-squares minimum, L(θ* + y) − L* = ½ yᵀHy; the box maximum is at a vertex."""
    g = torch.Generator().manual_seed(0)
    X = torch.linalg.qr(torch.randn(12, 3, generator=g, dtype=torch.float64))[0] * torch.tensor(
        [1.0, 2.0, 3.0], dtype=torch.float64
    )
    Y = torch.randn(12, 1, generator=g, dtype=torch.float64)
    lin = nn.Linear(3, 1, bias=False).double()
    with torch.no_grad():
        lin.weight.copy_(torch.linalg.lstsq(X, Y).solution.T)
    pb = landscape.Problem(lin, "mse", (X, Y))
    H = ref.hessian_matrix(pb)  # diagonal: orthogonal columns
    L0 = pb.loss_value()
    eps = 1e-2
    box = eps * (pb.theta.abs() + 1)
    best = max(0.5 * float(v @ H @ v) for v in (torch.tensor(sg, dtype=torch.float64) * box
                                                 for sg in itertools.product((-1, 1), repeat=3)))
    est = keskar_sharpness(pb, epsilon=eps, steps=10, seed=0)
    assert est.value == pytest.approx(100 * best / (1 + L0), rel=1e-6)
    sub = keskar_sharpness(pb, epsilon=eps, subspace=1, steps=10, seed=3)  # one random direction a
    a = torch.randn(3, 1, generator=torch.Generator().manual_seed(3), dtype=torch.float64)[:, 0]
    b = eps * (abs(float(torch.linalg.lstsq(a[:, None], pb.theta[:, None]).solution)) + 1)
    assert sub.value == pytest.approx(100 * 0.5 * b**2 * float(a @ H @ a) / (1 + L0), rel=1e-6)


def test_metrics_registered_and_run_through_measure():
    assert {"perturbation", "keskar"} <= set(METRICS)
    pb = quadratic_problem()
    s = Settings(probes=8, seed=0, extra={"rho": 0.1, "perturbations": 10, "epsilon": 1e-3,
                                          "ascent_steps": 4})
    out = measure(pb, ["perturbation", "keskar"], s, on_product=lambda k: None)
    assert out["perturbation"].extra["rho"] == 0.1 and out["keskar"].extra["steps"] == 4
    for name in ("perturbation", "keskar"):
        rows = METRICS[name].rows(out[METRICS[name].key])
        assert rows and all(len(r) == 4 for r in rows)
        json.dumps(out[METRICS[name].key].to_dict())


def test_stability_cli(tmp_path):
    path = tiny_checkpoint(tmp_path)
    runner = CliRunner()
    res = runner.invoke(app, ["stability", str(path), "--json", "--dtype", "float64", "--probes",
                              "4"])
    assert res.exit_code == 0, res.output
    rep = json.loads(res.stdout)
    assert rep["lr"] == 0.5 and rep["batch_size"] == 8  # the checkpoint's training record
    assert set(rep["verdicts"]) == {"gd", "sgd_nonuniformity", "alignment"}
    for v in rep["verdicts"].values():
        assert {"condition", "value", "error", "bound", "margin", "holds", "decided"} <= set(v)
    assert {"lambda_max", "nonuniformity", "hessian_frobenius", "mu"} <= set(rep["measured"])
    res = runner.invoke(app, ["stability", str(path), "--lr", "0.05", "--batch-size", "4",
                              "--sufficient",
                              "--dtype", "float64", "--probes", "4", "--out",
                              str(tmp_path / "s.h5")])
    assert res.exit_code == 0, res.output
    assert "2/η" in res.stdout and "sufficient" in res.stdout
    assert (tmp_path / "s.h5").exists()
    res = runner.invoke(app, ["stability", str(tiny_checkpoint(tmp_path, lr=None))])
    assert res.exit_code == 2 and "--lr" in res.output


def test_matrix_condition_is_sufficient_not_necessary():
    """docs/algorithms.md §2: λ_max{(I − ηH)² + η²(n−B)/(B(n−1)) Σ_H} > 1 while the exact
    mean-square growth of SGD, the spectral radius of X ↦ E[(I − ηH_i) X (I − ηH_i)], is below 1 (B
    = 1)."""
    a = torch.tensor([[-0.51, -0.765], [-0.004, -1.572], [0.001, -0.17]], dtype=torch.float64)
    model = nn.Linear(2, 1, bias=False).double()
    with torch.no_grad():
        model.weight.zero_()  # the interpolating minimum of f_i = a_iᵀθ with targets 0
    pb = landscape.Problem(model, "mse", (a, torch.zeros(3, 1, dtype=torch.float64)))
    lr = 0.915
    rep = stability_report(pb, lr, 1, probes=4, tol=1e-10, sufficient=True)
    Hs = ref.per_sample_hessians(pb)
    eye = torch.eye(2, dtype=torch.float64)
    step = sum(torch.kron(eye - lr * h, eye - lr * h) for h in Hs) / 3
    growth = float(torch.linalg.eigvals(step).abs().max())
    matrix = float(torch.linalg.eigvalsh(((eye - lr * Hs) @ (eye - lr * Hs)).mean(0))[-1])
    v = rep["verdicts"]["matrix_sufficient"]
    assert v["value"] == pytest.approx(matrix,
                                       rel=1e-9) and v["value"] > 1.05 and v["holds"] is False
    assert growth < 0.97  # yet SGD contracts in mean square: the condition is not necessary
    assert rep["sgd_necessary_holds"] is True
