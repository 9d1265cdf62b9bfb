"""Tests of landscape.optim: a contract test over the registry and one-step formula tests.

Contract (every optimizer of ``OPTIMIZERS``): decreases a small problem; ``state_dict`` round trip
continues bit-exactly (SGD-momentum and Adam bases); BatchNorm statistics after a step equal those
of a plain step; parameters without gradients are skipped; an LR scheduler scales the step; a NaN
loss raises; closure calls match ``passes_per_step``. Formulas: SAM, ASAM, Fisher SAM, RandomSAM,
G-TRACER (penalty gradient vs finite differences, convergence condition), MFVI (KL and Σ gradients
vs autograd), VSAM (Σ fixed point), covariance noise (scale, empirical covariance). Flat-minimum
preference on a two-minimum problem. float64 and tiny models throughout.
"""

from __future__ import annotations

import copy
import doctest
import io
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from landscape.errors import CheckpointError, ConfigError, NumericalError
from landscape.optim import OPTIMIZERS, SAM, build_optimizer, hyperparameters, rules

DT = torch.float64
NAMES = list(OPTIMIZERS)
TWO_PASS = {"sam", "asam", "fsam", "vsam"}
PERTURBED_ONE_PASS = {"rsam", "mfvi"}
NOISE = {"lb-diag-noise", "lb-full-noise"}
N, D, H, K = 32, 5, 8, 3


# ----------------------------------------------------------------------------- fixtures
def data(n: int = N, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, D, generator=g, dtype=DT)
    w = torch.randn(D, K, generator=g, dtype=DT)
    y = (x @ w + 0.5 * torch.randn(n, K, generator=g, dtype=DT)).argmax(1)
    return x, y


def mlp(seed: int = 0, bn: bool = False) -> nn.Module:
    torch.manual_seed(seed)
    layers = [nn.BatchNorm1d(D)] if bn else []
    layers += [nn.Linear(D, H)] + ([nn.BatchNorm1d(H)] if bn else []) + [nn.Tanh(), nn.Linear(H, K)]
    return nn.Sequential(*layers).to(DT)


def own_kwargs(name: str, net: nn.Module, **over):
    """Settings each optimizer needs beyond the defaults."""
    kw: dict = {}
    if name in ("mfvi", "vsam"):
        kw["num_data"] = N
    if name in NOISE:
        kw.update(small_batch=4, total_steps=16, model=net, loss_fn="cross-entropy")
    if name in ("rsam", "mfvi") or name in NOISE:
        kw["seed"] = 0
    kw.update(over)
    return kw


def make(name: str, net: nn.Module, base: str | None = None, lr: float | None = None, **over):
    if lr is None:
        lr = 0.05 if (base == "adam" or name == "adam-tracer") else 0.2
    return build_optimizer(
        name, net.parameters(), base=base, lr=lr, **own_kwargs(name, net, **over)
    )


def do_step(opt, name: str, model: nn.Module, x, y, **step_kw):
    """One step with the loss closure (the convention every optimizer accepts)."""
    if name in NOISE and "per_sample_grads" not in step_kw:
        step_kw["batch"] = (x, y)
    return opt.step(lambda: F.cross_entropy(model(x), y), **step_kw)


