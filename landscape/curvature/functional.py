"""The only autodiff code in landscape (torch.func).

Every function takes the model in functional form, ``forward(params, x) -> outputs``, a
:class:`~landscape.losses.Loss` (batch SUM of per-sample losses) and a parameter dict, and works on
one batch ``(x, y)``. Blocks of k vectors are dicts ``name -> [k, *shape]`` and are pushed through
``torch.func.vmap`` in one call, which is what makes block products cheap.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.func import grad, grad_and_value, jvp, vjp, vmap

from ..data import batch as B
from ..losses import Loss

Params = dict[str, torch.Tensor]
Forward = Callable[[Params, torch.Tensor], torch.Tensor]


def batch_loss(forward: Forward, loss: Loss, params: Params, x: torch.Tensor,
               y: torch.Tensor) -> torch.Tensor:
    """``Σ_{i∈batch} l_i(θ)``."""
    return loss.sum(forward(params, x), y)


def loss_and_grad(
    forward: Forward, loss: Loss, params: Params, x: torch.Tensor, y: torch.Tensor
) -> tuple[torch.Tensor, Params]:
    """``(Σ_i l_i, Σ_i ∇l_i)`` over the batch, by one reverse pass."""
    g, value = grad_and_value(lambda p: batch_loss(forward, loss, p, x, y))(params)
    return value, g


def hvp(forward: Forward, loss: Loss, params: Params, x: torch.Tensor, y: torch.Tensor,
        V: Params) -> Params:
    """``Σ_{i∈batch} ∇²l_i · v`` for each of the k vectors in ``V`` (``name -> [k, *shape]``).

    Forward-over-reverse (Pearlmutter 1994): ``jvp(grad f, θ, v)``, vmapped over the block."""
    g = grad(lambda p: batch_loss(forward, loss, p, x, y))

    def one(v: Params) -> Params:
        return jvp(g, (params,), (v,))[1]

    return vmap(one)(V)


def ggn_vp(forward: Forward, loss: Loss, params: Params, x: torch.Tensor, y: torch.Tensor,
           V: Params) -> Params:
    """``Σ_i J_iᵀ (∂²l_i/∂f²) J_i v`` (generalised Gauss-Newton, Schraudolph 2002) for a block V.

    ``J v`` by a forward-mode product, the loss Hessian in output space by forward-over-reverse
    on the loss alone (cheap: k outputs), ``Jᵀ u`` by one reverse product."""
    out, pull = vjp(lambda p: forward(p, x), params)
    gl = grad(lambda o: loss.sum(o, y))

    def one(v: Params) -> Params:
        jv = jvp(lambda p: forward(p, x), (params,), (v,))[1]
        hjv = jvp(gl, (out.detach(),), (jv,))[1]
        return pull(hjv)[0]

    return vmap(one)(V)


def over_samples(fn: Callable, *batch):
    """``fn(sample…)`` for every sample of the batch, stacked: ``vmap`` over the first dimension
    of the ``batch`` tensors (or dicts of them), or one sample at a time for a model whose code
    branches on its data, which ``vmap`` cannot trace (HF's attention-mask shortcuts)."""
    try:
        return vmap(fn)(*batch)
    except RuntimeError as e:
        if "vmap" not in str(e) or "data-dependent" not in str(e):
            raise
    outs = [fn(*(B.rows(b, i) for b in batch)) for i in range(B.size(batch[0]))]
    if isinstance(outs[0], dict):
        return {k: torch.stack([o[k] for o in outs]) for k in outs[0]}
    return torch.stack(outs)


def per_sample_grads(forward: Forward, loss: Loss, params: Params, x: B.Inputs,
                     y: torch.Tensor) -> Params:
    """``∇l_i`` for every sample of the batch: ``name -> [B, *shape]`` (vmap over samples)."""

    def one(xi: B.Inputs, yi: torch.Tensor) -> Params:
        return grad(lambda p: batch_loss(forward, loss, p, B.one(xi), yi.unsqueeze(0)))(params)

    return over_samples(one, x, y)


def linear_sum_squared_grads(
    model: torch.nn.Module, forward: Forward, loss: Loss, params: Params, x: torch.Tensor,
    y: torch.Tensor
) -> Params | None:
    """``Σ_i (∇l_i)²`` (elementwise) over the batch without per-sample gradients, when every
    parameter in ``params`` is the weight or bias of an ``nn.Linear`` applied once, to ``[B, in]``
    inputs: with ``z_i = W a_i + b`` and ``δ_i = ∂l_i/∂z_i`` (one reverse pass of ``Σ_i l_i``),
    ``∇_W l_i = δ_i a_iᵀ``, so ``Σ_i (∇_W l_i)² = (δ²)ᵀ (a²)`` and ``Σ_i (∇_b l_i)² = Σ_i δ_i²``
    (BackPACK's ``SumGradSquared``, Dangel et al. 2020, "BackPACK: packing more into backprop",
    §2). ``None`` when the model is not of that form (the caller then uses
    :func:`per_sample_grads`)."""
    modules = dict(model.named_modules())
    owners = {}
    for name in params:
        path, _, attr = name.rpartition(".")
        module = modules.get(path)
        if not isinstance(module, torch.nn.Linear) or attr not in ("weight", "bias"):
            return None
        owners.setdefault(path, module)
    records: dict[str, list] = {path: [] for path in owners}
    hooks = [
        m.register_forward_hook(
            lambda mod, inp, out, path=path: records[path].append((inp[0], out))
        )
        for path, m in owners.items()
    ]
    try:
        with torch.enable_grad():
            live = {n: t.detach().requires_grad_() for n, t in params.items()}
            total = batch_loss(forward, loss, live, x, y)
    finally:
        for h in hooks:
            h.remove()
    if any(len(r) != 1 or r[0][0].dim() != 2 for r in records.values()):
        return None  # a layer applied twice, or to sequences: not one (a_i, δ_i) per sample
    paths = list(records)
    deltas = torch.autograd.grad(total, [records[p][0][1] for p in paths])
    out: Params = {}
    for path, delta in zip(paths, deltas):
        a2, d2 = records[path][0][0].detach().square(), delta.square()
        prefix = f"{path}." if path else ""
        out[prefix + "weight"] = d2.T @ a2
        out[prefix + "bias"] = d2.sum(0)
    return {n: out[n] for n in params}


class SavedBytes:
    """Counts the bytes of the tensors autograd saves for backward while :meth:`hooks` is active:
    the memory a graph holds, measured on the real activations rather than estimated.

    ``limit`` (bytes, optional) raises :class:`~landscape.memory.OutOfBudget` as soon as the count
    passes it, before the graph grows further: how a memory budget is honoured on devices that
    have no out-of-memory error of their own (a CPU process is killed instead)."""

    def __init__(self, limit: int | None = None, exclude: list[torch.Tensor] = ()) -> None:
        self.total = 0
        self.limit = limit
        # storages counted once each; those of ``exclude`` (parameters, the batch) never: a saved
        # weight or input is a view of memory held anyway, not memory the graph adds
        self._seen = {_storage(t) for t in exclude}

    def hooks(self):
        counter = [self]  # the pack hook holds the meter, never the graph's owner

        def pack(t: torch.Tensor) -> torch.Tensor:
            m = counter[0]
            key = _storage(t)
            if key not in m._seen:
                m._seen.add(key)
                m.total += t.untyped_storage().nbytes()
                if m.limit is not None and m.total > m.limit:
                    from ..memory import OutOfBudget

                    raise OutOfBudget(m.total, m.limit)
            return t

        return torch.autograd.graph.saved_tensors_hooks(pack, _unpack)


def _storage(t: torch.Tensor) -> tuple[int, str]:
    try:
        return t.untyped_storage().data_ptr(), str(t.device)
    except RuntimeError:  # a tensor without storage (e.g. a functorch wrapper)
        return id(t), "none"


def _unpack(t: torch.Tensor) -> torch.Tensor:
    return t


class GradientGraph:
    """The gradient ``g = Σ_{i∈batch} ∇l_i`` of one batch kept with its graph, so that Hessian
    products reuse it: ``H v = ∂(gᵀv)/∂θ`` by one reverse pass through the stored graph
    (double backward), vmapped over a block of vectors. ``nbytes`` is the memory the graph holds
    (the tensors autograd saved), measured while it was built."""

    def __init__(self, forward: Forward, loss: Loss, params: Params, x: torch.Tensor,
                 y: torch.Tensor,
                 meter: SavedBytes | None = None) -> None:
        self.leaves = {n: t.detach().requires_grad_(True) for n, t in params.items()}
        # The hooks must not reference ``self``: every saved tensor of the graph keeps them, and a
        # cycle through autograd's C++ nodes is one Python's collector cannot free (every graph
        # ever built would stay alive). They count into a meter of their own.
        meter = meter if meter is not None else SavedBytes()
        start = meter.total
        with torch.enable_grad(), meter.hooks():
            value = batch_loss(forward, loss, self.leaves, x, y)
            self.grad = torch.autograd.grad(value, list(self.leaves.values()), create_graph=True)
        self.nbytes = meter.total - start
        self.value = value.detach()

    def hvp(self, V: Params, last: bool = False) -> Params:
        """``Σ_{i∈batch} ∇²l_i · v`` for each of the k vectors of ``V`` (``name -> [k, *shape]``).

        ``last``: no product follows, so the reverse pass frees the graph as it goes (less
        memory, and about 1.7x faster than keeping it on a CPU: the freed buffers are reused)."""
        leaves = list(self.leaves.values())
        vs = [V[n] for n in self.leaves]
        k = vs[0].shape[0]
        if k == 1:
            out = torch.autograd.grad(self.grad, leaves, [v[0] for v in vs], retain_graph=not last,
                                      allow_unused=True)
            out = [
                o.unsqueeze(0) if o is not None else torch.zeros_like(v) for o, v in zip(out, vs)
            ]
        else:
            out = torch.autograd.grad(self.grad, leaves, vs, retain_graph=not last,
                                      is_grads_batched=True,
                                      allow_unused=True)
            out = [o if o is not None else torch.zeros_like(v) for o, v in zip(out, vs)]
        return dict(zip(self.leaves, out))


# -------------------------------------------------------- per-sample and output-space products
# (Fisher family, SGD noise, non-uniformity, alignment: docs/algorithms.md §1)


def loss_output_grad(loss: Loss, outputs: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``∂l_i/∂f_i`` for every sample (shape of ``outputs``): the gradient of the batch SUM with
    respect to the outputs, whose row i is sample i's own derivative."""
    return grad(lambda o: loss.sum(o, y))(outputs.detach())


def output_loss_hessians(loss: Loss, outputs: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``∂²l_i/∂f_i²`` for every sample: ``[B, k, k]`` with ``k`` the flattened output size
    (softmax cross-entropy: ``diag(π) − ππᵀ``; mse ½‖f−y‖²: ``I``)."""
    shape = outputs.shape[1:]

    def one(o: torch.Tensor, yi: torch.Tensor) -> torch.Tensor:
        return torch.func.hessian(lambda f: loss.sum(f.reshape(1, *shape),
                                                     yi.unsqueeze(0)))(o.reshape(-1))

    return vmap(one)(outputs.detach(), y)


def per_sample_vjp(forward: Forward, params: Params, x: torch.Tensor, C: torch.Tensor) -> Params:
    """``J_iᵀ c_{ir}`` for every sample i and each of its r cotangents ``C[i, r]`` (flattened
    outputs of size k): ``C: [B, r, k] -> name -> [B, r, *shape]``. With ``C[i] = I`` these are the
    rows of the output Jacobian ``J_i``; with ``C[i] = ∂l_i/∂f_i`` the per-sample gradient."""

    def one(xi: B.Inputs, ci: torch.Tensor) -> Params:
        out, pull = vjp(lambda p: forward(p, B.one(xi)), params)
        return vmap(lambda c: pull(c.reshape(out.shape))[0])(ci)

    return over_samples(one, x, C)


def per_sample_hvp_sq(forward: Forward, loss: Loss, params: Params, x: torch.Tensor,
                      y: torch.Tensor,
                      V: Params) -> Params:
    """``Σ_{i∈batch} H_i (H_i v)`` for each v of the block (``name -> [k, *shape]``): two
    per-sample Hessian-vector products per sample (the first term of the non-uniformity
    ``Σ_H = (1/n) Σ_i H_i² − H²``, Wu, Ma & E 2018). Memory grows as ``B · k · p``."""

    def one(xi: B.Inputs, yi: torch.Tensor) -> Params:
        g = grad(lambda p: batch_loss(forward, loss, p, B.one(xi), yi.unsqueeze(0)))

        def hv(v: Params) -> Params:
            return jvp(g, (params,), (v,))[1]

        return vmap(lambda v: hv(hv(v)))(V)

    return {n: t.sum(0) for n, t in over_samples(one, x, y).items()}


def jacobian_sandwich_vp(forward: Forward, params: Params, x: torch.Tensor, R: torch.Tensor,
                         V: Params) -> Params:
    """``Σ_i J_iᵀ R_i R_iᵀ J_i v`` for per-sample output-space factors ``R: [B, k, m]`` (k the
    flattened output size) and each v of the block. With ``R_i`` the output gradients at labels
    drawn from the model, this is the Monte-Carlo Fisher (Martens 2020; covariance-noise paper,
    App. F): ``g_is = J_iᵀ r_is`` so ``(1/m) Σ_s g_is g_isᵀ = J_iᵀ (R_i R_iᵀ) J_i`` with
    ``R_i = [r_i1 … r_im]/√m``."""
    out, pull = vjp(lambda p: forward(p, x), params)

    def one(v: Params) -> Params:
        jv = jvp(lambda p: forward(p, x), (params,), (v,))[1].reshape(R.shape[0], -1)
        u = torch.einsum("bkm,bk->bm", R, jv)
        return pull(torch.einsum("bkm,bm->bk", R, u).reshape(out.shape))[0]

    return vmap(one)(V)


# ----------------------------------------------------- per-sample losses of a parameter pytree
# (escape engine, landscape.escape: ``loss_i(params, idx) -> [m]`` with ``params`` a tensor or a
# dict)


def per_sample_losses(forward: Forward, loss: Loss, params: Params, x: torch.Tensor,
                      y: torch.Tensor) -> torch.Tensor:
    """``[l_i(θ) for i in batch]`` (not summed): ``mse`` ``½‖f_i − y_i‖²`` and ``cross-entropy``
    ``−log softmax(f_i)[y_i]`` directly from one forward pass; any other loss by vmapping its
    batch sum over one-sample batches."""
    from ..losses import get_loss

    if loss.fn is get_loss("mse").fn:
        out = forward(params, x)
        return 0.5 * (out - y.reshape(out.shape)).pow(2).reshape(out.shape[0], -1).sum(1)
    if loss.fn is get_loss("cross-entropy").fn:
        return torch.nn.functional.cross_entropy(forward(params, x), y, reduction="none")
    return over_samples(lambda xi, yi: batch_loss(forward, loss, params, B.one(xi),
                                                  yi.unsqueeze(0)), x, y)


def weighted_loss_grad(loss_i: Callable, params, idx: torch.Tensor, w: torch.Tensor):
    """``(∇_θ Σ_j w_j l_{idx_j}(θ), Σ_j l_{idx_j}(θ))`` by one reverse pass: the gradient of the
    weighted sum and, from the same forward pass, the plain sum of the losses. ``params`` is a
    tensor or a dict of tensors; the gradient has its structure."""

    def f(p):
        losses = loss_i(p, idx)
        return (w * losses).sum(), losses.sum()

    return grad(f, has_aux=True)(params)


def per_sample_param_grads(loss_i: Callable, params, idx: torch.Tensor):
    """``∇_θ l_i(θ)`` for each ``i`` of ``idx``: leading axis ``[m]`` on every leaf."""
    return vmap(grad(lambda p, i: loss_i(p, i.unsqueeze(0)).sum()), in_dims=(None, 0))(params, idx)


def loss_hvp(loss_i: Callable, params, idx: torch.Tensor, V):
    """``Σ_{j} ∇²l_{idx_j}(θ) v`` for each v of the block ``V`` (leading axis ``[k]``, same
    structure as ``params``): forward-over-reverse (Pearlmutter 1994) vmapped over the block."""
    g = grad(lambda p: loss_i(p, idx).sum())
    return vmap(lambda v: jvp(g, (params,), (v,))[1])(V)
