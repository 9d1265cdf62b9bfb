"""The same numbers on every device. Each command and product runs on the device given to pytest
(``--device``, default cpu) in float64 and must equal the CPU's float64 result: probes, subsets
and data order are drawn by seeded CPU generators, so only rounding may differ (to 1e-8
relative; a GPU reduces in another order). On a GPU::

    python -m pytest tests/test_device.py --device cuda

On the CPU the comparisons are exact and the suite checks the device plumbing (every command's
``--device``) and the exact references (dense Hessian, a streamed loader)."""

from __future__ import annotations

import json

import pytest
import torch

import landscape
from landscape.data import load_dataset
from landscape.io.checkpoint import make_checkpoint
from landscape.models import build_model, model_kwargs_for
from tests.cli import run

RTOL = 1e-8


@pytest.fixture(scope="module")
def device(request) -> str:
    name = request.config.getoption("--device")
    if name.startswith("cuda") and not torch.cuda.is_available():
        pytest.skip("--device cuda: no CUDA device here")
    return name


@pytest.fixture(scope="module")
def bn_ckpt(tmp_path_factory):
    """A small BatchNorm CNN on 8x8 digits, trained a few SGD steps (so not at initialisation)."""
    data_kwargs = {"n_train": 120, "test_fraction": 0.25, "image": True}
    split = load_dataset("digits", **data_kwargs)
    kw = model_kwargs_for("cnn", split, channels=[4, 6], hidden=[16], kernel_size=3,
                         batchnorm=True)
    model = build_model("cnn", seed=0, **kw)
    x, y = split.train
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(30):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    model.eval()
    path = tmp_path_factory.mktemp("device") / "cnn.pt"
    make_checkpoint("cnn", kw, "digits", data_kwargs, "cross-entropy", model,
                    {"optimizer": "sgd", "lr": 0.1, "batch_size": 16}, split=split).save(path)
    return path


def close(a, b, rtol: float = RTOL) -> bool:
    """Every number of two JSON values agrees to ``rtol`` (relative to the larger magnitude)."""
    if isinstance(a, dict):
        return all(close(a[k], b[k], rtol) for k in a if "second" not in k)  # timings differ
    if isinstance(a, list):
        return len(a) == len(b) and all(close(x, y, rtol) for x, y in zip(a, b))
    if isinstance(a, float) and isinstance(b, float):
        return abs(a - b) <= rtol * max(abs(a), abs(b), 1e-12)
    return True  # strings, flags and counts describe the run (the device among them)


def on_both(device: str, *args) -> tuple[dict, dict]:
    """``landscape ARGS --json`` on the CPU and on ``device``, both in float64."""
    out = []
    for d in ("cpu", device):
        r = run(*args, "--device", d, "--json")
        assert r.exit_code == 0, r.output
        out.append(json.loads(r.stdout))
    return out[0], out[1]


def test_hessian_products_equal_the_dense_hessian(bn_ckpt, device):
    problem = landscape.load(bn_ckpt).problem(device=device, dtype="float64", batch_size=32)
    dense = landscape.Hessian(landscape.load(bn_ckpt).problem(dtype="float64")).dense()
    V = torch.randn(problem.p, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    got = landscape.Hessian(problem).matmat(V.to(device)).cpu()
    assert torch.allclose(got, dense @ V, rtol=0, atol=1e-10 * float(dense.abs().max()))


def test_sharpness_metrics_equal_the_cpus(bn_ckpt, device):
    cpu, dev = on_both(device, "sharpness", bn_ckpt, "--dtype", "float64", "--metric",
                       "trace,eig,frobenius,density,grad-curvature", "--probes", "6", "--runs",
                       "2", "--steps", "8", "--top-k", "2", "--tol", "1e-10", "--product-batch",
                       "32")  # converged far below 1e-8: the step counts may differ by device
    assert close(cpu["metrics"], dev["metrics"])
    assert close(cpu["loss_value"], dev["loss_value"])


def test_report_commands_equal_the_cpus(bn_ckpt, device):
    for args in (("fisher", "--probes", "4", "--mc-samples", "2"), ("noise",),
                 ("stability", "--probes", "4")):  # Lanczos converged, as in the test above
        cpu, dev = on_both(device, args[0], bn_ckpt, "--dtype", "float64", "--tol", "1e-10",
                           *args[1:])
        assert close(cpu, dev), args[0]


def test_slice_and_interpolation_equal_the_cpus(bn_ckpt, device, tmp_path):
    cpu, dev = on_both(device, "slice", bn_ckpt, "--dtype", "float64", "--points", "7")
    assert close(cpu["values"], dev["values"]) and close(cpu["origin"], dev["origin"])
    cpu, dev = on_both(device, "interpolate", bn_ckpt, bn_ckpt, "--dtype", "float64",
                       "--points", "5")
    assert close(cpu["values"], dev["values"])


def test_training_equals_the_cpus(device, tmp_path):
    for optimizer in ("sgd", "sam"):
        runs = []
        for d in ("cpu", device):
            r = run("train", "--model", "mlp", "--model-arg", "widths=[16]", "--data-arg",
                    "n_train=128", "--optimizer", optimizer, "--lr", "0.1", "--batch-size", "32",
                    "--steps", "12", "--track", "trace", "--every", "6", "--probes", "4",
                    "--dtype", "float64", "--device", d, "--no-plot", "--out",
                    tmp_path / f"{optimizer}-{d}", "--json")
            assert r.exit_code == 0, r.output
            runs.append(json.loads(r.stdout)["final"])
        assert close(runs[0], runs[1]), optimizer


def test_escape_starts_from_the_same_point_on_the_device(device):
    cpu, dev = on_both(device, "escape", "--model-arg", "widths=[8]", "--data-arg", "n_train=64",
                       "--dtype", "float64", "--steps", "5", "-T", "4", "--max-gd-steps", "200",
                       "--probes", "4", "--to", "sgd,gd")
    assert close(cpu["start"], dev["start"], 1e-6)  # GD's 200 steps accumulate the rounding
    assert close(cpu["runs"]["gd"], dev["runs"]["gd"], 1e-6)
    assert all(r["trajectories"] == 4 for r in dev["runs"].values())