def flat(model: nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def full_loss(model, x, y) -> float:
    with torch.no_grad():
        return float(F.cross_entropy(model(x), y))


def bases_for(name: str) -> list[str]:
    if name == "sgd-tracer":
        return ["sgd"]
    if name == "adam-tracer":
        return ["adam"]
    return ["sgd", "adam"]


# ----------------------------------------------------------------------------- contract
@pytest.mark.parametrize("name", NAMES)
def test_decreases_loss(name):
    x, y = data()
    model = mlp()
    opt = make(name, model)
    start = full_loss(model, x, y)
    for t in range(40):
        i = (t * 8) % N
        xb, yb = (x, y) if name == "gd" else (x[i:i + 16], y[i:i + 16])
        do_step(opt, name, model, xb, yb)
    end = full_loss(model, x, y)
    assert end < 0.6 * start, f"{name}: {start:.4f} -> {end:.4f}"
    assert opt.steps == 40


@pytest.mark.parametrize("name,base", [(n, b) for n in NAMES for b in bases_for(n)])
def test_state_dict_round_trip_bit_exact(name, base):
    x, y = data()
    batches = [(x[i:i + 16], y[i:i + 16]) for i in (0, 8, 16, 4, 12, 0)]
    model = mlp()
    kw = {"momentum": 0.9} if base == "sgd" else {}
    opt = make(name, model, base=base, weight_decay=1e-3, **kw)
    for xb, yb in batches[:3]:
        do_step(opt, name, model, xb, yb)
    buf = io.BytesIO()
    torch.save({"model": model.state_dict(), "opt": opt.state_dict()}, buf)
    for xb, yb in batches[3:]:
        do_step(opt, name, model, xb, yb)
    uninterrupted = flat(model)

    buf.seek(0)
    saved = torch.load(buf, weights_only=True)
    assert saved["opt"]["base"]["state"], "the base optimizer's moments must be saved"
    model2 = mlp(seed=1)
    model2.load_state_dict(saved["model"])
    opt2 = make(name, model2, base=base, weight_decay=1e-3, **kw,
                **({"seed": 123} if "seed" in own_kwargs(name, model2) else {}))
    opt2.load_state_dict(saved["opt"])
    assert opt2.steps == 3
    for xb, yb in batches[3:]:
        do_step(opt2, name, model2, xb, yb)
    assert torch.equal(flat(model2), uninterrupted)


@pytest.mark.parametrize("name", NAMES)
def test_batchnorm_statistics_updated_once(name):
    x, y = data()
    model = mlp(bn=True).train()
    ref = copy.deepcopy(model)
    with torch.no_grad():
        ref(x)  # what a plain step's single forward pass does to the buffers
    opt = make(name, model, model=model)
    kw = {}
    if name in NOISE:  # per-sample gradients are undefined with BatchNorm in training mode
        probe = copy.deepcopy(model)
        with pytest.raises(ConfigError, match="BatchNorm"):
            do_step(make(name, probe, model=probe), name, probe, x, y)
        kw["per_sample_grads"] = [torch.zeros(N, *p.shape, dtype=DT) for p in model.parameters()]
    do_step(opt, name, model, x, y, **kw)
    got = dict(model.named_buffers())
    for key, value in ref.named_buffers():
        if name in PERTURBED_ONE_PASS and key.startswith("2."):
            # the only pass ran at θ + ε: the hidden layer's statistics differ by design,
            # but they were updated exactly once
            assert int(got["2.num_batches_tracked"]) == 1
            continue
        assert torch.equal(got[key], value), f"{name}: buffer {key}"


def test_batchnorm_control_without_model_argument():
    """Without model= the perturbed pass updates the statistics (what the test above rules out)."""
    x, y = data()
    model = mlp(bn=True).train()
    ref = copy.deepcopy(model)
    with torch.no_grad():
        ref(x)
    opt = make("sam", model)
    do_step(opt, "sam", model, x, y)
    assert int(model[0].num_batches_tracked) == 2
    assert not torch.equal(model[2].running_mean, ref[2].running_mean)


class WithUnused(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = mlp()
        self.unused = nn.Linear(3, 3).to(DT)

    def forward(self, x):
        return self.net(x)


@pytest.mark.parametrize("name", NAMES)
def test_parameters_without_grad_are_skipped(name):
    x, y = data()
    model = WithUnused()
    before = [p.detach().clone() for p in model.unused.parameters()]
    net_before = flat(model.net)
    opt = make(name, model, weight_decay=0.1)
    for _ in range(2):
        do_step(opt, name, model, x, y)
    for p, b in zip(model.unused.parameters(), before):
        assert p.grad is None
        assert torch.equal(p.detach(), b)
    assert not torch.equal(flat(model.net), net_before)


@pytest.mark.parametrize("name", NAMES)
def test_lr_scheduler_scales_the_step(name):
    x, y = data()
    moves = []
    for factor in (1.0, 0.5):
        model = mlp()
        opt = make(name, model)
        assert opt.param_groups is opt.base.param_groups
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda _, f=factor: f)
        assert opt.base.param_groups[0]["lr"] == pytest.approx(
            factor * opt.base.param_groups[0]["initial_lr"]
        )
        before = flat(model)
        do_step(opt, name, model, x, y)
        sched.step()
        moves.append(flat(model) - before)
    torch.testing.assert_close(moves[1], 0.5 * moves[0], rtol=1e-9, atol=1e-15)


@pytest.mark.parametrize("name", NAMES)
def test_nan_loss_raises(name):
    x, y = data()
    model = mlp()
    opt = make(name, model)
    with pytest.raises(NumericalError, match="diverged"):
        opt.step(lambda: F.cross_entropy(model(x), y) * float("nan"),
                 **({"batch": (x, y)} if name in NOISE else {}))


@pytest.mark.parametrize("name", NAMES)
def test_closure_calls_and_passes_per_step(name):
    x, y = data()
    model = mlp()
    opt = make(name, model)
    calls = []

    def closure():
        calls.append(1)
        return F.cross_entropy(model(x), y)

    opt.step(closure, **({"batch": (x, y)} if name in NOISE else {}))
    assert len(calls) == (2 if name in TWO_PASS else 1)
    expected = {"gd": 1, "sgd": 1, "rsam": 1, "mfvi": 1}.get(name, 2)
    assert opt.passes_per_step == expected


def _closure(style, opt, model, x, y):
    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        if style == "backward":
            loss.backward()
        return loss
    return closure


@pytest.mark.parametrize("name", ["sgd", "sam", "rsam", "vsam"])
def test_pytorch_closure_equals_loss_closure(name):
    x, y = data()
    out = []
    for style in ("backward", "loss"):
        model = mlp()
        opt = make(name, model)
        closure = _closure(style, opt, model, x, y)
        for _ in range(2):
            opt.step(closure)
        out.append(flat(model))
    torch.testing.assert_close(out[0], out[1], rtol=1e-13, atol=1e-15)


# ----------------------------------------------------------------------------- SAM family
def _grad(model, x, y):
    loss = F.cross_entropy(model(x), y)
    return torch.autograd.grad(loss, list(model.parameters()))


def _perturbed_grad(model, x, y, eps):
    m = copy.deepcopy(model)
    with torch.no_grad():
        for p, e in zip(m.parameters(), eps):
            p.add_(e)
    return _grad(m, x, y)


def test_sam_one_step_and_weight_decay_once():
    x, y = data()
    model = mlp()
    rho, lr, wd = 0.05, 0.3, 0.01
    theta = [p.detach().clone() for p in model.parameters()]
    g = _grad(model, x, y)
    norm = torch.sqrt(sum((t * t).sum() for t in g))
    eps = [rho * t / norm for t in g]
    g_eps = _perturbed_grad(model, x, y, eps)
    opt = build_optimizer("sam", model.parameters(), lr=lr, momentum=0.0, weight_decay=wd, rho=rho)
    do_step(opt, "sam", model, x, y)
    for e, got in zip(eps, opt.last_perturbation):
        torch.testing.assert_close(got, e, rtol=1e-12, atol=1e-15)
    for p, t, ge in zip(model.parameters(), theta, g_eps):
        torch.testing.assert_close(p.detach(), t - lr * (ge + wd * t), rtol=1e-12, atol=1e-14)


def test_sam_global_norm_across_groups_and_base_instance():
    x, y = data()
    model = mlp()
    g = _grad(model, x, y)
    norm = torch.sqrt(sum((t * t).sum() for t in g))
    first, rest = list(model.parameters())[:2], list(model.parameters())[2:]
    base = torch.optim.SGD([{"params": first, "lr": 0.0}, {"params": rest}], lr=0.1)
    opt = SAM(base=base, rho=0.07)
    assert opt.param_groups is base.param_groups
    before = [p.detach().clone() for p in model.parameters()]
    do_step(opt, "sam", model, x, y)
    for e, t in zip(opt.last_perturbation, g):
        torch.testing.assert_close(e, 0.07 * t / norm, rtol=1e-12, atol=1e-15)
    for p, b in zip(first, before[:2]):
        assert torch.equal(p.detach(), b)  # lr 0 in the first group
    assert not torch.equal(rest[0].detach(), before[2])
    clone = copy.deepcopy(opt)
    assert clone.param_groups[0]["lr"] == 0.0 and clone.base is not opt.base


def test_fsam_with_eta_zero_is_sam():
    x, y = data()
    res = []
    for name, hyper in (("sam", {"rho": 0.1}), ("fsam", {"gamma": 0.1, "eta_f": 0.0})):
        model = mlp()
        opt = build_optimizer(name, model.parameters(), lr=0.2, **hyper)
        for _ in range(3):
            do_step(opt, name, model, x, y)
        res.append(flat(model))
    torch.testing.assert_close(res[0], res[1], rtol=1e-12, atol=1e-14)


def test_fsam_perturbation_formula():
    g = [torch.tensor([[3.0, -1.0]], dtype=DT), torch.tensor([0.5], dtype=DT)]
    gamma, eta = 0.2, 0.7
    flatg = torch.cat([t.flatten() for t in g])
    finv = 1.0 / (1.0 + eta * flatg**2)
    want = gamma * finv * flatg / torch.sqrt((flatg * finv * flatg).sum())
    got = torch.cat([t.flatten() for t in rules.fisher_sam_eps(g, gamma, eta)])
    torch.testing.assert_close(got, want, rtol=1e-14, atol=0)
    # the constraint εᵀ F ε = γ² holds with F = 1 + η g²
    assert float((got * (1 + eta * flatg**2) * got).sum()) == pytest.approx(gamma**2, rel=1e-12)


def test_asam_scales_weights_only_and_perturbs_zero_weights():
    model = nn.Linear(3, 2).to(DT)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[0.0, 2.0, -1.0], [0.5, 0.0, 3.0]], dtype=DT))
        model.bias.copy_(torch.tensor([0.0, 4.0], dtype=DT))
    x, y = torch.randn(6, 3, dtype=DT, generator=torch.Generator().manual_seed(1)), torch.tensor([0,
        1, 1, 0, 1, 0])
    rho, eta = 0.5, 0.01
    gw, gb = _grad(model, x, y)
    tw = model.weight.detach().abs() + eta
    denom = torch.sqrt(((tw * gw) ** 2).sum() + (gb**2).sum())  # biases: T = 1
    want_w, want_b = rho * tw**2 * gw / denom, rho * gb / denom
    opt = build_optimizer("asam", model.parameters(), lr=0.1, rho=rho, eta_a=eta)
    do_step(opt, "asam", model, x, y)
    ew, eb = opt.last_perturbation
    torch.testing.assert_close(ew, want_w, rtol=1e-12, atol=1e-15)
    torch.testing.assert_close(eb, want_b, rtol=1e-12, atol=1e-15)
    zero = torch.tensor([[True, False, False], [False, True, False]])
    assert (ew[zero].abs() > 0).all(), "zero weights stay perturbable through eta_a"


