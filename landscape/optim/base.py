"""The plain base steps: ``gd`` (full batch) and ``sgd`` (minibatch).

Both hand the closure's gradient unchanged to the base optimizer: one forward/backward pass per
step. They differ only in what the closure evaluates: ``gd`` expects the loss of the whole training
set (docs/algorithms.md §3), ``sgd`` that of a minibatch. They exist as wrappers so that every
optimizer of the registry shares one interface (closure conventions, ``state_dict``, NaN detection,
``passes_per_step``)."""

from __future__ import annotations

from .wrapper import SharpnessAware


class SGD(SharpnessAware):
    """Minibatch step ``θ ← base_step(θ, ∇L_B(θ))`` (base: SGD with momentum, or Adam).

    >>> import torch
    >>> w = torch.nn.Parameter(torch.tensor([2.0]))
    >>> opt = SGD([w], lr=0.25, momentum=0.0)
    >>> _ = opt.step(lambda: (w ** 2).sum())   # loss closure: θ − 0.25 · 2θ
    >>> w.data
    tensor([1.])
    """

    name = "sgd"
    passes_per_step = 1


class GD(SGD):
    """Full-batch gradient step: the closure must return the loss of the WHOLE training set (the
    stability analyses of docs/algorithms.md §2, λ_max ≈ 2/η, are about this method)."""

    name = "gd"
