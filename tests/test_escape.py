"""Escape dynamics (landscape.escape): the engine against the lecture's exact 1-D results, a network
minimum that SGD leaves while GD stays, vectorised = one at a time, and the CLI."""

from __future__ import annotations

import json
import math

import h5py
import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from landscape.escape import (
    DYNAMICS,
    ObjectiveHessian,
    ProblemObjective,
    descend,
    lambda_max,
    quadratic_family,
    second_moment_factor,
    sharpness_nonuniformity,
    simulate,
    slides_pair,
    trajectory_seeds,
)
from landscape.escape.analysis import escape_steps, gamma0, growth_rate, summarize
from landscape.escape.engine import Trajectories
from landscape.escape.toys import quadratic_gamma0, slides_pair_curvatures
from landscape.problem import Problem

F64 = torch.float64


def _tiny_mlp(seed: int = 0, n: int = 32, d: int = 5, h: int = 32) -> Problem:
    """Over-parameterised regression (p = 225 > n): GD reaches an interpolating minimum."""
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, d, generator=g, dtype=F64)
    Y = torch.randn(n, 1, generator=g, dtype=F64)
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(d, h), nn.Tanh(), nn.Linear(h, 1)).to(F64)
    return Problem(model, "mse", (X, Y))


# ----------------------------------------------------------------------------- 1-D formulas
def test_sharpness_nonuniformity_and_factor():
    a, s = sharpness_nonuniformity([1.0, 2.0, 3.0, 10.0])
    assert a == 4.0 and s == pytest.approx(math.sqrt(12.5))
    # B = n: no noise, the factor is GD's (1 - ηa)²; B = 1 is slides eq. 5
    assert second_moment_factor([1.0, 2.0, 3.0, 10.0], 0.4, 4) == pytest.approx(0.36)
    assert second_moment_factor([1.0, 2.0, 3.0, 10.0], 0.4, 1) == pytest.approx(0.36 + 0.16 * 12.5)
    # Theorem 4's γ0 = η² μ ‖H‖_F²/B with μ = s²/a², ‖H‖_F = a
    c = (4 - 2) / (2 * 3)  # n = 4, B = 2, without replacement
    assert quadratic_gamma0([1.0, 2.0, 3.0, 10.0], 0.4, 2) == pytest.approx(
        gamma0(0.4, 12.5 / 16, 4.0, c)
    )


@pytest.mark.parametrize("lr,batch", [(0.25, 1), (0.4, 1), (0.35, 2), (0.45, 2)])
def test_quadratic_family_second_moment_matches_formula(lr, batch):
    """E x_t² = r^t x_0² with r = (1 − ηa)² + η²(n−B)/(B(n−1)) s² (slides eqs. 5-6), on both sides
    of the stability boundary r = 1. The per-step factor f_t = x²_{t+1}/x²_t = (1 − η ā_{B_t})² is
    iid over steps and trajectories, so Var(x_t²) = E[f²]^t − r^{2t} is known exactly (E[f²] by
    enumerating the batches): the Monte-Carlo means must lie within 5 exact standard errors."""
    from itertools import combinations

    a = [1.0, 2.0, 3.0, 10.0]
    r = second_moment_factor(a, lr, batch)
    factors = [(1 - lr * sum(c) / batch) ** 2 for c in combinations(a, batch)]
    assert sum(factors) / len(factors) == pytest.approx(
        r
    )  # eq. 6 is exact for sampling without replacement
    m2 = sum(f * f for f in factors) / len(factors)
    T, steps = 4000, 4
    run = simulate(quadratic_family(a), torch.tensor([1.0], dtype=F64), "sgd", lr=lr,
                   batch_size=batch,
                   steps=steps, trajectories=T, seed=7)
    x2 = 2 * run.losses / 4.0  # L = (a/2) x², a = 4
    for t in range(1, steps + 1):
        se = math.sqrt((m2**t - r ** (2 * t)) / T)
        assert abs(float(x2[:, t].mean()) - r**t) < 5 * se, (t, float(x2[:, t].mean()), r**t, se)
    # the measured per-step growth of E x² (mean of the iid factors) against r
    ratios = (x2[:, 1:] / x2[:, :-1]).reshape(-1)
    assert abs(float(ratios.mean()) - r) < 5 * math.sqrt((m2 - r * r) / ratios.numel())
    assert (float(ratios.mean()) > 1) == (r > 1)  # the side of the boundary is measured correctly