def test_rsam_perturbation_norm_statistics():
    like = [torch.zeros(7, 5, dtype=DT), torch.zeros(15, dtype=DT)]
    p, rho, k = 50, 0.05, 4000
    gen = torch.Generator().manual_seed(0)
    sq = torch.stack([sum((e * e).sum() for e in rules.rsam_eps(like, rho, gen)) for _ in range(k)])
    # ‖ε‖² = σ² χ²_p: mean ρ², standard deviation ρ² sqrt(2/p)
    se = float(sq.std()) / math.sqrt(k)
    assert abs(float(sq.mean()) - rho**2) < 4 * se
    assert float(sq.std()) == pytest.approx(rho**2 * math.sqrt(2 / p), rel=0.1)


def test_rsam_step_uses_gradient_at_perturbed_point():
    x, y = data()
    model = mlp()
    theta = flat(model)
    opt = build_optimizer("rsam", model.parameters(), lr=0.3, momentum=0.0, rho=0.5, seed=3)
    ref = copy.deepcopy(model)
    do_step(opt, "rsam", model, x, y)
    g_eps = _perturbed_grad(ref, x, y, opt.last_perturbation)
    torch.testing.assert_close(flat(model), theta - 0.3 * torch.cat([g.flatten() for g in g_eps]),
                               rtol=1e-12, atol=1e-14)
    assert rules.num_params(list(model.parameters())) == sum(p.numel() for p in model.parameters())


