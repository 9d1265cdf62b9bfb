"""Model inputs of one batch: a tensor ``[B, ...]`` or a dict of them (the keyword arguments of an
HF model: ``input_ids``, ``attention_mask``, ...), and the few operations the data path needs on
either: the sample count, rows, joining, moving, comparing, and calling a model.

Sequences of different lengths are joined by right-padding to the longest: targets and
``labels`` with −100 (ignored by the token losses, HF's convention), ``attention_mask`` and every
other key with 0. Right padding changes no earlier position of a causal model, and a padded
position is masked out of every loss, so the numbers do not depend on how batches are cut."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

Inputs = Tensor | dict[str, Tensor]

#: the label that the token losses ignore (HF's ``ignore_index``)
IGNORE = -100
_PAD = {"labels": IGNORE}


def size(x: Inputs) -> int:
    """Samples in a batch (the first dimension)."""
    return int(next(iter(x.values())).shape[0] if isinstance(x, dict) else x.shape[0])


def apply(x: Inputs, fn: Callable[[Tensor], Tensor]) -> Inputs:
    """``fn`` on the tensor, or on every tensor of the dict."""
    return {k: fn(v) for k, v in x.items()} if isinstance(x, dict) else fn(x)


def rows(x: Inputs, index: slice | Tensor) -> Inputs:
    """The samples ``index`` (a slice or positions)."""
    return apply(x, lambda t: t[index])


def tensors(x: Inputs) -> list[Tensor]:
    return list(x.values()) if isinstance(x, dict) else [x]


def nbytes(*parts: Inputs) -> int:
    return sum(t.numel() * t.element_size() for p in parts for t in tensors(p))


def equal(a: Inputs, b: Inputs) -> bool:
    ta, tb = tensors(a), tensors(b)
    if isinstance(a, dict) != isinstance(b, dict) or (isinstance(a, dict) and a.keys() != b.keys()):
        return False
    return all(u.shape == v.shape and torch.equal(u, v) for u, v in zip(ta, tb))


def _pad_to(t: Tensor, length: int, value: int) -> Tensor:
    if t.dim() < 2 or t.shape[1] == length:
        return t
    return F.pad(t, (0, 0) * (t.dim() - 2) + (0, length - t.shape[1]), value=value)


def _cat(ts: list[Tensor], value: int) -> Tensor:
    if len(ts) == 1:
        return ts[0]
    if ts[0].dim() >= 2 and any(t.shape[1] != ts[0].shape[1] for t in ts):
        if ts[0].is_floating_point():
            raise ValueError(f"cannot join float batches of lengths "
                             f"{sorted({t.shape[1] for t in ts})}")
        length = max(t.shape[1] for t in ts)
        ts = [_pad_to(t, length, value) for t in ts]
    return torch.cat(ts)


def cat(parts: list[Inputs], pad: int = 0) -> Inputs:
    """Batches joined along the samples; integer sequences of different lengths right-padded (a
    dict's ``labels`` with −100, its other keys with 0; a tensor with ``pad``)."""
    if isinstance(parts[0], dict):
        return {k: _cat([p[k] for p in parts], _PAD.get(k, 0)) for k in parts[0]}
    return _cat(list(parts), pad)


def cat_targets(parts: list[Tensor]) -> Tensor:
    """Target batches joined; token labels of different lengths padded with −100."""
    return _cat(list(parts), IGNORE)


def one(x: Inputs) -> Inputs:
    """One sample (under ``vmap``, without its batch dimension) as a batch of one."""
    return apply(x, lambda t: t.unsqueeze(0))


def logits(out: Any) -> Tensor:
    """The output tensor of a model: a tensor, the first element of a tuple, or ``.logits`` of an
    HF ``ModelOutput``."""
    if isinstance(out, Tensor):
        return out
    got = getattr(out, "logits", None)
    if isinstance(got, Tensor):
        return got
    if isinstance(out, Mapping) and isinstance(out.get("logits"), Tensor):
        return out["logits"]
    if isinstance(out, (tuple, list)) and out and isinstance(out[0], Tensor):
        return out[0]
    raise TypeError(f"the model returned {type(out).__name__}, not a tensor, a tuple or an "
                    "object with .logits")


def call(model: Callable, x: Inputs) -> Tensor:
    """``model(x)``, or ``model(**x)`` for a dict of keyword inputs; its output tensor."""
    return logits(model(**x) if isinstance(x, dict) else model(x))