def test_slides_pair_gd_stays_sgd_leaves():
    """f1 = min(x², 0.1(x−1)²), f2 = min(x², 1.9(x−1)²), η = 0.7, x0 = 1 − 1e-5: GD stays at
    x = 1 (factor −0.4 per step), SGD leaves (E(x−1)² grows 1.75 per step)."""
    f = slides_pair()
    x0 = torch.tensor([1 - 1e-5], dtype=F64)
    gd = simulate(f, x0, "gd", lr=0.7, batch_size=1, steps=200, trajectories=1, keep_final=True)
    assert (
        float(gd.distances.max()) < 2e-5
    )  # |x_t − 1| = 0.4^t · 1e-5: it overshoots once, then stays
    assert bool((gd.losses <= gd.losses[:, :1]).all())
    assert abs(float(gd.final[0, 0]) - 1) < 1e-12
    sgd = simulate(f, x0, "sgd", lr=0.7, batch_size=1, steps=200, trajectories=100, seed=0,
                   keep_final=True)
    left = sgd.distances > 0.5  # left the basin of x = 1 (towards x = 0)
    assert float(left.any(1).double().mean()) >= 0.95
    first = left.double().argmax(1)[left.any(1)].double()
    assert 25 <= float(first.median()) <= 120  # docs/algorithms.md §2: median ~51
    # exponential phase: growth of the mean loss near the exact 1-D factor of the linearisation
    assert second_moment_factor(slides_pair_curvatures(), 0.7, 1) == pytest.approx(1.7476)
    # the version printed WITH ½ is stable for SGD: no escape
    half = simulate(slides_pair(half=True), x0, "sgd", lr=0.7, batch_size=1, steps=200,
                    trajectories=50, seed=0)
    assert float(half.distances.max()) < 2e-5


# ----------------------------------------------------------------------------- a network minimum
@pytest.fixture(scope="module")
def gd_minimum():
    pb = _tiny_mlp(n=16)
    lr = 0.3
    ds = descend(pb, pb.theta, lr, tol=1e-6, max_steps=5000)  # ~800 steps
    return pb, lr, ds


def test_network_minimum_sgd_escapes_gd_and_small_noise_stay(gd_minimum):
    pb, lr, ds = gd_minimum
    assert ds.converged and ds.loss < 1e-6
    lam = lambda_max(ProblemObjective(pb), ds.theta)
    assert lam <= 2 / lr  # linearly stable for GD, near the edge of stability: λ ≈ 6.1 < 6.67
    kw = {"lr": lr, "steps": 100, "trajectories": 24, "seed": 1}
    runs = {name: simulate(pb, ds.theta, name, batch_size=2, **kw) for name in ("sgd", "gd",
                                                                                "small-noise")}
    sums = {k: summarize(r, escape_factor=100.0) for k, r in runs.items()}
    assert sums["sgd"].fraction_escaped >= 0.9
    assert sums["sgd"].growth_rate > 1
    assert sums["gd"].escaped == 0 and sums["small-noise"].escaped == 0
    assert float(runs["gd"].losses[0, -1]) <= float(runs["gd"].losses[0, 0])  # GD keeps converging


def test_objective_hessian_matches_problem_hessian():
    from landscape import Hessian

    pb = _tiny_mlp(n=6, d=3, h=4)
    H = Hessian(pb).dense()
    Ho = ObjectiveHessian(ProblemObjective(pb), pb.theta).dense()
    assert torch.allclose(H, Ho, atol=1e-12, rtol=1e-10)
    assert lambda_max(ProblemObjective(pb),
                      pb.theta) == pytest.approx(float(torch.linalg.eigvalsh(H).max()))