# ----------------------------------------------------------------------------- G-TRACER
def test_tracer_penalty_gradient_matches_finite_differences():
    x, y = data(n=12)
    model = mlp()
    rho, delta, beta, lr = 0.3, 0.05, 0.2, 1.0
    names = [n for n, _ in model.named_parameters()]
    theta0 = {n: p.detach().clone() for n, p in model.named_parameters()}

    def grad_at(params):
        ps = {n: t.clone().requires_grad_(True) for n, t in params.items()}
        loss = F.cross_entropy(torch.func.functional_call(model, ps, (x,)), y)
        return torch.autograd.grad(loss, list(ps.values()))

    g0 = grad_at(theta0)
    fbar = [t * t for t in g0]  # f̄_0 = g_0²

    def penalty(params):
        return float(rules.tracer_penalty(grad_at(params), fbar, rho, delta))

    opt = build_optimizer("sgd-tracer", model.parameters(), lr=lr, momentum=0.0, rho=rho,
                          delta=delta, beta=beta)
    do_step(opt, "sgd-tracer", model, x, y)
    moved = {n: theta0[n] - p.detach() for n, p in model.named_parameters()}
    h = 1e-5
    for n, g in zip(names, g0):
        pen_grad = moved[n] / lr - g  # the optimizer's 2ρ H_B (g ⊙ (f̄+δ)⁻¹)
        flat_idx = range(min(4, g.numel()))
        for j in flat_idx:
            e = torch.zeros_like(g).flatten()
            e[j] = h
            e = e.view_as(g)
            plus = penalty({**theta0, n: theta0[n] + e})
            minus = penalty({**theta0, n: theta0[n] - e})
            fd = (plus - minus) / (2 * h)
            assert pen_grad.flatten()[j].item() == pytest.approx(fd, rel=1e-5, abs=1e-8), (n, j)
    # f̄ update AFTER the step: f̄_1 = (1−β) g0² + β g0² = g0²; the next step uses it
    for got, f0 in zip(opt.fbar(), fbar):
        torch.testing.assert_close(got, f0, rtol=1e-14, atol=0)
    g1 = grad_at({n: p.detach() for n, p in model.named_parameters()})
    do_step(opt, "sgd-tracer", model, x, y)
    for got, f0, t in zip(opt.fbar(), fbar, g1):
        torch.testing.assert_close(got, (1 - beta) * f0 + beta * t * t, rtol=1e-12, atol=1e-18)


