"""The linear-operator interface every curvature matrix implements.

An operator is a symmetric ``[p, p]`` matrix known only through products with blocks of
vectors ``V: [p, k] -> A V: [p, k]``. It carries ``shape``, ``dtype``, ``device`` and a
``matvecs`` counter (a block of k vectors counts k), so that every estimate can report its cost.
Estimators accept an operator or a dense tensor (wrapped in :class:`DenseOperator`), which makes
them testable on a random 10x10 matrix.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch


class LinearOperator:
    """Base class: subclasses implement ``_matmat(V)`` for a block ``V: [p, k]``.

    ``block_size`` caps how many vectors go through ``_matmat`` at once (memory grows with it);
    larger blocks are split. ``matvecs`` counts every vector multiplied.
    """

    block_size: int = 64
    #: passes over the data the running estimate will still make (None: unknown); an operator
    #: that keeps per-batch state between passes keeps none on the last (:func:`expected_passes`)
    passes_left: int | None = None
    #: bytes an estimator may spend on its own vectors (Lanczos bases, probe blocks); None: no limit
    #: beyond the estimators' defaults. Problem operators set a share of the memory budget.
    memory: int | None = None

    def __init__(self, p: int, dtype: torch.dtype, device: torch.device | str) -> None:
        self.shape = (p, p)
        self.dtype = dtype
        self.device = torch.device(device)
        self.matvecs = 0

    def _matmat(self, V: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def matmat(self, V: torch.Tensor) -> torch.Tensor:
        """``A V`` for ``V: [p, k]``; counts k products."""
        if V.dim() != 2 or V.shape[0] != self.shape[0]:
            raise ValueError(f"expected a [{self.shape[0]}, k] block, got {tuple(V.shape)}")
        V = V.to(device=self.device, dtype=self.dtype)
        self.matvecs += V.shape[1]
        out = [
            self._matmat(V[:, i : i + self.block_size])
            for i in range(0, V.shape[1], self.block_size)
        ]
        return out[0] if len(out) == 1 else torch.cat(out, dim=1)

    def matvec(self, v: torch.Tensor) -> torch.Tensor:
        """``A v`` for ``v: [p]``."""
        return self.matmat(v.reshape(-1, 1))[:, 0]

    def __matmul__(self, x: torch.Tensor) -> torch.Tensor:
        return self.matvec(x) if x.dim() == 1 else self.matmat(x)

    def dense(self) -> torch.Tensor:
        """The full ``[p, p]`` matrix (p products; for tests and tiny models)."""
        return self.matmat(torch.eye(self.shape[0], dtype=self.dtype, device=self.device))

    def to_scipy(self):
        """A ``scipy.sparse.linalg.LinearOperator`` view (float64 numpy in and out)."""
        from scipy.sparse.linalg import LinearOperator as ScipyOp

        def mm(x: np.ndarray) -> np.ndarray:
            x2 = x.reshape(self.shape[0], -1)
            y = self.matmat(torch.as_tensor(x2, dtype=self.dtype, device=self.device))
            y = y.detach().cpu().double().numpy()
            return y.reshape(x.shape) if x.ndim == 1 else y

        return ScipyOp(self.shape, matvec=mm, matmat=mm, rmatvec=mm, dtype=np.float64)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(p={self.shape[0]}, dtype={self.dtype}, device={self.device})"


class DenseOperator(LinearOperator):
    """A dense symmetric matrix as an operator."""

    block_size = 1 << 30

    def __init__(self, A: torch.Tensor) -> None:
        if A.dim() != 2 or A.shape[0] != A.shape[1]:
            raise ValueError(f"expected a square matrix, got shape {tuple(A.shape)}")
        super().__init__(A.shape[0], A.dtype, A.device)
        self.A = A

    def _matmat(self, V: torch.Tensor) -> torch.Tensor:
        return self.A @ V


@contextmanager
def expected_passes(op: LinearOperator, n: int) -> Iterator[None]:
    """Within the block, ``op`` (and any operator it wraps, through ``.op``) will make ``n`` more
    passes and no more: state kept between passes, such as a Hessian's batch graphs, is not
    worth keeping on the last one (a one-pass trace then holds no graph beyond its batch)."""
    chain = [op]
    while hasattr(chain[-1], "op"):
        chain.append(chain[-1].op)
    for o in chain:
        o.passes_left = n
    try:
        yield
    finally:
        for o in chain:
            o.passes_left = None


def as_operator(A: LinearOperator | torch.Tensor) -> LinearOperator:
    """An operator as is; a dense tensor wrapped in :class:`DenseOperator`."""
    if isinstance(A, torch.Tensor):
        return DenseOperator(A)
    if not hasattr(A, "matmat"):
        raise TypeError(f"expected a linear operator or a square tensor, got {type(A).__name__}")
    return A


class Promoted(LinearOperator):
    """``op`` seen in a wider dtype (float64): estimators keep their vectors and reductions in
    that precision while each product runs in ``op``'s own dtype — Lanczos' orthogonalisation
    and Rayleigh quotients then lose nothing beyond the product's own rounding."""

    def __init__(self, op: LinearOperator, dtype: torch.dtype = torch.float64) -> None:
        super().__init__(op.shape[0], dtype, op.device)
        self.op = op
        self.block_size = op.block_size
        self.memory = op.memory

    def _matmat(self, V: torch.Tensor) -> torch.Tensor:
        return self.op.matmat(V.to(self.op.dtype)).to(self.dtype)


class Restricted(LinearOperator):
    """The principal block ``A[idx, idx]`` of ``op``: a vector of the block's coordinates is
    placed into zeros of ``op``'s size, multiplied, and read back at ``idx``. A block of one
    parameter tensor (the query part of a fused attention projection) costs what ``op`` costs."""

    def __init__(self, op: LinearOperator, idx: torch.Tensor) -> None:
        super().__init__(int(idx.numel()), op.dtype, op.device)
        self.op, self.idx = op, idx.to(op.device)
        self.block_size = op.block_size
        self.memory = op.memory

    def _matmat(self, V: torch.Tensor) -> torch.Tensor:
        full = V.new_zeros(self.op.shape[0], V.shape[1])
        full[self.idx] = V
        return self.op.matmat(full)[self.idx]


class Deflated(LinearOperator):
    """``P A P + s X Xᵀ`` with ``P = I − X Xᵀ`` for orthonormal columns ``X``: ``op`` with the
    span of ``X`` moved to the eigenvalue ``s`` (chosen outside the end being searched) and every
    other eigenpair of ``A`` orthogonal to ``X`` kept. Its extreme eigenvalue is the one an
    eigensolver that found ``X`` has not seen (a further copy of a repeated one among them)."""

    def __init__(self, op: LinearOperator, X: torch.Tensor, shift: float) -> None:
        super().__init__(op.shape[0], op.dtype, op.device)
        self.op, self.X, self.shift = op, X.to(op.device, op.dtype), float(shift)
        self.block_size = op.block_size
        self.memory = op.memory

    def _matmat(self, V: torch.Tensor) -> torch.Tensor:
        c = self.X.T @ V
        W = self.op.matmat(V - self.X @ c)
        return W - self.X @ (self.X.T @ W) + self.shift * (self.X @ c)