@pytest.mark.parametrize("dynamics", DYNAMICS)
def test_noise_total_variance_of_one_step(dynamics):
    """E‖ξ‖² of one step's noise ξ = (θ0 − ηg − θ1)/η against its definition: SGD's exact
    c_B tr Σ (without replacement), the same for isotropic noise, κ² of it for the control, and
    s² tr F_emp, s² = (n−B)/(nB), for the covariance-noise pair (sgd-covariance-noise eq. 5)."""
    from landscape.curvature import functional as fx
    from landscape.escape import sgd_noise_factor

    pb = _tiny_mlp(n=20, d=3, h=6)
    n, B, lr, T = pb.n, 3, 0.1, 3000
    X, Y = pb.batches.first()
    G = pb.layout.flatten_rows(fx.per_sample_grads(pb.forward, pb.loss, pb.params, X, Y))  # [n, p]
    g = G.mean(0)
    tr_sigma = float((G - g).pow(2).sum(1).mean())
    tr_f = float(G.pow(2).sum(1).mean())
    c_B, s2 = sgd_noise_factor(n, B), (n - B) / (n * B)
    expected = {"gd": 0.0, "sgd": c_B * tr_sigma, "isotropic": c_B * tr_sigma,
                "small-noise": 0.01 * c_B * tr_sigma,
                "lb-diag-noise": s2 * tr_f, "lb-full-noise": s2 * tr_f}[dynamics]
    run = simulate(pb, pb.theta, dynamics, lr=lr, batch_size=B, steps=1, trajectories=T, seed=5,
                   keep_final=True,
                   noise_samples=4, control_scale=0.1)
    xi = (pb.theta - lr * g - run.final) / lr
    sq = xi.pow(2).sum(1)
    assert (
        float(xi.mean(0).abs().max()) < 5 * float(xi.std(0).max()) / math.sqrt(T) + 1e-12
    )  # unbiased
    assert abs(float(sq.mean()) - expected) <= 5 * float(sq.std()) / math.sqrt(T) + 1e-10 * (
        1 + expected
    )


# ----------------------------------------------------------------------------- reproducibility
@pytest.mark.parametrize("dynamics", DYNAMICS)
def test_vectorised_equals_one_at_a_time(dynamics):
    pb = _tiny_mlp(n=20, d=4, h=8)
    kw = {"lr": 0.05, "batch_size": 3, "steps": 12, "noise_samples": 5, "keep_final": True}
    run = simulate(pb, pb.theta, dynamics, trajectories=4, seed=11, **kw)
    assert run.seeds == tuple(trajectory_seeds(11, 4))
    for j in range(4):
        alone = simulate(pb, pb.theta, dynamics, seeds=[run.seeds[j]], **kw)
        assert torch.allclose(alone.final[0], run.final[j], atol=1e-12, rtol=0)
        assert torch.allclose(alone.losses[0], run.losses[j], atol=1e-12, rtol=0)
        assert torch.allclose(alone.distances[0], run.distances[j], atol=1e-12, rtol=0)
    if dynamics != "gd":  # distinct seeds give distinct trajectories
        assert not torch.equal(run.final[0], run.final[1])


def test_trajectory_seeds_prefix_stable():
    assert trajectory_seeds(3, 5)[:2] == trajectory_seeds(3, 2)
    assert trajectory_seeds(3, 2) != trajectory_seeds(4, 2)


# ----------------------------------------------------------------------------- analysis
def _traj(losses: torch.Tensor) -> Trajectories:
    T, R = losses.shape
    return Trajectories("sgd", torch.arange(R), losses.double(), torch.zeros(T, R), tuple(range(T)),
                        {}, 1.0, T)


def test_escape_steps_and_summary():
    L = torch.tensor([[1.0, 2.0, 20.0, 5.0], [1.0, 0.5, 0.1, 0.1], [1.0, math.nan, 1.0, 1.0]])
    steps = escape_steps(_traj(L), 10.0)
    assert steps.tolist() == [2.0, math.inf, 1.0]
    s = summarize(_traj(L), 10.0)
    assert s.escaped == 2 and s.fraction_escaped == pytest.approx(2 / 3)
    assert s.median_step == 2.0 and s.median_step_escaped == 1.0  # torch median: lower of two