def test_tracer_needs_a_loss_closure():
    x, y = data()
    model = mlp()
    opt = make("sgd-tracer", model)

    def closure():
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        return loss

    with pytest.raises(ConfigError, match="Hessian-vector product"):
        opt.step(closure)


def test_tracer_with_a_gradient_constant_in_theta():
    """A parameter whose gradient has no graph (linear loss) contributes nothing to H_B v."""
    c = torch.tensor([1.0, 2.0, 3.0], dtype=DT)
    w = nn.Parameter(torch.ones(3, dtype=DT))
    b = nn.Parameter(torch.ones(2, dtype=DT))
    opt = build_optimizer("sgd-tracer", [w, b], lr=0.1, momentum=0.0, rho=0.5, delta=1.0)
    opt.step(lambda: (c * w).sum() + (b**2).sum())
    torch.testing.assert_close(w.detach(), 1 - 0.1 * c)  # no penalty term: H = 0 for w
    gb = 2 * torch.ones(2, dtype=DT)  # g_b = 2b, H_b = 2I, f̄_0 = g², v = g/(g² + δ)
    torch.testing.assert_close(b.detach(), 1 - 0.1 * (gb + 2 * 0.5 * 2 * gb / (gb**2 + 1)))
    assert float(opt.last_penalty) == pytest.approx(
        0.5 * float((c**2 / (c**2 + 1)).sum() + (gb**2 / (gb**2 + 1)).sum())
    )


def test_tracer_convergence_condition_on_diagonal_quadratic():
    lam = torch.tensor([0.5, 1.0, 2.0, 2.2], dtype=DT)
    lr, rho, delta = 0.8, 0.05, 1.0
    stable = [rules.tracer_stable(float(l), lr, rho, delta) for l in lam]
    assert stable == [True, True, True, False]
    assert all(float(l) * lr < 2 for l in lam), "plain GD is stable on every coordinate"
    w = nn.Parameter(torch.full((4,), 1e-3, dtype=DT))
    opt = build_optimizer("sgd-tracer", [w], lr=lr, momentum=0.0, rho=rho, delta=delta)
    for _ in range(300):
        opt.step(lambda: 0.5 * (lam * w * w).sum())
    for i, s in enumerate(stable):
        if s:
            assert abs(float(w[i].detach())) < 1e-8
        else:
            assert abs(float(w[i].detach())) > 1e-2


def test_adam_tracer_shared_moment_and_base_check():
    x, y = data()
    model = mlp()
    opt = build_optimizer("adam-tracer", model.parameters(), lr=0.01, fbar="adam")
    for _ in range(3):
        do_step(opt, "adam-tracer", model, x, y)
    assert "exp_avg_sq" in opt.base.state[next(iter(model.parameters()))]
    with pytest.raises(ConfigError, match="base"):
        build_optimizer("sgd-tracer", model.parameters(), base="adam")
    with pytest.raises(ConfigError, match="Adam"):
        build_optimizer("sgd-tracer", model.parameters(), fbar="adam")


