"""How two curvature-type matrices align.

- :func:`alignment`: the lecture's noise-alignment factors (docs/algorithms.md §1 "noise alignment";
  lecture "Quantify the alignment strength", eqs. 7-9) EXACTLY, through ``n × n`` Gram identities,
  never a ``p × p`` matrix.
- :func:`matrix_comparison`: traces, Frobenius norms and pairwise Frobenius cosines of any
  symmetric operators from one shared set of Rademacher probes (docs/algorithms.md §1
  "Comparisons").
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field

import torch

from ..curvature import functional as fx
from ..curvature.base import as_problem
from ..curvature.fisher import CHUNK_BYTES, require_per_sample
from ..curvature.operator import as_operator
from ..errors import ConfigError, LandscapeError, NumericalError
from ..losses import rounding_floor
from ..problem import _dist
from ..results import Estimate
from .sampling import make_generator, rademacher


@dataclass(frozen=True)
class Alignment:
    """The alignment of the SGD noise covariance ``Σ`` with ``G`` on ``n`` samples (exact values).

    ``alpha = tr(ΣG)/(‖G‖_F ‖Σ‖_F)`` (direction), ``beta = ‖Σ‖_F/(2L ‖G‖_F)`` (magnitude), ``mu =
    alpha·beta = tr(ΣG)/(2L ‖G‖_F²)``; ``decoupling_error = ‖Σ − 2LG‖_F/‖Σ‖_F`` measures the
    lecture's approximation ``Σ ≈ 2L G``; ``grad_norm`` is ``‖g‖``. ``g_matrix`` names G; ``g_rows``
    is the number of rows of its factor V; ``g_truncation`` is ``tr`` of the part of G dropped with
    ``rtol`` (0 up to rounding by default), which bounds the error of ``g_frobenius`` (and of
    ``tr(ΣG)`` relative to ``‖Σ‖_F``). ``chunk``/``panel``: samples per Gram block / held in memory.
    ``subsample`` is True when ``n`` is a seeded subset of the problem's samples. Undefined ratios
    (``L = 0``, ``Σ = 0`` or ``G = 0``) are NaN with a note, and so are all three when ``L`` is at
    or below ``loss_floor``, what the dtype resolves at these outputs."""

    alpha: float
    beta: float
    mu: float
    loss: float
    tr_sigma_g: float
    sigma_frobenius: float
    g_frobenius: float
    trace_sigma: float
    trace_g: float
    decoupling_error: float
    grad_norm: float
    n: int
    p: int
    g_matrix: str
    g_rows: int
    g_truncation: float
    subsample: bool
    seed: int
    chunk: int
    panel: int
    notes: tuple = field(default_factory=tuple)
    loss_floor: float = (
        0.0  # the smallest loss the dtype resolves at these outputs (losses.rounding_floor)
    )

    def to_dict(self) -> dict:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.__dict__.items()}


def _ratio(num: float, den: float) -> float:
    return num / den if den > 0 and math.isfinite(den) else math.nan


def alignment(model_or_problem, loss=None, data=None, *, samples: int | None = None, seed: int = 0,
              chunk: int | None = None, memory: int = 2 * CHUNK_BYTES, rtol: float = 0.0,
              **problem_kwargs) -> Alignment:
    """Exact ``α``, ``β``, ``μ``, ``tr(ΣG)``, ``‖Σ‖_F``, ``‖G‖_F`` and ``L`` (lecture eqs. 7-9).

    ``Σ = (1/n) Σ_i g_i g_iᵀ − g gᵀ = ŨᵀŨ/n`` with the centred per-sample gradients
    ``Ũ = [g_i − g]`` (``n × p``); ``G = VᵀV/n`` with ``V`` stacking, for each sample, the rows of
    ``(∂²l_i/∂f²)^{1/2} J_i``: for mse (``½‖f−y‖²``) these are the Jacobian rows ``∇f_ic``, so
    ``G = (1/n) Σ_i ∇f_i ∇f_iᵀ`` as in the slides; for cross-entropy they give the GGN
    ``(1/n) Σ_i J_iᵀ (diag π_i − π_i π_iᵀ) J_i`` (this toolkit's extension; the square root by a
    k × k eigendecomposition, its zero eigenvalue dropped). Then (docs/algorithms.md §1)

        tr(ΣG) = ‖Ũ Vᵀ‖_F² / n²,   ‖Σ‖_F² = ‖Ũ Ũᵀ‖_F² / n²,   ‖G‖_F² = ‖V Vᵀ‖_F² / n²,

    accumulated over pairs of sample chunks ``a ≤ b`` (Gram blocks of ``chunk`` samples; sums of
    squares in float64). Rows ``[g_i; V_i]`` come from one per-sample vector-Jacobian product with
    ``1 + k`` cotangents (``g_i = J_iᵀ ∂l_i/∂f_i``). If all rows fit in ``memory`` bytes they are
    computed once; otherwise a panel of about ``memory/2`` bytes of rows is held and every later
    chunk is recomputed once per panel (about ``n²/(2·panel)`` extra sample rows). Memory stays
    near ``memory``, never ``n × p``. Cost: about ``n² (1 + k)² p`` multiply-adds (``k`` outputs).

    ``samples``: a seeded subset of that many samples (``seed``); ``rtol > 0`` also drops the
    directions of each ``∂²l_i/∂f²`` with eigenvalue below ``rtol`` times its largest (faster for
    confident classifiers; the dropped trace is reported as ``g_truncation``). Without it only
    eigenvalues below ``1e3 · eps64 · max(1, max|∂²l/∂f²|)`` are dropped (cross-entropy's exact
    zero along ``1`` among them), so ``g_truncation`` stays at rounding level.
    """
    problem = as_problem(model_or_problem, loss, data, **problem_kwargs)
    require_per_sample(problem, "the alignment factors")
    if problem.loss.per_token:
        raise LandscapeError(
            f"the alignment factors (α, β, μ) are not available for {problem.loss.name}: their "
            "exact Gram form needs 1 + T·V per-sequence vectors of p numbers (the output Hessian "
            "of a whole sequence)",
            "for a language model, landscape stability gives the non-uniformity and λ_max, and "
            "landscape fisher the gradients' second moment (F_emp)")
    if rtol < 0:
        raise ConfigError(f"rtol must be non-negative, got {rtol}", "pass 0 for the exact value")
    pb = problem
    sub = pb.subset(samples, seed)
    n = sub.n
    if n < 2:
        raise ConfigError(
            f"the noise covariance of {n} sample is 0 (every gradient is the mean one): alpha, "
            "beta and "
            "mu are undefined",
            "use at least 2 samples (--samples)",
        )
    X, Y = sub.tensors()  # the subset's Gram blocks pair every two samples: it is held once
    batches = sub.batches

    # pass 1: L, g and the loss's rounding floor on the sample set (summed over ranks)
    total = torch.zeros(2, dtype=torch.float64, device=pb.device)
    g = torch.zeros(pb.p, dtype=pb.dtype, device=pb.device)
    eps = torch.finfo(pb.dtype).eps
    for x, y in batches:
        v, gd = fx.loss_and_grad(pb.forward, pb.loss, pb.params, x, y)
        total[0] += v.detach().double()
        with torch.no_grad():
            total[1] += rounding_floor(pb.loss, pb.forward(pb.params, x), y, eps).to(total.device)
        g += pb.layout.flatten(gd)
    dist = _dist()
    if dist is not None:
        dist.all_reduce(total)
        dist.all_reduce(g)
        # every pair of samples meets in a Gram block: each rank sees all the samples' inputs and
        # computes its share of the blocks (round robin); the totals are summed below
        X, Y = _all_gather_rows(dist, X), _all_gather_rows(dist, Y)
    rank, world = (dist.get_rank(), dist.get_world_size()) if dist is not None else (0, 1)
    L, floor = float(total[0]) / n, float(total[1]) / n
    g /= n
    if not math.isfinite(L):
        raise NumericalError(f"the loss is {L} at these parameters", "the checkpoint has diverged")

    with torch.no_grad():
        k = pb.forward(pb.params, X[:1]).numel()
    item = torch.finfo(pb.dtype).bits // 8
    per_sample = (1 + k) * pb.p * item
    keep_all = n * per_sample <= memory
    panel = n if keep_all else max(1,
                                   int(memory // (2 * per_sample)))  # samples whose rows are held
    if chunk is None:
        chunk = max(1, min(panel, int(memory // (8 * per_sample))))
    elif chunk < 1:
        raise ConfigError(f"chunk must be positive, got {chunk}", "pass e.g. --chunk 128")
    notes: list[str] = []

    def rows(a: int) -> tuple[torch.Tensor, int, torch.Tensor]:
        """One chunk's rows ``[Ũ; V]`` as a ``[c + r, p]`` block, its ``c`` and its
        ``(Σ‖ũ_i‖², Σ‖v_j‖² kept, Σ‖v_j‖² dropped, r)``."""
        x, y = X[a : a + chunk], Y[a : a + chunk]
        c = x.shape[0]
        with torch.no_grad():
            out = pb.forward(pb.params, x)
        r = fx.loss_output_grad(pb.loss, out, y).reshape(c, 1, k)
        # the k x k loss Hessians and their square roots in float64: for a confident classifier
        # π(1 − π) cancels, and float32 would turn its zero eigenvalue into a visible negative one
        yd = y.double() if y.is_floating_point() else y
        M = fx.output_loss_hessians(pb.loss, out.double(), yd)
        lam, Q = torch.linalg.eigh(0.5 * (M + M.transpose(1, 2)))  # [c, k], [c, k, k]
        top = lam.amax(dim=1, keepdim=True).clamp_min(0)
        floor = 1e3 * torch.finfo(torch.float64).eps * max(1.0, float(M.abs().max()))
        if bool((lam < -(floor + 1e-6 * top)).any()):
            raise NumericalError(
                f"loss {pb.loss.name!r} is not convex in the model outputs, so its "
                "Gauss-Newton matrix G is not PSD and the alignment is undefined",
                "use cross-entropy or mse",
            )
        A = (lam.clamp_min(0).sqrt().unsqueeze(2) * Q.transpose(1,
            2)).to(pb.dtype)  # rows sqrt(λ_j) q_jᵀ
        keep = lam > rtol * top + floor  # [c, k]
        grads = fx.per_sample_vjp(pb.forward, pb.params, x, torch.cat([r, A],
            dim=1))  # name -> [c, 1+k, ...]
        buf = torch.empty(c, 1 + k, pb.p, dtype=pb.dtype, device=pb.device)
        for i, name in enumerate(pb.layout.names):
            o = pb.layout.offsets[i]
            buf[:, :, o : o + pb.layout.numel(i)] = grads[name].reshape(c, 1 + k, -1)
        del grads
        buf[:, 0] -= g
        norms = torch.einsum("ckp,ckp->ck", buf, buf).double()
        W = torch.cat([buf[:, 0], buf[:, 1:][keep]])
        stats = torch.stack([norms[:, 0].sum(), norms[:, 1:][keep].sum(), norms[:, 1:][~keep].sum(),
                             keep.sum().double()]).cpu()
        return W, c, stats

    starts = list(range(0, n, chunk))
    per_panel = max(1, panel // chunk)  # chunks per panel
    sums = torch.zeros(3, dtype=torch.float64)  # ‖ŨŨᵀ‖², ‖ŨVᵀ‖², ‖VVᵀ‖² (times 1)
    stats = torch.zeros(4, dtype=torch.float64)

    blocks = [0]  # Gram blocks met so far: block i is this rank's when i % world == rank

    def pair(A: tuple, B: tuple | None) -> None:
        """Add the Gram block of chunks A and B (B None: A with itself) to ``sums``."""
        blocks[0] += 1
        if (blocks[0] - 1) % world != rank:
            return
        Wa, ca, _ = A
        Wb, cb, _ = A if B is None else B
        Gm = (Wa @ Wb.T).square_()
        uu, vv = Gm[:ca, :cb].sum(dtype=torch.float64), Gm[ca:, cb:].sum(dtype=torch.float64)
        uv = Gm[:ca, cb:].sum(dtype=torch.float64)
        if B is None:
            sums.add_(torch.stack([uu, uv, vv]).cpu())
        else:
            vu = Gm[ca:, :cb].sum(dtype=torch.float64)
            sums.add_(torch.stack([2 * uu, uv + vu, 2 * vv]).cpu())

    # Out of core: the rows of a panel of chunks are held and their pairs summed; every later
    # chunk is then computed once per panel and paired with each of the panel's chunks.
    for p0 in range(0, len(starts), per_panel):
        held = [rows(a) for a in starts[p0 : p0 + per_panel]]
        for j, A in enumerate(held):
            if rank == 0:  # per-sample statistics once, not once per rank
                stats += A[2]
            pair(A, None)
            for B in held[j + 1 :]:
                pair(A, B)
        for b in starts[p0 + per_panel :]:
            B = rows(b)
            for A in held:
                pair(A, B)
        del held
    if dist is not None:
        both = torch.cat([sums, stats]).to(pb.device)
        dist.all_reduce(both)
        sums, stats = both[:3].cpu(), both[3:].cpu()
    suu, suv, svv = (float(v) for v in sums)
    tr_s, tr_g, drop, g_rows = (float(v) for v in stats)
    drop /= n
    g_rows = int(g_rows)

    tr_sigma_g = suv / n**2
    sf, gf = math.sqrt(suu) / n, math.sqrt(svv) / n
    alpha = _ratio(tr_sigma_g, sf * gf)
    beta = _ratio(sf, 2 * L * gf)
    mu = _ratio(tr_sigma_g, 2 * L * gf**2)
    if L == 0:
        notes.append("the loss is 0: beta and mu are 0/0, undefined")
    elif L <= floor:
        dtype = str(pb.dtype).replace("torch.", "")
        notes.append(
            f"the loss {L:.3g} is below what {dtype} resolves at these outputs ({floor:.2g}): the "
            "per-sample losses and gradients are rounding noise, so alpha, beta and mu are "
            "undefined here"
            + ("; recompute with --dtype float64" if pb.dtype != torch.float64 else "")
        )
        alpha = beta = mu = math.nan
    elif L < 1e4 * floor:
        notes.append(
            f"the loss {L:.3g} is within 1e4 of what {str(pb.dtype).replace('torch.', '')} "
            "resolves "
            f"({floor:.2g}): beta and mu may be off by up to about {math.sqrt(floor / L):.0%}"
            + ("; recompute with --dtype float64" if pb.dtype != torch.float64 else "")
        )
    if sf == 0:
        notes.append("the gradient noise is 0 (all per-sample gradients equal): alpha is undefined")
    if gf == 0:
        notes.append("G is 0: alpha, beta and mu are undefined")
    dec2 = suu / n**2 - 4 * L * tr_sigma_g + 4 * L**2 * svv / n**2
    decoupling = _ratio(math.sqrt(max(dec2, 0.0)), sf)
    kind = "ggn" if pb.loss.name != "mse" else "jacobian-gram"
    return Alignment(alpha, beta, mu, L, tr_sigma_g, sf, gf, tr_s / n, tr_g / n, decoupling,
                     float(g.double().norm()), n, pb.p, kind,
                     g_rows, drop, n < pb.n, seed, chunk, per_panel * chunk, tuple(notes), floor)


def _all_gather_rows(dist, t: torch.Tensor) -> torch.Tensor:
    """The ranks' row blocks of ``t`` (uneven sizes allowed), concatenated in rank order."""
    world = dist.get_world_size()
    size = torch.tensor([t.shape[0]], device=t.device)
    sizes = [torch.zeros_like(size) for _ in range(world)]
    dist.all_gather(sizes, size)
    top = int(max(int(s) for s in sizes))
    padded = torch.zeros((top, *t.shape[1:]), dtype=t.dtype, device=t.device)
    padded[: t.shape[0]] = t
    parts = [torch.zeros_like(padded) for _ in range(world)]
    dist.all_gather(parts, padded)
    return torch.cat([part[: int(s)] for part, s in zip(parts, sizes)])