def test_growth_rate_recovers_exponential_phase():
    t = torch.arange(0, 80)
    mean = 1e-8 * 1.3 ** t.double()
    mean = torch.minimum(mean, torch.tensor(1.0))  # saturates at 1
    fit = growth_rate(t, mean)
    assert fit.rate == pytest.approx(1.3, rel=1e-9)
    assert fit.last < 70
    decay = growth_rate(t, 0.9 ** t.double())
    assert decay.rate == pytest.approx(0.9, rel=1e-9) and decay.last == 79


# ----------------------------------------------------------------------------- CLI
def _cli(args):
    from landscape.cli.app import app

    return CliRunner().invoke(app, ["escape", *args])


_SMALL = ["--model", "two-layer", "--model-arg", "width=16", "--data", "teacher-student",
          "--data-arg", "n=16",
          "--data-arg", "dim=3", "--lr", "0.2", "--batch-size", "2", "-T", "6", "--steps", "15",
          "--tol", "1e-3",
          "--dtype", "float64", "--probes", "4", "--no-progress"]


def test_cli_json_out_plot(tmp_path):
    out, png = tmp_path / "escape.h5", tmp_path / "escape.png"
    res = _cli([*_SMALL, "--to", "sgd,gd", "--to", "isotropic", "--json", "--out", str(out),
                "--plot", str(png),
                "--track-eig-every", "5", "--eig-trajectories", "2", "--eval-samples", "10"])
    assert res.exit_code == 0, res.output
    rep = json.loads(res.stdout)
    assert set(rep["runs"]) == {"sgd", "gd", "isotropic"}
    assert rep["gd"]["converged"] and rep["gd"]["loss"] < 1e-3
    assert rep["start"]["lambda_max"] > 0 and isinstance(rep["start"]["gd_stable"], bool)
    for k in ("fraction_escaped", "median_step", "growth_rate", "predicted_growth",
              "trajectory_steps_per_second"):
        assert k in rep["runs"]["sgd"]
    with h5py.File(out) as f:
        assert f["runs/sgd/losses"].shape == (6, 16)
        assert f["runs/sgd/eig_values"].shape == (4, 2)
        assert json.loads(f.attrs["settings"])["eval_samples"] == 10
    assert png.stat().st_size > 0


def test_cli_from_checkpoint(tmp_path):
    """A checkpoint's own lr is the default; --from checkpoint starts at its weights (no GD)."""
    from landscape.data import load_dataset
    from landscape.io.checkpoint import make_checkpoint
    from landscape.models import build_model, model_kwargs_for

    data_kwargs = {"n": 12, "dim": 3}
    split = load_dataset("teacher-student", **data_kwargs)
    kw = model_kwargs_for("two-layer", split, width=8)
    path = tmp_path / "start.pt"
    make_checkpoint(
        "two-layer",
        kw,
        "teacher-student",
        data_kwargs,
        "mse",
        build_model("two-layer", **kw),
        {"lr": 0.05},
        split=split,
    ).save(path)
    res = _cli([str(path), "--to", "sgd,small-noise", "-T", "4", "--steps", "5", "--batch-size",
                "3", "--no-theory",
                "--json", "--no-progress"])
    assert res.exit_code == 0, res.output
    rep = json.loads(res.stdout)
    assert (
        rep["settings"]["from"] == "checkpoint"
        and rep["settings"]["lr"] == 0.05
        and rep["gd"] is None
    )
    assert rep["identity"]["path"] == str(path)
    assert rep["runs"]["sgd"]["trajectories"] == 4


@pytest.mark.parametrize("bad", [["--to", "adam"], ["--lr", "-1"], ["--escape-factor", "0.5"],
                                 ["--batch-size", "100"], ["--from", "nowhere"]])
def test_cli_bad_input_exit_2(bad):
    res = _cli([*_SMALL, *bad])
    assert res.exit_code == 2, res.output
    assert "error" in res.output


def test_cli_missing_checkpoint_exit_2(tmp_path):
    res = _cli([str(tmp_path / "nope.pt"), "--to", "sgd"])
    assert res.exit_code == 2
