"""Loss conventions. Every loss here returns the SUM over the samples of a batch, so that a
mean over all n samples is exact whatever the batch sizes (the last batch may be smaller).

- ``cross-entropy``: ``l_i = −log softmax(f_i)[y_i]``.
- ``mse``: ``l_i = ½ ‖f_i − y_i‖²`` (the lecture slides' ``1/(2n) Σ e_i²``; with it H = G at an
  interpolating minimum, docs/algorithms.md §1 "Loss conventions"). Note PyTorch's ``MSELoss`` has
  no ½ and also averages over output dimensions.
- ``causal-lm``: next-token cross-entropy over ``[B, T, V]`` logits: the logits at ``t`` predict
  the label at ``t+1``, labels −100 are ignored (HF's convention). ``token-ce``: the same without
  the shift (masked LMs, token classification). A sample is a sequence, and its loss is
  ``l_i = (n/N) Σ_t ℓ_it`` with ``N`` the counted tokens of all ``n`` sequences, so that
  ``(1/n) Σ_i l_i = (1/N) Σ_{i,t} ℓ_it``: the per-token mean over the whole data set, weighted
  exactly across uneven batches and padding (docs/algorithms.md §1 "Sequences"). ``scale = n/N``
  is set by the problem, which counts the tokens.
- a callable ``loss(outputs, targets)`` returning the MEAN over the batch (like
  ``nn.CrossEntropyLoss()``); it is multiplied by the batch size. On the command line,
  ``--loss FILE.py:FUNCTION`` names one. ``targets`` are the batch's targets: for a dict batch
  its ``labels`` (or its ``input_ids`` with −100 where ``attention_mask`` is 0); the model's
  other inputs never reach the loss. A sample's weight is ``1/n`` (a per-token mean over the whole
  data set is ``causal-lm`` or ``token-ce``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .data.batch import IGNORE
from .errors import ConfigError

LOSS_NAMES = ("cross-entropy", "mse", "causal-lm", "token-ce")
#: losses summed over the tokens of each sequence, normalised by the counted tokens
TOKEN_LOSSES = ("causal-lm", "token-ce")
ALIASES = {"ce": "cross-entropy", "crossentropy": "cross-entropy", "squared": "mse",
           "squared-error": "mse", "clm": "causal-lm", "lm": "causal-lm"}


def is_user_loss(name: str) -> bool:
    """Whether ``name`` names a user's loss, ``FILE.py:FUNCTION`` or ``module:FUNCTION``."""
    return ":" in str(name)


def canonical(name: str) -> str:
    """The loss's name from itself or an alias (``ce``, ``cross_entropy``, ``squared``, ...); a
    user loss ``FILE.py:FUNCTION`` as it is."""
    if is_user_loss(name):
        return str(name).strip()
    key = str(name).strip().lower().replace("_", "-")
    key = ALIASES.get(key, key)
    if key not in LOSS_NAMES:
        raise ConfigError(f"unknown loss {name!r}", f"choose one of {', '.join(LOSS_NAMES)}")
    return key