# ----------------------------------------------------------------------------- MFVI / VSAM
def test_gaussian_kl_gradients_match_autograd():
    g = torch.Generator().manual_seed(0)
    mu = [torch.randn(3, 2, generator=g, dtype=DT).requires_grad_(True)]
    var = [(torch.rand(3, 2, generator=g, dtype=DT) + 0.1).requires_grad_(True)]
    kl = rules.gaussian_kl(mu, var, prior_std=0.7)
    dmu, dvar = torch.autograd.grad(kl, mu + var)
    gm, gv = rules.gaussian_kl_grads([m.detach() for m in mu], [v.detach() for v in var], 0.7)
    torch.testing.assert_close(gm[0], dmu, rtol=1e-13, atol=0)
    torch.testing.assert_close(gv[0], dvar, rtol=1e-13, atol=0)
    # KL(N(0, σ₀²) ‖ N(0, σ₀²)) = 0
    assert float(rules.gaussian_kl([torch.zeros(4, dtype=DT)], [torch.full((4,), 0.49, dtype=DT)],
                                   0.7)) == pytest.approx(0, abs=1e-14)


def test_mfvi_one_step_matches_autograd_of_the_objective():
    x, y = data()
    model = mlp()
    n_data, s0, lr, slr = 50, 0.8, 0.3, 0.05
    mu0 = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = build_optimizer("mfvi", model.parameters(), lr=lr, momentum=0.0, num_data=n_data,
                          prior_std=s0, sigma_lr=slr, rho=0.5, seed=0)
    logv0 = [s.log() for s in opt.variance()]
    do_step(opt, "mfvi", model, x, y)
    eps = opt.last_perturbation
    xi = [e / s.exp().sqrt() for e, s in zip(eps, logv0)]
    # J(μ, s) = L_B(μ + exp(s/2) ξ) + KL(N(μ, e^s) ‖ N(0, σ₀²)) / N   (sam-as-VI eq. 5)
    mu = [t.clone().requires_grad_(True) for t in mu0.values()]
    s = [t.clone().requires_grad_(True) for t in logv0]
    sample = {n: m + (si / 2).exp() * z for n, m, si, z in zip(mu0, mu, s, xi)}
    obj = F.cross_entropy(torch.func.functional_call(model, sample, (x,)), y) \
        + rules.gaussian_kl(mu, [si.exp() for si in s], s0) / n_data
    dmu = torch.autograd.grad(obj, mu, retain_graph=True)
    ds = torch.autograd.grad(obj, s)
    for p, m0, d in zip(model.parameters(), mu0.values(), dmu):
        torch.testing.assert_close(p.detach(), m0 - lr * d, rtol=1e-12, atol=1e-14)
    for lv, l0, d in zip(opt.variance(), logv0, ds):
        torch.testing.assert_close(lv.log(), l0 - slr * n_data * d, rtol=1e-12, atol=1e-12)


def test_vsam_sigma_fixed_point():
    g = torch.Generator().manual_seed(0)
    c = [torch.randn(4, 3, generator=g, dtype=DT), torch.randn(5, generator=g, dtype=DT)]
    w = [nn.Parameter(torch.zeros(4, 3, dtype=DT)), nn.Parameter(torch.zeros(5, dtype=DT))]
    n_data, s0 = 20, 0.5
    opt = build_optimizer("vsam", w, lr=1e-3, momentum=0.0, num_data=n_data, prior_std=s0,
                          sigma_lr=0.5)
    for _ in range(300):  # linear loss: the gradient g = c is fixed
        opt.step(lambda: sum((ci * wi).sum() for ci, wi in zip(c, w)))
    var = opt.variance()
    p = 17
    quad = math.sqrt(sum(float((v * ci * ci).sum()) for v, ci in zip(var, c)))
    for v, ci in zip(var, c):
        want = 1 / s0**2 + n_data * math.sqrt(p) * ci**2 / quad
        torch.testing.assert_close(1 / v, want, rtol=1e-9, atol=0)
    # the perturbation is SAM's at the start: Σ = ρ²/p I gives ε* = ρ g/‖g‖
    opt2 = build_optimizer("vsam", [nn.Parameter(torch.zeros(5, dtype=DT))], num_data=10)
    gg = [torch.arange(1.0, 6.0, dtype=DT)]
    eps = rules.vsam_eps(gg, [torch.full((5,), 0.05**2 / 5, dtype=DT)])
    torch.testing.assert_close(eps[0], rules.sam_eps(gg, 0.05)[0], rtol=1e-13, atol=0)
    del opt2


def test_variational_needs_num_data():
    with pytest.raises(ConfigError, match="num_data"):
        build_optimizer("mfvi", mlp().parameters())


