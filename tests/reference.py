"""Dense truths on the whole data, from torch.func on the flat parameter vector (tiny models only).

Every function takes a :class:`landscape.Problem` and uses only its forward function, loss,
parameters and data (all batches concatenated) — none of the operators under test. Per-sample
quantities assume per-sample losses (eval mode). Shapes: ``[p, p]`` matrices, ``[n, p]`` stacked
per-sample gradients, ``[n, k, p]`` output Jacobians (k = flattened output size).
"""

from __future__ import annotations

import torch
from torch.func import hessian, jacrev

from landscape.problem import Problem


def data(problem: Problem) -> tuple[torch.Tensor, torch.Tensor]:
    """All of the problem's (local) samples as one ``(X, Y)`` pair."""
    return torch.cat([x for x, _ in problem.batches]), torch.cat([y for _, y in problem.batches])


def _outputs(problem: Problem, theta: torch.Tensor, X: torch.Tensor) -> torch.Tensor:
    return problem.forward(problem.layout.unflatten(theta), X)


def per_sample_losses(problem: Problem, theta: torch.Tensor | None = None) -> torch.Tensor:
    """``[n]`` losses ``l_i(θ)``."""
    X, Y = data(problem)
    theta = problem.theta if theta is None else theta
    out = _outputs(problem, theta, X)
    return torch.stack([problem.loss.sum(out[i : i + 1], Y[i : i + 1]) for i in range(X.shape[0])])


def loss(problem: Problem, theta: torch.Tensor | None = None) -> torch.Tensor:
    """``L(θ) = (1/n) Σ_i l_i(θ)``."""
    return per_sample_losses(problem, theta).mean()


def per_sample_gradients(problem: Problem) -> torch.Tensor:
    """``[n, p]`` rows ``g_i = ∇l_i``."""
    return jacrev(lambda t: per_sample_losses(problem, t))(problem.theta)


def gradient(problem: Problem) -> torch.Tensor:
    return per_sample_gradients(problem).mean(0)


def jacobians(problem: Problem) -> torch.Tensor:
    """``[n, k, p]`` output Jacobians ``J_i = ∂f_i/∂θ``."""
    X, _ = data(problem)
    return jacrev(lambda t: _outputs(problem, t, X).reshape(X.shape[0], -1))(problem.theta)


def output_hessians(problem: Problem) -> torch.Tensor:
    """``[n, k, k]`` loss Hessians in output space ``∂²l_i/∂f_i²``."""
    X, Y = data(problem)
    with torch.no_grad():
        out = _outputs(problem, problem.theta, X)
    shape = out.shape[1:]

    def one(i: int) -> torch.Tensor:
        return hessian(lambda f: problem.loss.sum(f.reshape(1, *shape),
                                                  Y[i : i + 1]))(out[i].reshape(-1))

    return torch.stack([one(i) for i in range(X.shape[0])])


def per_sample_hessians(problem: Problem) -> torch.Tensor:
    """``[n, p, p]`` per-sample Hessians ``H_i = ∇²l_i``."""
    X, Y = data(problem)

    def one(i: int) -> torch.Tensor:
        return hessian(lambda t: problem.loss.sum(_outputs(problem, t, X[i : i + 1]),
                                                  Y[i : i + 1]))(problem.theta)

    return torch.stack([one(i) for i in range(X.shape[0])])


def hessian_matrix(problem: Problem) -> torch.Tensor:
    """``H = ∇²L`` (Hessian of the mean loss)."""
    return hessian(lambda t: loss(problem, t))(problem.theta)


def ggn(problem: Problem) -> torch.Tensor:
    """``G = (1/n) Σ_i J_iᵀ (∂²l_i/∂f²) J_i``."""
    J, M = jacobians(problem), output_hessians(problem)
    return torch.einsum("nkp,nkl,nlq->pq", J, M, J) / J.shape[0]


def true_fisher(problem: Problem) -> torch.Tensor:
    """``F = (1/n) Σ_i E_{y∼p(y|x_i)} [∇l(f_i, y) ∇l(f_i, y)ᵀ]``, the expectation taken exactly:
    cross-entropy by enumerating the classes (gradients from autodiff at every label, weighted by
    softmax probabilities); mse with ``y ∼ N(f_i, I)``: ``E[(f−y)(f−y)ᵀ] = I`` so ``F = (1/n) Σ J_iᵀ
    J_i``."""
    X, _ = data(problem)
    n = X.shape[0]
    if problem.loss.name == "mse":
        J = jacobians(problem)
        return torch.einsum("nkp,nkq->pq", J, J) / n
    assert problem.loss.name == "cross-entropy"
    with torch.no_grad():
        probs = torch.softmax(_outputs(problem, problem.theta, X), dim=-1)
    k = probs.shape[1]
    F = torch.zeros(problem.p, problem.p, dtype=problem.dtype)
    for c in range(k):
        labels = torch.full((n,), c, dtype=torch.long)

        def losses(t, labels=labels):
            out = _outputs(problem, t, X)
            return torch.stack([problem.loss.sum(out[i : i + 1],
                                                 labels[i : i + 1]) for i in range(n)])

        Gc = jacrev(losses)(problem.theta)  # [n, p]
        F += torch.einsum("n,np,nq->pq", probs[:, c], Gc, Gc)
    return F / n


def empirical_fisher(problem: Problem) -> torch.Tensor:
    """``F_emp = (1/n) Σ_i g_i g_iᵀ``."""
    U = per_sample_gradients(problem)
    return U.T @ U / U.shape[0]


def noise_covariance(problem: Problem) -> torch.Tensor:
    """``Σ = (1/n) Σ_i g_i g_iᵀ − g gᵀ``."""
    U = per_sample_gradients(problem)
    g = U.mean(0)
    return U.T @ U / U.shape[0] - torch.outer(g, g)


def nonuniformity(problem: Problem, indices: torch.Tensor | None = None) -> torch.Tensor:
    """``Σ_H = (1/m) Σ_i H_i² − H²`` over the samples ``indices`` (default: all)."""
    Hs = per_sample_hessians(problem)
    if indices is not None:
        Hs = Hs[indices]
    Hm = Hs.mean(0)
    return (Hs @ Hs).mean(0) - Hm @ Hm


def frobenius_cosine(A: torch.Tensor, B: torch.Tensor) -> float:
    """``⟨A, B⟩_F / (‖A‖_F ‖B‖_F)``."""
    return float((A * B).sum() / (A.norm() * B.norm()))
