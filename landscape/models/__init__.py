"""Built-in models and their registry.

``MODELS`` maps a name to a constructor taking keyword arguments only; ``build_model(name,
seed=0, **kwargs)`` builds one with a reproducible initialisation and never touches the global
RNG state. A name of the form ``path/to/file.py:function`` or ``package.module:function`` calls
that user factory instead (see ``landscape.factory.load_factory``).

==============  ==============================================================================
``mlp``         in_dim, out_dim, widths=(128, 128), activation=relu|tanh|gelu|sigmoid, bias=True
``cnn``         in_channels=1, image_size=28, num_classes=10, channels=(6, 16), hidden=(120, 84),
                kernel_size=5, batchnorm=False, activation=relu
``resnet``      depth=20 (6n+2), width=16, in_channels=3, num_classes=10 (BatchNorm)
``resnet18``    torchvision's ResNet-18 layout: num_classes=10, in_channels=3, stem=imagenet|cifar
``resnet34``    torchvision's ResNet-34 layout, same options
``two-layer``   in_dim, width=64, out_dim=1, bias=True, activation=relu:
                f(x) = sum_j a_j relu(w_j^T x + b_j)
``linear``      in_dim, out_dim=1, bias=True
==============  ==============================================================================

Image models take ``[N, C, H, W]``; ``mlp``, ``two-layer`` and ``linear`` flatten ``[N, ...]``."""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from landscape.errors import ConfigError
from landscape.factory import call_with_options, load_factory
from landscape.models.conv import CNN, BasicBlock, ResNet
from landscape.models.dense import ACTIVATIONS, MLP, Linear, TwoLayer, make_activation
from landscape.models.resnet import resnet18, resnet34

if TYPE_CHECKING:
    from landscape.data import Split

__all__ = [
    "ACTIVATIONS",
    "CNN",
    "MLP",
    "MODELS",
    "BasicBlock",
    "Linear",
    "ResNet",
    "TwoLayer",
    "build_model",
    "make_activation",
    "model_kwargs_for",
    "seeded",
]

MODELS: dict[str, Callable[..., nn.Module]] = {
    "mlp": MLP,
    "cnn": CNN,
    "resnet": ResNet,
    "resnet18": resnet18,
    "resnet34": resnet34,
    "two-layer": TwoLayer,
    "linear": Linear,
}


@contextmanager
def seeded(seed: int | None) -> Iterator[None]:
    """Run the block with the CPU default generator seeded by ``seed``, then restore its state.

    Module constructors draw their initial weights from the global CPU generator; forking it
    keeps library code from changing the caller's RNG state. ``seed=None`` leaves the global
    generator alone (and lets the constructor consume it, as plain PyTorch would).
    """
    if seed is None:
        yield
        return
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(int(seed))
        yield


def build_model(name: str, *, seed: int | None = 0, **kwargs: Any) -> nn.Module:
    """Build registry model ``name`` (or a ``FILE.py:FUNCTION`` factory, or ``hf:DIR``, a local
    Hugging Face directory with its own weights) with ``kwargs``.

    The initial weights depend only on ``seed`` (default 0): they are drawn under
    ``seeded(seed)``, so two calls with equal arguments give bitwise equal models.

    >>> build_model("linear", in_dim=3, out_dim=2)(torch.zeros(4, 3)).shape
    torch.Size([4, 2])
    """
    if name.startswith("hf:"):  # a local Hugging Face directory, with its weights
        from .hf import load_pretrained

        return load_pretrained(name[3:])
    if name in MODELS:
        fn = MODELS[name]
    elif ":" in name:
        fn = load_factory(name)
    else:
        raise ConfigError(
            f"unknown model {name!r}",
            f"choose one of {', '.join(MODELS)}, or give FILE.py:FUNCTION",
        )
    with seeded(seed):
        model = call_with_options(fn, "model", name, kwargs)
    if not isinstance(model, nn.Module):
        raise ConfigError(
            f"model factory {name!r} returned {type(model).__name__}, not a torch.nn.Module",
            "make the factory return the network",
        )
    return model


def model_kwargs_for(name: str, split: Split, **kwargs: Any) -> dict:
    """``kwargs`` completed with the shape options of model ``name`` that ``split`` determines.

    Fills ``in_dim`` (product of the input shape), ``out_dim`` / ``num_classes`` (the number
    of classes, or the target width for regression), ``in_channels`` and ``image_size`` (for
    ``[C, H, W]`` inputs) where the model takes them and they were not given. The result is
    what a checkpoint records, so the model can be rebuilt without the data.
    """
    out = dict(kwargs)
    if name not in MODELS:
        return out
    params = inspect.signature(MODELS[name]).parameters
    shape = tuple(int(s) for s in split.input_shape)
    guesses: dict[str, Any] = {
        "in_dim": math.prod(shape),
        "out_dim": split.output_dim,
        "num_classes": split.output_dim,
    }
    if len(shape) == 3:
        guesses["in_channels"] = shape[0]
        guesses["image_size"] = shape[1] if shape[1] == shape[2] else [shape[1], shape[2]]
    for key, value in guesses.items():
        if key in params and key not in out:
            out[key] = value
    return out