# ----------------------------------------------------------------------------- covariance noise
def test_covariance_noise_scale_and_schedule():
    assert rules.covariance_noise_scale(4096, 128) == pytest.approx(
        math.sqrt((4096 - 128) / (4096 * 128))
    )
    assert rules.covariance_noise_scale(128, 128) == 0.0
    x, y = data()
    model = mlp()
    opt = build_optimizer("lb-diag-noise", model.parameters(), small_batch=4, total_steps=10,
                          model=model, loss_fn="cross-entropy", seed=0)
    assert opt.noise_steps == 3  # first quarter, rounded up
    for t in range(5):
        do_step(opt, "lb-diag-noise", model, x[:16], y[:16])
        if t < 3:
            assert opt.last_scale == pytest.approx(math.sqrt((16 - 4) / (16 * 4)))
            assert opt.last_noise is not None
        else:
            assert opt.last_noise is None and opt.passes_per_step == 1
    with pytest.raises(ConfigError, match="total_steps"):
        build_optimizer("lb-full-noise", model.parameters(), small_batch=4)


def test_torch_func_per_sample_grads_and_noise_sign():
    x, y = data(n=8)
    model = mlp()
    opt = build_optimizer("lb-full-noise", model.parameters(), lr=1.0, momentum=0.0, small_batch=2,
                          total_steps=4, model=model, loss_fn="cross-entropy", seed=0)
    per = [torch.stack(list(t)) for t in zip(*[_grad(model, x[i:i + 1],
                                                     y[i:i + 1]) for i in range(8)])]
    g = _grad(model, x, y)
    theta = [p.detach().clone() for p in model.parameters()]
    do_step(opt, "lb-full-noise", model, x, y)
    model2 = mlp()
    opt2 = build_optimizer("lb-full-noise", model2.parameters(), lr=1.0, momentum=0.0,
                           small_batch=2,
                           total_steps=4, seed=0)
    do_step(opt2, "lb-full-noise", model2, x, y, per_sample_grads=per)
    for p, q, t, gi, nz in zip(model.parameters(), model2.parameters(), theta, g, opt.last_noise):
        torch.testing.assert_close(p.detach(), q.detach(), rtol=1e-12, atol=1e-14)
        # θ ← θ − α g + α s C ξ
        torch.testing.assert_close(p.detach(), t - gi + nz, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(torch.cat([t.mean(0).flatten() for t in per]),
                               torch.cat([t.flatten() for t in g]), rtol=1e-12, atol=1e-14)


def test_diag_noise_of_linear_layers_without_per_sample_gradients():
    """lb-diag-noise on nn.Linear layers takes Σ_i g_i² = (δ²)ᵀ(a²) from one reverse pass: the same
    step as with the stacked per-sample gradients; other layers fall back to torch.func's."""
    from torch.func import functional_call

    from landscape.curvature import functional as fx
    from landscape.losses import get_loss

    x, y = data(n=8)
    model, model2 = mlp(), mlp()
    kw = {"lr": 1.0, "momentum": 0.0, "small_batch": 2, "total_steps": 4, "seed": 0}
    opt = build_optimizer("lb-diag-noise", model.parameters(), model=model, loss_fn="cross-entropy",
                          **kw)
    opt2 = build_optimizer("lb-diag-noise", model2.parameters(), **kw)
    per = [torch.stack(list(t)) for t in zip(*[_grad(model, x[i:i + 1],
                                                     y[i:i + 1]) for i in range(8)])]
    do_step(opt, "lb-diag-noise", model, x, y)
    do_step(opt2, "lb-diag-noise", model2, x, y, per_sample_grads=per)
    for p, q in zip(model.parameters(), model2.parameters()):
        torch.testing.assert_close(p.detach(), q.detach(), rtol=1e-12, atol=1e-14)
    # the identity itself, and the cases it does not cover
    net = mlp()
    params = {n: t.detach() for n, t in net.named_parameters()}
    sq = fx.linear_sum_squared_grads(net, lambda prm, a: functional_call(net, prm, (a,)),
                                     get_loss("cross-entropy"),
                                     params, x, y)
    for n, t in zip(params, per):
        torch.testing.assert_close(sq[n], (t * t).sum(0), rtol=1e-12, atol=1e-15)
    conv = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(8, K)).to(DT)
    shared = nn.Linear(D, D).to(DT)
    twice = nn.Sequential(shared, nn.Tanh(), shared, nn.Linear(D, K)).to(DT)
    for net, inp in ((conv, torch.randn(8, 1, 4, 4, dtype=DT)), (twice, x)):
        params = {n: t.detach() for n, t in net.named_parameters()}
        assert (
            fx.linear_sum_squared_grads(
                net,
                lambda prm, a, net=net: functional_call(net, prm, (a,)),
                get_loss("cross-entropy"),
                params,
                inp,
                y,
            )
            is None
        )