# ---------------------------------------------------------------- operator comparisons


def _delta_cosine(x: torch.Tensor, y: torch.Tensor, z: torch.Tensor) -> tuple[float, float]:
    """``x̄ / sqrt(ȳ z̄)`` and its delta-method standard error from the joint sample covariance."""
    m = x.numel()
    xm, ym, zm = float(x.mean()), float(y.mean()), float(z.mean())
    if ym <= 0 or zm <= 0:
        return math.nan, math.nan
    d = math.sqrt(ym * zm)
    value = xm / d
    grad = torch.tensor([1 / d, -value / (2 * ym), -value / (2 * zm)], dtype=torch.float64)
    cov = torch.cov(torch.stack([x, y, z]).double())
    var = float(grad @ cov @ grad) / m
    return value, math.sqrt(max(var, 0.0))


def matrix_comparison(ops: dict, probes: int = 100, seed: int = 0, block: int | None = None,
                      groups: int | None = None) -> dict:
    """Traces, Frobenius norms and pairwise cosines of symmetric operators, all from one set of
    ``probes`` Rademacher vectors ``v`` shared by every operator (docs/algorithms.md, comparisons):

        tr(A) = E[vᵀAv],   ‖A‖_F² = E‖Av‖²,   ⟨A,B⟩_F = tr(AB) = E[(Av)ᵀ(Bv)],
        cos(A, B) = ⟨A,B⟩_F / (‖A‖_F ‖B‖_F).

    An operator with a ``redraw(seed)`` method (the Monte-Carlo Fisher) is a random matrix whose
    mean is the quantity of interest: each group of probes uses two independent draws ``A_a``,
    ``A_b`` of it, ``tr(A) = E[vᵀA_a v]``, ``‖A‖_F² = E[(A_a v)ᵀ(A_b v)]`` (one draw's ``‖A_a v‖²``
    is biased upward by the draw's own variance) and ``⟨A,B⟩_F = E[(A_a v)ᵀ(Bv)]``, unbiased for
    the mean matrix. The probes are split into ``groups`` (default: one per probe without random
    operators, else 10) and every estimate is the mean of its group means, ± their standard
    deviation / √groups (batch means), so the error covers the draws as well as the probes;
    ``‖A‖_F`` carries its error by the delta method, each cosine by the delta method on the
    joint covariance of the three group means (shared probes make the errors of numerator and
    denominator cancel in part). Costs ``probes`` products with each operator, two with each
    random one. Returns ``{"trace": {name: Estimate}, "frobenius": {...}, "cosine": {"a~b":
    Estimate}}`` in the order of ``ops``."""
    if probes < 2:
        raise ConfigError(f"need at least 2 probes for a standard error, got {probes}",
                          "use --probes 2 or more")
    ops = {name: op if hasattr(op, "redraw") else as_operator(op) for name, op in ops.items()}
    names = list(ops)
    first = ops[names[0]]
    p = first.shape[0]
    for name, op in ops.items():
        if tuple(op.shape) != (p, p):
            raise ConfigError(f"operator {name!r} has shape {tuple(op.shape)}, expected {(p, p)}",
                              "compare matrices of the same parameter selection")
    random = [n for n in names if hasattr(ops[n], "redraw")]
    G = int(groups) if groups else (min(10, probes // 2) if random else probes)
    G = max(2, min(G, probes))
    sizes = [probes // G + (1 if i < probes % G else 0) for i in range(G)]
    b = max(1, min(block or min(getattr(op, "block_size", 64) for op in ops.values()), probes))
    g = make_generator(seed)
    keys = [("quad", n) for n in names] + [("inner", a, c) for i,
                                           a in enumerate(names) for c in names[i:]]
    values = {key: [] for key in keys}  # per probe, in order
    # with random operators each group draws its own pair of matrices; otherwise one pass of blocks
    spans = [(gi, size) for gi, size in enumerate(sizes)] if random else [(0, probes)]
    for gi, size in spans:
        draws = {n: (ops[n].redraw(1_000_003 * (seed + 1) + 2 * gi),
                     ops[n].redraw(1_000_003 * (seed + 1) + 2 * gi + 1))
                 for n in random}
        done = 0
        while done < size:
            V = rademacher(p, min(b, size - done), g, first.dtype, first.device)
            done += V.shape[1]
            AV, BV = {}, {}
            for n in names:
                if n in draws:
                    AV[n] = draws[n][0].matmat(V).to(dtype=torch.float64)
                    BV[n] = draws[n][1].matmat(V).to(dtype=torch.float64)
                else:
                    AV[n] = BV[n] = ops[n].matmat(V).to(dtype=torch.float64)
            Vd = V.double()
            for n in names:
                values[("quad", n)].append((Vd * AV[n]).sum(0).cpu())
            for i, a in enumerate(names):
                for c in names[i:]:
                    other = (
                        BV[c] if a == c else AV[c]
                    )  # the same random matrix twice: independent draws
                    values[("inner", a, c)].append((AV[a] * other).sum(0).cpu())
    bounds = torch.tensor([0, *sizes]).cumsum(0).tolist()
    means = {}
    for key, parts in values.items():
        per_probe = torch.cat(parts)
        means[key] = torch.stack([per_probe[lo:hi].mean() for lo, hi in itertools.pairwise(bounds)])

    def mean_se(x: torch.Tensor) -> tuple[float, float]:
        return float(x.mean()), float(x.std(unbiased=True)) / math.sqrt(x.numel())

    how = {"probes": probes, "groups": G, "dof": G - 1}
    if random:
        how["label_draws"] = 2 * G
    out: dict = {"trace": {}, "frobenius": {}, "cosine": {}}
    for n in names:
        t, se = mean_se(means[("quad", n)])
        cost = probes * (2 if n in random else 1)
        out["trace"][n] = Estimate(t, se, cost, "hutchinson", dict(how))
        sq, sq_se = mean_se(means[("inner", n, n)])
        f = math.sqrt(max(sq, 0.0))
        out["frobenius"][n] = Estimate(f, sq_se / (2 * f) if f > 0 else math.nan, cost,
                                       "hutchinson",
                                       {**how, "trace_sq": sq, "trace_sq_stderr": sq_se})
    for i, a in enumerate(names):
        for c in names[i + 1 :]:
            value, se = _delta_cosine(means[("inner", a, c)], means[("inner", a, a)],
                                      means[("inner", c, c)])
            out["cosine"][f"{a}~{c}"] = Estimate(
                value,
                se,
                2 * probes,
                "hutchinson",
                {**how, "inner": float(means[("inner", a, c)].mean())},
            )
    return out


__all__ = ["Alignment", "alignment", "matrix_comparison"]
