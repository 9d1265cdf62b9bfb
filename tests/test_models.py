"""Contract tests over the MODELS registry, plus each model's defining formula."""

from __future__ import annotations

import textwrap

import pytest
import torch
from torch import nn

from landscape.errors import ConfigError
from landscape.models import MODELS, build_model, model_kwargs_for

# one line per registry member: (kwargs, input shape [N, ...], output shape)
EXAMPLES: dict[str, tuple[dict, tuple, tuple]] = {
    "mlp": ({"in_dim": 12, "out_dim": 3, "widths": [7, 5]}, (4, 12), (4, 3)),
    "cnn": (
        {"in_channels": 1, "image_size": 8, "num_classes": 10, "channels": [3, 4], "hidden": [6]},
        (4, 1, 8, 8),
        (4, 10),
    ),
    "resnet": ({"depth": 8, "width": 4, "in_channels": 3, "num_classes": 5}, (2, 3, 8, 8), (2, 5)),
    "resnet18": ({"num_classes": 4, "stem": "cifar"}, (2, 3, 8, 8), (2, 4)),
    "resnet34": ({"num_classes": 4}, (2, 3, 16, 16), (2, 4)),
    "two-layer": ({"in_dim": 6, "width": 9}, (5, 6), (5, 1)),
    "linear": ({"in_dim": 6, "out_dim": 2}, (5, 6), (5, 2)),
}


def test_every_model_has_an_example():
    assert set(EXAMPLES) == set(MODELS)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_forward_shape_and_gradients(name):
    kwargs, in_shape, out_shape = EXAMPLES[name]
    model = build_model(name, **kwargs).double()
    x = torch.randn(in_shape, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    out = model(x)
    assert out.shape == out_shape
    assert torch.isfinite(out).all()
    out.square().sum().backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), pname
    # some gradient is nonzero: the output depends on the parameters
    assert sum(p.grad.abs().sum() for p in model.parameters()) > 0


@pytest.mark.parametrize("name", sorted(MODELS))
def test_seeded_init_is_reproducible_and_leaves_global_rng_alone(name):
    kwargs = EXAMPLES[name][0]
    state = torch.get_rng_state()
    a = build_model(name, seed=3, **kwargs)
    b = build_model(name, seed=3, **kwargs)
    c = build_model(name, seed=4, **kwargs)
    assert torch.equal(torch.get_rng_state(), state)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert any(not torch.equal(sa[k], sc[k]) for k in sa if sa[k].is_floating_point())


def test_seed_none_follows_torch_manual_seed():
    torch.manual_seed(11)
    a = build_model("mlp", seed=None, in_dim=4, out_dim=2)
    torch.manual_seed(11)
    b = build_model("mlp", seed=None, in_dim=4, out_dim=2)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


def test_two_layer_is_the_slides_formula():
    """f(x) = sum_j a_j relu(w_j^T x + b_j) (implicit-bias lecture, two-layer nets with bias)."""
    torch.manual_seed(0)
    model = build_model("two-layer", in_dim=3, width=5, bias=True).double()
    W, b = model.hidden.weight, model.hidden.bias
    a = model.output.weight[0]
    x = torch.randn(7, 3, dtype=torch.float64)
    by_hand = torch.stack([sum(a[j] * torch.relu(W[j] @ xi + b[j]) for j in range(5)) for xi in x])
    torch.testing.assert_close(model(x)[:, 0], by_hand, rtol=1e-12, atol=1e-12)
    no_bias = build_model("two-layer", in_dim=3, width=5, bias=False)
    assert [n for n, _ in no_bias.named_parameters()] == ["hidden.weight", "output.weight"]


def test_linear_model_formula_and_flattening():
    model = build_model("linear", in_dim=6, out_dim=2).double()
    x = torch.randn(4, 1, 2, 3, dtype=torch.float64)
    expected = x.reshape(4, 6) @ model.linear.weight.T + model.linear.bias
    torch.testing.assert_close(model(x), expected, rtol=1e-12, atol=1e-12)


