"""Cross-check against PyHessian 0.1, the reference implementation (same model, same batches)."""

import numpy as np
import pytest
import torch

import landscape

from .cases import mlp_ce

pyhessian = pytest.importorskip("pyhessian")


pytestmark = pytest.mark.filterwarnings(r"ignore:Using backward\(\) with create_graph=True")


def _setup():
    model, loss, (X, Y) = mlp_ce(n=37, d=5, h=7, k=3)
    loader = list(zip(X.split(8), Y.split(8)))  # the last batch holds 5 samples
    ph = pyhessian.hessian(model, torch.nn.CrossEntropyLoss(), dataloader=loader, cuda=False)
    H = landscape.Hessian(model, loss, (X, Y), batch_size=8)
    return model, ph, H


def test_hessian_vector_products_agree():
    model, ph, H = _setup()
    g = torch.Generator().manual_seed(0)
    v = [torch.randn(p.shape, generator=g, dtype=torch.float64) for p in model.parameters()]
    _, hv = ph.dataloader_hv_product(v)
    ours = H.matvec(torch.cat([t.reshape(-1) for t in v]))
    torch.testing.assert_close(torch.cat([t.reshape(-1) for t in hv]), ours, rtol=1e-10, atol=1e-12)


def test_trace_and_top_eigenvalue_agree():
    _, ph, H = _setup()
    exact_trace = float(torch.trace(H.dense()))
    torch.manual_seed(0)  # PyHessian draws its probes from the global RNG
    samples = np.asarray(ph.trace(maxIter=300, tol=0.0))
    se = samples.std(ddof=1) / np.sqrt(len(samples))
    assert abs(samples.mean() - exact_trace) < 4 * se
    ours = landscape.trace(H, probes=300, seed=0)
    assert abs(ours.value - exact_trace) < 4 * ours.stderr

    torch.manual_seed(0)
    ph_top = ph.eigenvalues(maxIter=5000, tol=1e-12, top_n=1)[0][0]
    lz = landscape.top_eigenvalues(H, k=1, tol=1e-10)
    dense = torch.linalg.eigvalsh(H.dense())
    # power iteration finds the largest |λ|; here the top eigenvalue is the largest in magnitude
    assert dense[-1] > abs(dense[0])
    assert abs(lz.values[0] - dense[-1]) < 1e-9 * dense[-1]
    assert abs(ph_top - float(dense[-1])) < 1e-5 * float(dense[-1])
