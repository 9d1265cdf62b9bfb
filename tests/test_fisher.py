"""GGN, Monte-Carlo Fisher, empirical Fisher and ``landscape fisher`` against dense truths."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn
from torch.func import functional_call, jacrev
from typer.testing import CliRunner

import landscape
from landscape.cli.app import app
from landscape.curvature.fisher import EmpiricalFisher, Fisher
from landscape.curvature.ggn import GGN
from landscape.errors import LandscapeError
from landscape.estimators import top_eigenvalues
from landscape.estimators.alignment import matrix_comparison
from landscape.io.hdf5 import read_tree

from . import reference as ref
from .cases import CASES, cnn_bn, mlp_ce
from .test_noise import tiny_checkpoint

CLOSE = {"rtol": 1e-10, "atol": 1e-12}


@pytest.fixture(scope="module")
def problems():
    return {name: landscape.Problem(*CASES[name](), batch_size=5) for name in CASES}


@pytest.mark.parametrize("case", list(CASES))
def test_ggn_and_empirical_fisher_match_dense(problems, case):
    pb = problems[case]  # batches of 5: the last one is uneven
    torch.testing.assert_close(GGN(pb).dense(), ref.ggn(pb), **CLOSE)
    torch.testing.assert_close(EmpiricalFisher(pb, chunk=2).dense(), ref.empirical_fisher(pb),
                               **CLOSE)


@pytest.mark.parametrize("case", ["mlp_ce", "mlp_mse"])
def test_ggn_is_the_true_fisher(problems, case):
    """For cross-entropy the true Fisher is taken by enumerating every label (gradients by
    autodiff)."""
    pb = problems[case]
    torch.testing.assert_close(GGN(pb).dense(), ref.true_fisher(pb), **CLOSE)


def test_mc_fisher_converges_to_ggn_at_rate_one_over_sqrt_samples(problems):
    """E‖F_m − G‖_F² = C/m exactly, C = (1/n²) Σ_i (Σ_c π_ic ‖g_ic‖⁴ − ‖J_iᵀ M_i J_i‖_F²)."""
    pb = problems["mlp_ce"]
    G = ref.ggn(pb)
    J, M = ref.jacobians(pb), ref.output_hessians(pb)
    X, _ = ref.data(pb)
    with torch.no_grad():
        probs = torch.softmax(pb.forward(pb.params, X), dim=-1)
    n, k = probs.shape
    C = 0.0
    for i in range(n):
        rows = probs[i][None, :] - torch.eye(k, dtype=probs.dtype)  # r_c = π − e_c
        g = rows @ J[i]  # [k, p]: gradients at every label
        C += float((probs[i] * g.square().sum(1).square()).sum()) - float(
            (J[i].T @ M[i] @ J[i]).square().sum()
        )
    C /= n**2
    seeds = 10
    for m in (2, 32):
        errs = torch.tensor([m * float((Fisher(pb, mc_samples=m,
                                               seed=s).dense() - G).square().sum())
                             for s in range(seeds)], dtype=torch.float64)
        se = float(errs.std()) / math.sqrt(seeds)
        assert abs(float(errs.mean()) - C) < 4 * se, (m, float(errs.mean()), C, se)
    F = Fisher(pb, mc_samples=4, seed=1)
    D = F.dense()
    torch.testing.assert_close(D, D.T, **CLOSE)  # one fixed symmetric matrix
    torch.testing.assert_close(F.dense(), D, rtol=0, atol=0)  # the labels are drawn once
    assert float(torch.linalg.eigvalsh(D)[0]) > -1e-12


def test_mc_fisher_mse_is_seeded_and_unbiased(problems):
    pb = problems["mlp_mse"]
    a, b = Fisher(pb, mc_samples=3, seed=5).dense(), Fisher(pb, mc_samples=3, seed=5).dense()
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    G = ref.ggn(pb)
    mean = sum(Fisher(pb, mc_samples=50, seed=s).dense() for s in range(4)) / 4
    assert float((mean - G).norm() / G.norm()) < 0.1


def interpolating_net(n: int = 6, d: int = 3, width: int = 8, seed: int = 0):
    """A 2-layer tanh student fitted exactly to a teacher's targets by min-norm Gauss-Newton
    steps (n < p): every residual ends near 1e-16."""
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, d, generator=g, dtype=torch.float64)
    torch.manual_seed(seed)
    teacher = nn.Sequential(nn.Linear(d, 4), nn.Tanh(), nn.Linear(4, 1)).double()
    with torch.no_grad():
        Y = teacher(X)
    model = nn.Sequential(nn.Linear(d, width), nn.Tanh(), nn.Linear(width, 1)).double()
    init = [p.detach().clone() for p in model.parameters()]
    layout = landscape.curvature.ParamLayout.from_tensors(dict(model.named_parameters()))
    theta = layout.flatten(dict(model.named_parameters())).detach()

    def resid(t):
        return (functional_call(model, layout.unflatten(t), (X,)) - Y).reshape(-1)

    for _ in range(40):
        r = resid(theta)
        if float(r.abs().max()) < 1e-15:
            break
        J = jacrev(resid)(theta)
        theta = theta - J.T @ torch.linalg.solve(J @ J.T, r)
    with torch.no_grad():
        for p, v in zip(model.parameters(), layout.unflatten(theta).values()):
            p.copy_(v)
    return model, (X, Y), init


def test_hessian_equals_ggn_at_an_interpolating_minimum():
    """Lecture, "An important observation": H = G + (1/n) Σ e_i ∇²f_i, and every e_i = 0."""
    model, data, init = interpolating_net()
    pb = landscape.Problem(model, "mse", data)
    assert pb.loss_value() < 1e-28
    H, G = landscape.Hessian(pb).dense(), GGN(pb).dense()
    assert float((H - G).norm()) < 1e-12 * float(G.norm())
    top_h = top_eigenvalues(landscape.Hessian(pb), k=2, tol=1e-10)
    top_g = top_eigenvalues(GGN(pb), k=2, tol=1e-10)
    torch.testing.assert_close(top_h.values, top_g.values, rtol=1e-9, atol=0)
    with torch.no_grad():  # control: away from the minimum the residual term is not small
        for p, v in zip(model.parameters(), init):
            p.copy_(v)
    pb0 = landscape.Problem(model, "mse", data)
    H0, G0 = landscape.Hessian(pb0).dense(), GGN(pb0).dense()
    assert float((H0 - G0).norm()) > 1e-2 * float(G0.norm())


def test_matrix_comparison_within_standard_errors(problems):
    pb = problems["mlp_ce"]
    dense = {"hessian": ref.hessian_matrix(pb), "ggn": ref.ggn(pb),
             "empirical_fisher": ref.empirical_fisher(pb)}
    ops = {"hessian": landscape.Hessian(pb), "ggn": GGN(pb),
           "empirical_fisher": EmpiricalFisher(pb)}
    out = matrix_comparison(ops, probes=60, seed=3)
    for name, A in dense.items():
        tr, fr = out["trace"][name], out["frobenius"][name]
        assert abs(tr.value - float(A.trace())) < 4 * tr.stderr
        assert abs(fr.value - float(A.norm())) < 4 * fr.stderr
    for key, c in out["cosine"].items():
        a, b = key.split("~")
        assert abs(c.value - ref.frobenius_cosine(dense[a], dense[b])) < 4 * c.stderr + 1e-12, key
    same = matrix_comparison({"a": dense["ggn"], "b": dense["ggn"]}, probes=10)
    assert abs(same["cosine"]["a~b"].value - 1) < 1e-12


def test_monte_carlo_fisher_errors_cover_the_label_draws():
    """For cross-entropy the true Fisher is the GGN, so cos(GGN, F) = 1, tr F = tr G and
    ‖F‖_F = ‖G‖_F exactly. With one label per sample (the noisiest draw) on 24 samples, the
    comparison's standard errors must cover these truths at about their nominal rate: each
    estimate is a mean of 10 group means (t with 9 degrees of freedom: P(|t| < 2) = 0.92), so at
    least 31 of 40 seeds within 2 standard errors (a 3-sigma binomial margin). Errors from the
    probes alone gave the cosine 26 standard errors off."""
    model, loss, data = mlp_ce(n=24)
    pb = landscape.Problem(model, loss, data, batch_size=7)
    G = ref.ggn(pb)
    truth = {"trace": float(G.trace()), "frobenius": float(G.norm()), "cosine": 1.0}
    hits = {k: 0 for k in truth}
    for seed in range(40):
        out = matrix_comparison({"ggn": GGN(pb), "fisher": Fisher(pb, mc_samples=1, seed=seed)},
                                probes=20,
                                seed=seed)
        est = {"trace": out["trace"]["fisher"], "frobenius": out["frobenius"]["fisher"],
               "cosine": out["cosine"]["ggn~fisher"]}
        for k, e in est.items():
            hits[k] += abs(e.value - truth[k]) < 2 * e.stderr
    assert all(h >= 31 for h in hits.values()), hits


def test_undefined_quantities_are_clear_errors():
    model, _, data = mlp_ce()
    with pytest.raises(LandscapeError, match="likelihood"):
        Fisher(model, nn.CrossEntropyLoss(),
               data)  # a custom callable defines no predictive distribution
    with pytest.raises(LandscapeError, match="integer class labels"):
        GGN(model, "mse", data)  # mse's G on a classifier's labels
    model, loss, data = cnn_bn()
    with pytest.raises(LandscapeError, match="train mode"):
        EmpiricalFisher(model, loss, data, train_mode=True)
    GGN(model, loss, data, train_mode=True)  # a batch-level quantity stays defined


def test_fisher_cli_json_table_and_hdf5(tmp_path):
    path = tiny_checkpoint(tmp_path)
    runner = CliRunner()
    res = runner.invoke(app, ["fisher", str(path), "--json", "--probes", "8", "--dtype", "float64",
                              "--mc-samples", "2", "--out", str(tmp_path / "f.h5")])
    assert res.exit_code == 0, res.output
    rep = json.loads(res.stdout)
    assert set(rep["matrices"]) == {"hessian", "ggn", "fisher", "empirical_fisher"}
    for m in rep["matrices"].values():
        assert set(m) == {"trace", "lambda_max", "frobenius"}
        assert m["lambda_max"]["estimate"] > 0 and m["frobenius"]["stderr"] >= 0
    assert set(rep["cosine"]) == {"hessian~ggn", "hessian~fisher", "hessian~empirical_fisher",
                                  "ggn~fisher",
                                  "ggn~empirical_fisher", "fisher~empirical_fisher"}
    assert all(-1 <= c["estimate"] <= 1 + 1e-9 for c in rep["cosine"].values())
    tree = read_tree(tmp_path / "f.h5")
    assert (
        "hessian~ggn" in tree["cosine"]
        and json.loads(json.dumps(tree["settings"]))["mc_samples"] == 2
    )
    res = runner.invoke(app, ["fisher", str(path), "--probes", "4", "--dtype", "float64"])
    assert res.exit_code == 0 and "F_emp" in res.stdout and "cosine" in res.stdout
    res = runner.invoke(app, ["fisher", str(path), "--mc-samples", "0"])
    assert (
        res.exit_code == 2
        and "--mc-samples" in res.output
        and len(res.output.strip().splitlines()) == 1
    )
