"""Loss conventions. Every loss here returns the SUM over the samples of a batch, so that a
mean over all n samples is exact whatever the batch sizes (the last batch may be smaller).

- ``cross-entropy``: ``l_i = −log softmax(f_i)[y_i]``.
- ``mse``: ``l_i = ½ ‖f_i − y_i‖²`` (the lecture slides' ``1/(2n) Σ e_i²``; with it H = G at an
  interpolating minimum, docs/algorithms.md §1 "Loss conventions"). Note PyTorch's ``MSELoss`` has
  no ½
  and also averages over output dimensions.
- a callable ``loss(outputs, targets)`` returning the MEAN over the batch (like
``nn.CrossEntropyLoss()``);
  it is multiplied by the batch size.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .errors import ConfigError

LOSS_NAMES = ("cross-entropy", "mse")


@dataclass(frozen=True)
class Loss:
    name: str
    fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

    def sum(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Σ_i l_i over the batch."""
        return self.fn(outputs, targets)

    def check(self, outputs: torch.Tensor, targets: torch.Tensor) -> None:
        """One clear error when targets do not fit this loss."""
        if self.name == "cross-entropy":
            if targets.is_floating_point() and targets.shape != outputs.shape:
                raise ConfigError(
                    "cross-entropy needs integer class labels (or class probabilities of the "
                    f"output's shape {tuple(outputs.shape)}), got float targets "
                    f"{tuple(targets.shape)}",
                    "use --loss mse for regression targets",
                )
            if outputs.dim() != 2 or outputs.shape[1] < 2:
                raise ConfigError(
                    "cross-entropy needs [batch, classes] logits, the model gives "
                    f"{tuple(outputs.shape)}",
                    "use --loss mse for a scalar-output model",
                )
        elif self.name == "mse":
            if not targets.is_floating_point():
                raise ConfigError(
                    "mse needs float targets of the output's shape, got integer class labels",
                    "use --loss cross-entropy for class labels",
                )
            if targets.numel() != outputs.numel():
                raise ConfigError(
                    f"mse targets {tuple(targets.shape)} do not match outputs "
                    f"{tuple(outputs.shape)}",
                    "the model's output size must equal the target dimension",
                )


def rounding_floor(loss: Loss, outputs: torch.Tensor, targets: torch.Tensor,
                   eps: float) -> torch.Tensor:
    """``Σ_i`` over the batch of the smallest per-sample loss the arithmetic resolves at these
    outputs, with ``eps`` the dtype's machine epsilon: below it a per-sample loss (and so its
    gradient, Σ, β and μ) is rounding noise.

    - mse ``½‖f − y‖²``: the residual is known to ``16 eps (‖f‖ + ‖y‖)``, so ``½ (16 eps
    (‖f‖+‖y‖))²``;
    - cross-entropy ``logsumexp(f) − f_y``: the difference of terms of size ``max|f|`` is known to
      ``16 eps max|f|``;
    - other losses: ``16 eps |l_i|`` per sample (their own rounding)."""
    k = 16 * eps
    f = outputs.detach().double().reshape(outputs.shape[0], -1)
    if loss.name == "mse":
        t = targets.detach().double().reshape(f.shape)
        return 0.5 * (k * (f.norm(dim=1) + t.norm(dim=1))).square().sum()
    if loss.name == "cross-entropy":
        return k * f.abs().amax(dim=1).sum()
    return k * loss.sum(outputs.detach(), targets).double().abs()


def _cross_entropy(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(out, y, reduction="sum")


def _mse(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return 0.5 * (out - y.reshape(out.shape)).pow(2).sum()


def get_loss(loss: str | Callable | Loss) -> Loss:
    """``"cross-entropy"``, ``"mse"``, a :class:`Loss`, or a mean-reduced callable."""
    if isinstance(loss, Loss):
        return loss
    if isinstance(loss, str):
        key = loss.lower().replace("_", "-")
        if key in ("cross-entropy", "ce", "crossentropy"):
            return Loss("cross-entropy", _cross_entropy)
        if key == "mse":
            return Loss("mse", _mse)
        raise ConfigError(f"unknown loss {loss!r}", f"choose one of {', '.join(LOSS_NAMES)}")
    if callable(loss):
        user = loss
        return Loss(getattr(loss, "__name__", "custom"), lambda o, y: user(o, y) * o.shape[0])
    raise ConfigError(f"loss must be a name or a callable, got {type(loss).__name__}")
