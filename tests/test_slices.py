"""Slices and interpolation (Li et al. 2018; Keskar et al. 2017) against closed forms and dense
references, in float64 on tiny models."""

from __future__ import annotations

import copy

import h5py
import numpy as np
import pytest
import torch
from torch import nn

from landscape import Problem
from landscape.io.hdf5 import write_tree
from landscape.io.render import render
from landscape.slices import (
    PointEvaluator,
    axis,
    evaluate_grid,
    interpolate,
    make_directions,
    normalize,
    pca_directions,
    random_directions,
    recompute_bn,
)
from landscape.slices.grid import slice_tree
from tests.cases import TinyCNN, cnn_bn, mlp_ce, mlp_mse


def _linear_mse(n=23, d=4, k=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = nn.Linear(d, k).double()
    X = torch.randn(n, d, generator=g, dtype=torch.float64)
    Y = torch.randn(n, k, generator=g, dtype=torch.float64)
    return model, X, Y


def test_slice_of_a_quadratic_equals_the_closed_form():
    """Linear model + ½‖·‖²: L(W, b) = (1/2n) ‖X Wᵀ + b − Y‖²_F exactly, at every grid point."""
    model, X, Y = _linear_mse()
    pb = Problem(model, "mse", (X, Y), batch_size=5)  # uneven last batch (23 = 4·5 + 3)
    D = random_directions(pb.theta, pb.layout, 2, seed=3, norm="none", include_bias_bn=True)
    a, b = axis(-1.5, 1.0, 7), axis(-0.5, 2.0, 6)
    res = evaluate_grid({"train": pb}, pb.theta, D, [a, b],
                        batch_points=4)  # 42 points, uneven chunks
    W0, b0 = model.weight.detach().numpy(), model.bias.detach().numpy()
    Dn = D.numpy()
    k, d = W0.shape
    Xn, Yn = X.numpy(), Y.numpy()
    truth = np.empty((len(a), len(b)))
    for i, al in enumerate(a):
        for j, be in enumerate(b):
            v = al * Dn[:, 0] + be * Dn[:, 1]
            W, bias = W0 + v[: k * d].reshape(k, d), b0 + v[k * d:]
            truth[i, j] = 0.5 * ((Xn @ W.T + bias - Yn) ** 2).sum() / X.shape[0]
    np.testing.assert_allclose(res.values["train_loss"], truth, rtol=1e-12, atol=1e-13)
    assert "train_accuracy" not in res.values and res.points == 42


def test_curvature_along_the_top_eigenvector_is_the_eigenvalue():
    """(L(h) − 2L(0) + L(−h)) / h² = vᵀHv + O(h²) = λ_max for the unit top eigenvector."""
    model, loss, data = mlp_mse()
    pb = Problem(model, loss, data, batch_size=8)
    H = torch.func.hessian(lambda t: pb.loss.sum(pb.forward(pb.at(t), data[0]),
                                                 data[1]) / pb.n)(pb.theta)
    evals, evecs = torch.linalg.eigh(H)
    h = 1e-3
    for v, lam in ((evecs[:, -1:], evals[-1]), ):
        res = evaluate_grid({"train": pb}, pb.theta, v, [np.array([-h, 0.0, h])], batch_points=3)
        L = res.values["train_loss"]
        assert abs((L[0] - 2 * L[1] + L[2]) / h**2 - float(lam)) < 1e-5 * float(lam)
    # the library's eigen directions (Lanczos) find the same eigenvalue and direction
    dirs = make_directions("eigen", pb, 1, tol=1e-10)
    assert abs(dirs.info["eigenvalues"][0] - float(evals[-1])) < 1e-8 * float(evals[-1])
    assert abs(float(dirs.vectors[:, 0] @ evecs[:, -1])) > 1 - 1e-8


def test_filter_normalisation_matches_each_filter_and_zeroes_biases():
    model, loss, data = cnn_bn()
    pb = Problem(model, loss, data)
    d = random_directions(pb.theta, pb.layout, 1, seed=1, norm="filter")[:, 0]
    dd, th = pb.layout.unflatten(d), pb.params
    for name, t in th.items():
        if t.dim() <= 1:  # conv/fc biases, BatchNorm weight and bias
            assert torch.count_nonzero(dd[name]) == 0, name
        else:
            torch.testing.assert_close(dd[name].reshape(t.shape[0], -1).norm(dim=1),
                                       t.reshape(t.shape[0], -1).norm(dim=1), rtol=1e-12, atol=0)
    # include_bias_bn: 1-D parameters move too, each with the norm of its tensor
    d2 = pb.layout.unflatten(random_directions(pb.theta, pb.layout, 1, seed=1,
                                               include_bias_bn=True)[:, 0])
    for name in ("bn.weight", "bn.bias", "conv.bias", "fc.bias"):
        assert abs(float(d2[name].norm() - th[name].norm())) < 1e-12
    # layer normalisation: each tensor as a whole
    d3 = pb.layout.unflatten(normalize(torch.randn(pb.p, dtype=torch.float64), pb.theta, pb.layout,
                                       "layer"))
    for name in ("conv.weight", "fc.weight"):
        assert abs(float(d3[name].norm() - th[name].norm())) < 1e-12
    # the same seed gives the same directions; another seed others
    torch.testing.assert_close(random_directions(pb.theta, pb.layout, 1, seed=1)[:, 0], d)
    assert not torch.allclose(random_directions(pb.theta, pb.layout, 1, seed=2)[:, 0], d)


@pytest.mark.parametrize("case, train_mode", [(mlp_ce, False), (cnn_bn, False), (cnn_bn, True)])
def test_batched_points_equal_one_at_a_time(case, train_mode):
    model, loss, data = case()
    pb = Problem(model, loss, data, batch_size=8,
                 train_mode=train_mode)  # train mode: batch statistics
    thetas = pb.theta + 0.3 * torch.randn(11, pb.p, dtype=torch.float64,
                                          generator=torch.Generator().manual_seed(0))
    one = PointEvaluator(pb, 1).evaluate(thetas)
    many = PointEvaluator(pb, 4).evaluate(thetas)
    torch.testing.assert_close(many[0], one[0], rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(many[1], one[1], rtol=0, atol=0)
    for t, lv, acc in zip(thetas[:3], one[0], one[1]):  # and equal to the Problem's own numbers
        assert (
            abs(pb.loss_value(t) - float(lv)) < 1e-12 and abs(pb.accuracy(t) - float(acc)) < 1e-15
        )


def test_recompute_bn_uses_all_samples_whatever_the_batches():
    """Uneven batches (5, 5, 5, 5, 1 of 21 samples) give the whole data's statistics exactly."""
    model, loss, (X, Y) = cnn_bn()
    pb = Problem(model, loss, (X, Y), batch_size=5)
    bufs = recompute_bn(pb, pb.params)
    h = torch.nn.functional.conv2d(X, pb.params["conv.weight"], pb.params["conv.bias"])
    torch.testing.assert_close(bufs["bn.running_mean"], h.mean(dim=(0, 2, 3)), rtol=1e-12,
                               atol=1e-12)
    torch.testing.assert_close(bufs["bn.running_var"], h.var(dim=(0, 2, 3), unbiased=True),
                               rtol=1e-10, atol=1e-12)


def test_recompute_bn_matches_the_batch_statistics():
    model, loss, (X, Y) = cnn_bn()
    pb = Problem(model, loss, (X, Y),
                 batch_size=64)  # one batch: the cumulative mean is that batch's
    bufs = recompute_bn(pb, pb.params)
    h = torch.nn.functional.conv2d(X, pb.params["conv.weight"], pb.params["conv.bias"])
    torch.testing.assert_close(bufs["bn.running_mean"], h.mean(dim=(0, 2, 3)))
    torch.testing.assert_close(bufs["bn.running_var"], h.var(dim=(0, 2, 3), unbiased=True))
    res = evaluate_grid({"train": pb}, pb.theta, torch.zeros(pb.p, 1, dtype=torch.float64),
                        [np.array([0.0, 1.0])],
                        recompute_bn_stats=True)
    m = copy.deepcopy(model)
    m.bn.running_mean.copy_(bufs["bn.running_mean"])
    m.bn.running_var.copy_(bufs["bn.running_var"])
    assert abs(Problem(m, loss, (X, Y)).loss_value() - res.values["train_loss"][0]) < 1e-12
    assert res.settings["recompute_bn"]


def test_interpolation_endpoints_are_the_checkpoints_losses():
    model_a, loss, data = cnn_bn(seed=0)
    model_b = TinyCNN().double()
    model_b.load_state_dict(cnn_bn(seed=1)[0].state_dict())
    with torch.no_grad():  # different running statistics too
        model_b.bn.running_mean.add_(0.2)
        model_b.bn.running_var.mul_(1.5)
    problems = {"train": Problem(model_a, loss, data, batch_size=8)}
    res = interpolate(problems, model_b.state_dict(), np.array([-0.5, 0.0, 0.5, 1.0]),
                      batch_points=3)
    L = res.values["train_loss"]
    assert abs(L[1] - Problem(model_a, loss, data).loss_value()) < 1e-12
    assert abs(L[3] - Problem(model_b, loss, data).loss_value()) < 1e-12
    # the midpoint uses the midpoint parameters and running statistics
    mid = copy.deepcopy(model_a)
    with torch.no_grad():
        for (_, ta), (_, tb) in zip(mid.state_dict().items(), model_b.state_dict().items()):
            if ta.is_floating_point():
                ta.copy_(0.5 * ta + 0.5 * tb)
    assert abs(L[2] - Problem(mid, loss, data).loss_value()) < 1e-12


def test_interpolation_between_different_architectures_is_a_clear_error():
    from landscape.errors import CheckpointError

    model_a, loss, data = mlp_ce()
    other = nn.Sequential(nn.Linear(5, 4), nn.Tanh(), nn.Linear(4, 3)).double()
    with pytest.raises(CheckpointError, match="architectures differ"):
        interpolate(
            {"train": Problem(model_a, loss, data)}, other.state_dict(), np.array([0.0, 1.0])
        )


def test_pca_recovers_the_plane_and_the_trajectory():
    g = torch.Generator().manual_seed(0)
    p = 50
    theta = torch.randn(p, generator=g, dtype=torch.float64)
    U, _ = torch.linalg.qr(torch.randn(p, 2, generator=g, dtype=torch.float64))
    t = torch.linspace(0, 1, 9, dtype=torch.float64)
    coef = torch.stack([3 * (t - 1), torch.sin(3 * t)], dim=1)  # ends at θ (coordinates 0)
    snaps = theta + coef @ U.T
    D, coords, explained = pca_directions(theta, snaps, 2)
    torch.testing.assert_close(D.T @ D, torch.eye(2, dtype=torch.float64), atol=1e-12, rtol=0)
    torch.testing.assert_close((U.T @ D).norm(dim=0), torch.ones(2, dtype=torch.float64),
                               atol=1e-12, rtol=0)
    torch.testing.assert_close(theta + coords @ D.T, snaps, atol=1e-12,
                               rtol=0)  # exact: the plane holds them
    assert abs(float(explained.sum()) - 1) < 1e-12 and coords[0, 0] < 0


def test_checkpoint_plane_puts_each_checkpoint_at_its_unit_coordinate():
    model, loss, data = mlp_ce()
    pb = Problem(model, loss, data)
    gen = torch.Generator().manual_seed(4)
    tb = pb.theta + 0.5 * torch.randn(pb.p, generator=gen, dtype=torch.float64)
    tc = pb.theta + 0.5 * torch.randn(pb.p, generator=gen, dtype=torch.float64)
    from landscape.slices import checkpoint_directions

    D = checkpoint_directions(pb.theta, [tb, tc])
    res = evaluate_grid({"train": pb}, pb.theta, D, [np.array([0.0, 1.0])] * 2, batch_points=4)
    L = res.values["train_loss"]
    assert abs(L[1, 0] - pb.loss_value(tb)) < 1e-12 and abs(L[0, 1] - pb.loss_value(tc)) < 1e-12
    assert abs(L[0, 0] - pb.loss_value()) < 1e-12


def _nonempty(path) -> bool:
    return path.is_file() and path.stat().st_size > 1000


def test_figures_of_every_kind_are_rendered(tmp_path):
    model, loss, data = mlp_ce()
    pb = Problem(model, loss, data)
    problems = {"train": pb, "test": Problem(model, loss, (data[0][:20], data[1][:20]))}
    dirs = make_directions("random", pb, 2, seed=0)
    dirs.trajectory = torch.tensor([[-0.8, 0.3], [-0.4, 0.1], [0.0, 0.0]], dtype=torch.float64)
    dirs.labels = ["a", "b", "c"]
    res2 = evaluate_grid(problems, dirs.theta, dirs.vectors, [axis(-1, 1, 9)] * 2)
    tree, attrs = slice_tree(res2, directions=dirs, header={"checkpoint": "x.pt"})
    write_tree(tmp_path / "s2.h5", tree, attrs)
    for kind in ("contour", "heatmap", "surface"):
        out = render(tmp_path / "s2.h5", kind)[0]
        assert out.name == f"s2-{kind}.png" and _nonempty(out)
    assert _nonempty(render(tmp_path / "s2.h5", "auto", tmp_path / "acc.pdf",
                            quantity="accuracy")[0])
    res1 = evaluate_grid(problems, dirs.theta, dirs.vectors[:, :1], [axis(-1, 1, 9)])
    tree, attrs = slice_tree(res1, kind="interpolation", endpoints={"a": "A.pt", "b": "B.pt"})
    write_tree(tmp_path / "i.h5", tree, attrs)
    assert _nonempty(render(tmp_path / "i.h5")[0])
    # a sharpness file with a density, a training run, an escape file
    nodes = torch.linspace(-1, 5, 12).reshape(2, 6)
    write_tree(
        tmp_path / "d.h5",
        {
            "metrics": {
                "density": {
                    "nodes": nodes.numpy(),
                    "weights": (torch.ones(2, 6) / 6).numpy(),
                    "runs": 2,
                    "steps": 6,
                    "matvecs": 12,
                }
            }
        },
    )
    assert _nonempty(render(tmp_path / "d.h5")[0])
    from landscape.train.run import RunDir, Series

    s = Series()
    for step in range(5):
        s.append({"step": step, "epoch": 0, "train_loss": 1.0 / (step + 1),
                  "test_loss": 1.2 / (step + 1),
                  "train_accuracy": 0.5, "trace": 3.0 + step, "trace_stderr": 0.1})
    RunDir(tmp_path / "run").write_h5(s, {"optimizer": "sgd", "lr": 0.1}, {"status": "finished"})
    assert _nonempty(render(tmp_path / "run" / "run.h5")[0])
    losses = np.exp(np.random.default_rng(0).normal(size=(6, 20)).cumsum(1) * 0.1)
    write_tree(tmp_path / "e.h5", {"runs": {"sgd": {"record_steps": np.arange(20), "losses": losses,
                                                    "escape_factor": 10.0, "trajectories": 6},
                                            "gd": {"record_steps": np.arange(20),
                                                   "losses": np.ones((6, 20))}}},
               {"format": "landscape-escape"})
    assert _nonempty(render(tmp_path / "e.h5")[0])
    write_tree(tmp_path / "e2.h5",
               {"sgd": {"loss": losses}})  # any [trajectories, steps] loss array
    assert _nonempty(render(tmp_path / "e2.h5", "escape")[0])
    with h5py.File(tmp_path / "s2.h5") as f:
        assert f["values/train_loss"].shape == (9, 9) and f["directions/vectors"].shape == (pb.p, 2)
