"""The Hessian operator against exact dense Hessians from torch.func.hessian."""

import pytest
import torch
from torch.func import functional_call, hessian

import landscape
from landscape.curvature.layout import ParamLayout
from landscape.losses import get_loss

from .cases import CASES, cnn_bn, mlp_ce, mlp_mse


def dense_hessian(model, loss, data, params: str | None = None) -> torch.Tensor:
    """∇² of the mean loss over the whole data, by torch.func.hessian on the flat vector."""
    model = model.eval()
    named = {n: p.detach() for n, p in model.named_parameters()}
    buffers = dict(model.named_buffers())
    import re

    chosen = {n: t for n, t in named.items() if params is None or re.search(params, n)}
    fixed = {n: t for n, t in named.items() if n not in chosen}
    layout = ParamLayout.from_tensors(chosen)
    X, Y = data
    lf = get_loss(loss)

    def L(flat):
        out = functional_call(model, ({**layout.unflatten(flat), **fixed}, buffers), (X,))
        return lf.sum(out, Y) / X.shape[0]

    return hessian(L)(layout.flatten(chosen))


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("engine", ["graph", "jvp"])
@pytest.mark.parametrize("batch_size", [5, 1000])
def test_matches_dense(case, engine, batch_size):
    model, loss, data = CASES[case]()
    H = landscape.Hessian(model, loss, data, batch_size=batch_size, engine=engine)
    truth = dense_hessian(model, loss, data)
    torch.testing.assert_close(H.dense(), truth, rtol=1e-10, atol=1e-12)
    assert H.matvecs == H.shape[0]


def test_uneven_batches_weighted_exactly():
    """37 samples in batches of 5, 8 and 37 give the same operator (last batch 2, 5, full)."""
    model, loss, data = mlp_ce(n=37)
    V = torch.randn(landscape.Hessian(model, loss, data).shape[0], 3, dtype=torch.float64)
    outs = [landscape.Hessian(model, loss, data, batch_size=b).matmat(V) for b in (5, 8, 37)]
    for o in outs[1:]:
        torch.testing.assert_close(o, outs[0], rtol=1e-12, atol=1e-13)


def test_param_subset_is_the_dense_block():
    model, loss, data = mlp_mse()
    H = landscape.Hessian(model, loss, data, params=r"^2\.")
    truth = dense_hessian(model, loss, data, params=r"^2\.")
    assert H.shape[0] == truth.shape[0] == 6 * 2 + 2
    torch.testing.assert_close(H.dense(), truth, rtol=1e-10, atol=1e-12)


def test_samples_subset_is_seeded():
    model, loss, data = mlp_ce(n=37)
    a = landscape.Problem(model, loss, data, samples=10, seed=3)
    b = landscape.Problem(model, loss, data, samples=10, seed=3)
    c = landscape.Problem(model, loss, data, samples=10, seed=4)
    assert a.n == 10 and torch.equal(a.indices, b.indices) and not torch.equal(a.indices, c.indices)
    X, Y = data
    sub = (X[a.indices], Y[a.indices])
    torch.testing.assert_close(landscape.Hessian(a).dense(), dense_hessian(model, loss, sub),
                               rtol=1e-10, atol=1e-12)


def test_slides_example_one_sample():
    """L(a, w) = ½(aw − 1)² (lecture slides): H = [[w², 2aw − 1], [2aw − 1, a²]]."""

    class Product(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.a = torch.nn.Parameter(torch.tensor(2.0, dtype=torch.float64))
            self.w = torch.nn.Parameter(torch.tensor(0.75, dtype=torch.float64))

        def forward(self, x):
            return (self.a * self.w * x).reshape(-1, 1)

    data = (torch.ones(1, 1, dtype=torch.float64), torch.ones(1, 1, dtype=torch.float64))
    H = landscape.Hessian(Product(), "mse", data).dense()
    a, w = 2.0, 0.75
    truth = torch.tensor([[w * w, 2 * a * w - 1], [2 * a * w - 1, a * a]], dtype=torch.float64)
    torch.testing.assert_close(H, truth)
    # at the minimum manifold aw = 1 the Hessian is rank one with eigenvalue a² + w²
    a, w = 2.0, 0.5
    m = Product()
    m.w.data.fill_(w)
    ev = torch.linalg.eigvalsh(landscape.Hessian(m, "mse", data).dense())
    torch.testing.assert_close(ev, torch.tensor([0.0, a * a + w * w], dtype=torch.float64),
                               atol=1e-12, rtol=0)


def test_batchnorm_eval_and_train_mode():
    model, loss, data = cnn_bn()
    ev = landscape.Problem(model, loss, data)
    before = {n: b.clone() for n, b in ev.model.named_buffers()}
    landscape.Hessian(ev).matvec(torch.randn(ev.p, dtype=torch.float64))
    for n, b in ev.model.named_buffers():
        assert torch.equal(b, before[n])
    tr = landscape.Problem(model, loss, data, train_mode=True, batch_size=1000)
    assert (
        abs(tr.loss_value() - ev.loss_value()) > 1e-6
    )  # batch statistics differ from running ones
    for n, b in model.named_buffers():  # the caller's model is untouched
        if "running" in n:
            assert not torch.equal(b, torch.zeros_like(b))


def test_float32_and_dtype_option():
    model, loss, data = mlp_ce(dtype=torch.float32)
    pb = landscape.Problem(model, loss, data, dtype="float64")
    assert pb.dtype == torch.float64 and pb.theta.dtype == torch.float64
    H32 = landscape.Hessian(model, loss, data).dense()
    H64 = landscape.Hessian(pb).dense()
    torch.testing.assert_close(H32.double(), H64, rtol=1e-4, atol=1e-5)


def test_scipy_view():
    import numpy as np

    model, loss, data = mlp_mse()
    H = landscape.Hessian(model, loss, data)
    v = np.random.default_rng(0).standard_normal(H.shape[0])
    np.testing.assert_allclose(H.to_scipy() @ v, H.matvec(torch.from_numpy(v)).numpy(), rtol=1e-12)


def test_bad_inputs():
    from landscape.errors import ConfigError, LandscapeError

    model, loss, data = mlp_ce()
    with pytest.raises(ConfigError, match="matches no parameter"):
        landscape.Problem(model, loss, data, params="nothing")
    with pytest.raises(ConfigError, match="mse needs float targets"):
        landscape.Problem(model, "mse", data)
    if not torch.cuda.is_available():
        with pytest.raises(LandscapeError, match="no CUDA GPU"):
            landscape.Problem(model, loss, data, device="cuda")
    X, Y = data
    with pytest.raises(ConfigError, match="samples but targets"):
        landscape.Problem(model, loss, (X, Y[:-1]))