@pytest.mark.parametrize("kind", ["diag", "full"])
def test_injected_noise_covariance_matches_empirical_fisher(kind):
    gen = torch.Generator().manual_seed(0)
    m, k, scale = 6, 8000, 0.4
    per = [
        torch.randn(m, 2, 2, generator=gen, dtype=DT) + 0.5,
        torch.randn(m, 3, generator=gen, dtype=DT),
    ]
    G = torch.cat([t.reshape(m, -1) for t in per], 1)  # [M, p]
    Femp = G.T @ G / m
    target = scale**2 * (torch.diag(torch.diag(Femp)) if kind == "diag" else Femp)
    draw = rules.diag_fisher_noise if kind == "diag" else rules.full_fisher_noise
    Z = torch.stack([torch.cat([t.flatten() for t in draw(per, scale, gen)]) for _ in range(k)])
    outer = Z[:, :, None] * Z[:, None, :]
    cov, se = outer.mean(0), outer.std(0) / math.sqrt(k)
    assert ((cov - target).abs() <= 5 * se + 1e-12).all(), float(
        ((cov - target).abs() / (se + 1e-30)).max()
    )
    if kind == "full":  # the off-diagonal structure is really there
        off = ~torch.eye(G.shape[1], dtype=torch.bool)
        assert (target[off].abs() > 10 * se[off]).any()


# ----------------------------------------------------------------------------- registry and errors
def test_registry_errors():
    ps = list(mlp().parameters())
    with pytest.raises(ConfigError, match="unknown optimizer"):
        build_optimizer("nope", ps)
    with pytest.raises(ConfigError, match="does not take"):
        build_optimizer("sam", ps, rhoo=0.1)
    with pytest.raises(ConfigError, match="momentum"):
        build_optimizer("sam", ps, base="adam", momentum=0.9)
    with pytest.raises(ConfigError, match="rho"):
        build_optimizer("sam", ps, rho=-1.0)
    with pytest.raises(ConfigError, match="closure"):
        build_optimizer("sam", ps).step()
    opt = build_optimizer("sam", ps)
    with pytest.raises(CheckpointError):
        opt.load_state_dict(build_optimizer("sgd", ps).state_dict())
    assert hyperparameters("asam")["rho"] == 0.5 and hyperparameters("fsam")["gamma"] == 0.1
    assert hyperparameters("sam")["rho"] == 0.05 and hyperparameters("asam")["eta_a"] == 0.01
    assert hyperparameters("fsam")["eta_f"] == 1.0 and hyperparameters("rsam")["rho"] == 0.05


def test_rules_doctests():
    assert doctest.testmod(rules).failed == 0


# ----------------------------------------------------------------------------- flat minima
def _two_minima(x):
    """Sharp minimum at −1 (curvature 40), flat one at +1 (curvature 2), equal depth 0."""
    return torch.minimum(20 * (x + 1) ** 2, (x - 1) ** 2)


def _ends_flat(name, seed, lr=0.045, steps=40, noise=0.3, **hyper) -> bool:
    g = torch.Generator().manual_seed(seed)
    w = nn.Parameter(torch.rand((1, 1), generator=g, dtype=DT) * 2.5 - 2.0)  # x0 ∈ [−2, 0.5]
    zs = torch.randn(steps, generator=g, dtype=DT) * noise  # minibatch noise of the gradient
    opt = build_optimizer(name, [w], lr=lr, momentum=0.0, **hyper)
    for t in range(steps):
        opt.step(lambda z=zs[t]: (_two_minima(w) + z * w).sum())
    return abs(float(w.detach()) - 1.0) < 0.3


def test_sharpness_aware_methods_prefer_the_flat_minimum():
    """GD is stable at both minima (lr·40 = 1.8 < 2), so SGD ends wherever it starts; the
    sharpness-aware methods leave the sharp basin."""
    seeds = range(20)
    base = sum(_ends_flat("sgd", s) for s in seeds)
    assert base <= 14
    for name, hyper in [("sam", {"rho": 0.08}), ("asam", {"rho": 0.08}),
                        ("fsam", {"gamma": 0.1, "eta_f": 0.01}), ("sgd-tracer", {"rho": 5.0,
                                                                                 "delta": 100.0})]:
        got = sum(_ends_flat(name, s, **hyper) for s in seeds)
        assert got >= base + 5, f"{name}: {got} flat vs sgd {base} of {len(seeds)}"