def test_mlp_flattens_images_and_uses_the_activation():
    model = build_model("mlp", in_dim=64, out_dim=10, widths=[8], activation="tanh")
    x = torch.rand(3, 1, 8, 8)
    assert torch.equal(model(x), model(x.reshape(3, 64)))
    assert any(isinstance(m, nn.Tanh) for m in model.modules())
    assert sum(p.numel() for p in model.parameters()) == 64 * 8 + 8 + 8 * 10 + 10
    no_bias = build_model("mlp", in_dim=4, out_dim=2, widths=[3], bias=False)
    assert all(not n.endswith("bias") for n, _ in no_bias.named_parameters())


def test_cnn_batchnorm_variant_has_running_statistics():
    plain = build_model("cnn", in_channels=1, image_size=8, num_classes=10)
    bn = build_model("cnn", in_channels=1, image_size=8, num_classes=10, batchnorm=True)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in plain.modules())
    norms = [m for m in bn.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(norms) == 2
    bn.train()(torch.rand(16, 1, 8, 8) + 1.0)
    assert norms[0].num_batches_tracked.item() == 1
    assert norms[0].running_mean.abs().sum() > 0


@pytest.mark.parametrize("depth", [8, 14, 20])
def test_resnet_depth_counts_weighted_layers(depth):
    model = build_model("resnet", depth=depth, width=4, num_classes=10)
    convs = sum(isinstance(m, nn.Conv2d) for m in model.modules())
    linears = sum(isinstance(m, nn.Linear) for m in model.modules())
    assert convs + linears == depth  # 1 + 3 stages * n blocks * 2 convs + fc = 6n + 2
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) == depth - 1
    assert model(torch.rand(2, 3, 32, 32)).shape == (2, 10)


def test_bad_names_and_options_raise_config_errors():
    with pytest.raises(ConfigError) as e:
        build_model("vgg")
    assert all(name in str(e.value) for name in MODELS)
    with pytest.raises(ConfigError, match="no option 'depth'"):
        build_model("mlp", in_dim=3, out_dim=2, depth=3)
    with pytest.raises(ConfigError, match="needs option in_dim"):
        build_model("mlp", out_dim=2)
    with pytest.raises(ConfigError, match="6n\\+2"):
        build_model("resnet", depth=10)
    with pytest.raises(ConfigError, match="activation"):
        build_model("mlp", in_dim=3, out_dim=2, activation="swish")
    with pytest.raises(ConfigError, match="too small"):
        build_model("cnn", image_size=2, channels=[2, 2])


def test_model_kwargs_for_fills_shapes_from_the_data():
    from landscape.data import load_dataset

    flat = load_dataset("digits")
    image = load_dataset("digits", image=True)
    assert model_kwargs_for("mlp", flat) == {"in_dim": 64, "out_dim": 10}
    assert model_kwargs_for("mlp", flat, out_dim=3) == {"in_dim": 64, "out_dim": 3}
    kw = model_kwargs_for("cnn", image, batchnorm=True)
    assert kw == {"in_channels": 1, "image_size": 8, "num_classes": 10, "batchnorm": True}
    x = image.train[0][:5]
    assert build_model("cnn", **kw)(x).shape == (5, 10)


def test_factory_spec_builds_a_user_model(tmp_path):
    f = tmp_path / "nets.py"
    f.write_text(
        textwrap.dedent("""
        from torch import nn
        def tiny(width=3):
            return nn.Sequential(nn.Linear(2, width), nn.Tanh(), nn.Linear(width, 1))
        def not_a_model():
            return 5
    """)
    )
    model = build_model(f"{f}:tiny", width=4)
    assert model(torch.zeros(3, 2)).shape == (3, 1)
    assert model[0].weight.shape == (4, 2)
    with pytest.raises(ConfigError, match="not a torch.nn.Module"):
        build_model(f"{f}:not_a_model")


def test_resnet18_has_torchvision_layout():
    """Parameter count and names of ``torchvision.models.resnet18(num_classes=10)``."""
    net = build_model("resnet18")
    assert sum(p.numel() for p in net.parameters()) == 11_181_642
    names = set(net.state_dict())
    for key in ("conv1.weight", "bn1.running_var", "layer1.0.conv2.weight",
                "layer2.0.downsample.0.weight",
                "layer2.0.downsample.1.running_mean", "layer4.1.bn2.bias", "fc.weight", "fc.bias"):
        assert key in names
    assert len([n for n, _ in net.named_parameters()]) == 62