@dataclass(frozen=True)
class Loss:
    """A loss as a batch SUM ``Σ_i l_i``; ``scale`` multiplies it (``n/N`` for the token losses,
    set by :class:`~landscape.problem.Problem`)."""

    name: str
    fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    scale: float = 1.0

    def named(self, name: str) -> Loss:
        """The same loss under another name (a user loss under its ``FILE.py:FUNCTION``)."""
        return Loss(name, self.fn, self.scale)

    @property
    def per_token(self) -> bool:
        return self.name in TOKEN_LOSSES

    def sum(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Σ_i l_i over the batch."""
        value = self.fn(outputs, targets)
        return value if self.scale == 1.0 else value * self.scale

    def token_targets(self, targets: torch.Tensor) -> torch.Tensor:
        """The labels that the token losses count, aligned with the logits they are scored
        against (``causal-lm``: ``labels[:, 1:]`` against ``logits[:, :-1]``)."""
        return targets[:, 1:] if self.name == "causal-lm" else targets

    def counted(self, targets: torch.Tensor) -> torch.Tensor:
        """Tokens (token losses) or samples (the others) that a batch's loss counts."""
        if self.per_token:
            return (self.token_targets(targets) != IGNORE).sum()
        return torch.tensor(targets.shape[0])

    def correct(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor | None:
        """Correct argmax predictions among the counted samples or tokens (cross-entropy with
        class labels and the token losses; None for the others)."""
        if self.per_token:
            y = self.token_targets(targets)
            f = outputs[:, :-1] if self.name == "causal-lm" else outputs
            return ((f.argmax(-1) == y) & (y != IGNORE)).sum()
        if self.name == "cross-entropy" and not targets.is_floating_point():
            return (outputs.argmax(-1) == targets).sum()
        return None

    def check(self, outputs: torch.Tensor, targets: torch.Tensor) -> None:
        """One clear error when targets do not fit this loss."""
        if self.per_token:
            _check_tokens(self.name, outputs, targets)
        elif self.name == "cross-entropy":
            if targets.is_floating_point() and targets.shape != outputs.shape:
                raise ConfigError(
                    "cross-entropy needs integer class labels (or class probabilities of the "
                    f"output's shape {tuple(outputs.shape)}), got float targets "
                    f"{tuple(targets.shape)}",
                    "use --loss mse for regression targets",
                )
            if outputs.dim() != 2 or outputs.shape[1] < 2:
                hint = ("use --loss causal-lm (next-token) or token-ce for sequence logits"
                        if outputs.dim() == 3 else "use --loss mse for a scalar-output model")
                raise ConfigError(
                    "cross-entropy needs [batch, classes] logits, the model gives "
                    f"{tuple(outputs.shape)}", hint)
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


def _check_tokens(name: str, outputs: torch.Tensor, targets: torch.Tensor) -> None:
    """Token logits ``[B, T, V]`` and integer labels ``[B, T]`` within the vocabulary."""
    if outputs.dim() != 3:
        raise ConfigError(f"{name} needs [batch, length, vocabulary] logits, the model gives "
                          f"{tuple(outputs.shape)}",
                          "use --loss cross-entropy for [batch, classes] logits")
    if targets.is_floating_point() or tuple(targets.shape) != tuple(outputs.shape[:2]):
        raise ConfigError(
            f"{name} needs integer labels [batch, length] = {tuple(outputs.shape[:2])}, got "
            f"{str(targets.dtype).replace('torch.', '')} labels {tuple(targets.shape)}",
            "give 'labels' of the input_ids' shape (−100 where no token is scored)")
    vocab = outputs.shape[-1]
    bad = (targets != IGNORE) & ((targets < 0) | (targets >= vocab))
    if bool(bad.any()):
        raise ConfigError(
            f"labels hold token {int(targets[bad][0])}, outside the model's vocabulary of "
            f"{vocab}", "check that the tokenizer and the model's vocabulary size agree")


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


def _token_ce(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``Σ_{i,t} −log softmax(f_it)[y_it]`` over the labels that are not −100."""
    return F.cross_entropy(out.reshape(-1, out.shape[-1]), y.reshape(-1), ignore_index=IGNORE,
                           reduction="sum")


def _causal_lm(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Next-token cross-entropy: logits at ``t`` against the label at ``t+1``."""
    return _token_ce(out[:, :-1], y[:, 1:])


_BUILTIN = {"cross-entropy": _cross_entropy, "mse": _mse, "causal-lm": _causal_lm,
            "token-ce": _token_ce}


def get_loss(loss: str | Callable | Loss) -> Loss:
    """A loss of :data:`LOSS_NAMES` (or an alias), a :class:`Loss`, or a mean-reduced callable."""
    if isinstance(loss, Loss):
        return loss
    if isinstance(loss, str):
        name = canonical(loss)
        if not is_user_loss(name):
            return Loss(name, _BUILTIN[name])
        from .factory import load_factory

        return get_loss(load_factory(name)).named(name)
    if callable(loss):
        user = loss
        return Loss(getattr(loss, "__name__", "custom"), lambda o, y: user(o, y) * o.shape[0])
    raise ConfigError(f"loss must be a name or a callable, got {type(loss).__name__}")
