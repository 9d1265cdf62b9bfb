"""Operators built from a :class:`~landscape.problem.Problem`: a sum of per-batch products.

``A V = (1/n) Σ_batches Σ_{i∈batch} A_i V``, summed over ranks under torch.distributed. A subclass
implements only its per-batch product ``_batch_product(params, x, y, V)`` through
:mod:`landscape.curvature.functional` (or ``_prepare`` / ``_apply`` when part of the work on a
batch can be shared by all the vectors of a block, as the Hessian's gradient graph is).

Products are memory-aware. A block of ``k`` vectors is multiplied in one *pass* over the data;
on each batch, ``vmap`` of them go through one vectorised call. The batch size, the block and
the vmap width come from a :class:`Plan` fitted to the problem's memory budget, from the memory
of one calibration batch (measured, not guessed, where autograd lets it be counted). On an
out-of-memory error, or when the counted memory of a product passes the budget, the plan
shrinks (cached graphs dropped, vmap width halved, batch halved, block halved, in that order)
and the pass is run again from the start; each change is recorded in ``plan.notes``.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch

from ..data import batch as B
from ..errors import LandscapeError, OutOfMemory
from ..memory import OutOfBudget, fmt_bytes, is_out_of_memory, keep_freed_memory, release
from ..problem import Problem, accumulation_dtype
from .operator import LinearOperator

#: vectors per pass when the per-batch state is rebuilt on every pass: the work they share
#: (a batch's forward and backward, about as long as one vector's product on ResNet-18) is then
#: 1/16 of a vector's cost. When all batches' state is cached there is nothing to share, and a
#: block only needs to cover the first pass.
SHARED_BLOCK, CACHED_BLOCK = 16, 8


#: callables ``hook(k)`` told of every k products a problem operator completes (progress bars)
PRODUCT_HOOKS: list = []


@contextmanager
def count_products(hook):
    """Call ``hook(k)`` after every block of k products of any problem operator, meanwhile."""
    PRODUCT_HOOKS.append(hook)
    try:
        yield
    finally:
        PRODUCT_HOOKS.remove(hook)


def as_problem(model_or_problem, loss=None, data=None, **kwargs) -> Problem:
    """A :class:`Problem` as is, or one built from ``(model, loss, data, **kwargs)``."""
    if isinstance(model_or_problem, Problem):
        if loss is not None or data is not None or kwargs:
            raise TypeError("pass either a Problem or (model, loss, data, ...), not both")
        return model_or_problem
    if loss is None or data is None:
        raise TypeError("a model needs loss= and data= (or pass a Problem)")
    return Problem(model_or_problem, loss, data, **kwargs)


@dataclass
class Plan:
    """How products run: ``batch`` samples per batch, ``block`` vectors per pass over the data,
    ``vmap`` vectors per vectorised call, up to ``cache`` bytes of per-batch state kept between
    passes (by passes of ``CACHED_BLOCK`` or more vectors only when ``wide_cache``). ``per_sample``
    bytes of working memory per sample and per vmapped vector, ``fixed`` bytes per sample besides,
    ``seconds`` per sample and vector (from the calibration batch);
    ``notes`` say what was changed and why."""

    batch: int
    block: int
    vmap: int
    cache: int
    budget: int
    fixed: float = 0.0
    per_sample: float = 0.0
    seconds: float | None = None
    setup_seconds: float | None = None
    notes: list[str] = field(default_factory=list)
    wide_cache: bool = True

    def keeps(self, width: int) -> bool:
        """Whether a pass of ``width`` vectors keeps per-batch state (within ``cache``)."""
        return width < CACHED_BLOCK or self.wide_cache

    def working(self, batch: int | None = None, block: int | None = None, vmap: int | None = None,
                p_bytes: int = 0) -> int:
        """Bytes one pass needs besides the cache: the batch's state and transients, plus the
        block's input, its rows and its output, and the vmapped call's vectors."""
        b, k, w = batch or self.batch, block or self.block, vmap or self.vmap
        return int(b * (self.fixed + self.per_sample * w) + (3 * k + 2 * w) * p_bytes)

    def describe(self) -> str:
        return f"block {self.block} (vmap {self.vmap}), batch {self.batch}"

    def to_dict(self) -> dict:
        return {"batch": self.batch, "block": self.block, "vmap": self.vmap,
                "cache_bytes": self.cache,
                "budget_bytes": self.budget, "notes": list(self.notes)}


class ProblemOperator(LinearOperator):
    """Base of the curvature operators: exact mean over all samples of per-batch products.

    ``block_size`` (vectors per pass) and ``vmap`` (vectors per vectorised call) are chosen from
    the memory budget unless given; the problem's ``batch_size`` is the largest batch used."""

    #: calibration: working memory of a batch is measured as ``activation bytes × these``
    fixed_factor = 1.0  # state kept across the vectors of a batch, per activation byte
    vector_factor = 2.0  # transient memory of one vmapped vector, per activation byte

    def __init__(self, model_or_problem, loss=None, data=None, *, block_size: int | None = None,
                 vmap: int | None = None, **kwargs) -> None:
        self.problem = as_problem(model_or_problem, loss, data, **kwargs)
        # a bfloat16/float16 problem: products in it, the batches' sum and the vectors in float32
        super().__init__(self.problem.p, accumulation_dtype(self.problem.dtype),
                         self.problem.device)
        self._asked = {"block": block_size, "vmap": vmap}
        self._plan: Plan | None = None
        self.products_seconds = 0.0
        self.memory = self.problem.budget.bytes // 4  # for the estimators' own vectors

    # ------------------------------------------------------------------ the plan
    @property
    def block_size(self) -> int:  # type: ignore[override]
        return self.plan().block

    @block_size.setter
    def block_size(self, value: int) -> None:
        self._asked["block"] = int(value)
        if self._plan is not None:
            self._plan.block = int(value)

    @property
    def p_bytes(self) -> int:
        return self.problem.p * torch.empty(0, dtype=self.problem.dtype).element_size()

    def plan(self) -> Plan:
        """The plan, fitted to the budget at the first call (one calibration batch)."""
        if self._plan is None:
            self._plan = self._make_plan()
        return self._plan

    def _calibrate(self, x, y) -> tuple[float, float]:
        """``(fixed, per_vector)`` bytes per sample on a calibration batch: here the activation
        bytes of one forward pass with autograd (counted by :class:`~.functional.SavedBytes`),
        scaled by the class factors."""
        pb = self.problem
        from .functional import SavedBytes, batch_loss

        meter = SavedBytes(exclude=[*pb.params.values(), *pb.frozen.values(), *B.tensors(x), y])
        leaves = {n: t.detach().requires_grad_(True) for n, t in pb.params.items()}
        with torch.enable_grad(), meter.hooks():
            batch_loss(pb.forward, pb.loss, leaves, x, y)
        act = meter.total / B.size(x)
        return act * self.fixed_factor, act * self.vector_factor

    def timing(self) -> tuple[float, float]:
        """``(setup, per_vector)`` seconds per sample, from one batch of the planned size: the
        work shared by a block's vectors, and one vector's product (timed after a first run)."""
        plan = self.plan()
        if plan.seconds is None:
            pb = self.problem
            x, y = pb.batches_of(plan.batch).first()
            V = pb.layout.unflatten_rows(torch.zeros(1, pb.p, dtype=pb.dtype, device=pb.device))
            sync = (
                (lambda: torch.cuda.synchronize(pb.device))
                if pb.device.type == "cuda"
                else (lambda: None)
            )
            t0 = time.perf_counter()
            state = self._prepare(-1, 0, x, y)
            sync()
            t1 = time.perf_counter()
            self._apply(state, x, y, V)
            sync()
            t2 = time.perf_counter()
            self._apply(state, x, y, V, last=True)
            sync()
            t3 = time.perf_counter()
            b = B.size(x)
            plan.setup_seconds, plan.seconds = (t1 - t0) / b, min(t2 - t1, t3 - t2) / b
            del state
        return plan.setup_seconds, plan.seconds

    def _make_plan(self) -> Plan:
        pb = self.problem
        if pb.device.type == "cpu":
            keep_freed_memory()
        budget = pb.budget.bytes
        cal = min(pb.batch_size, 16)
        x, y = pb.batches_of(cal).first()
        fixed, per_vec = self._calibrate(x, y)
        cpu = pb.device.type != "cuda"
        plan = Plan(batch=pb.batch_size, block=1, vmap=1, cache=0, budget=budget, fixed=fixed,
                    per_sample=per_vec)
        pb_ = self.p_bytes
        # the batch: the problem's, halved until one pass of one vector fits the budget
        b = pb.batch_size
        while b > 1 and not pb.coupled and plan.working(batch=b, block=1, vmap=1,
                                                        p_bytes=pb_) > budget:
            b //= 2
        if plan.working(batch=b, block=1, vmap=1, p_bytes=pb_) > budget:
            need = plan.working(batch=1 if not pb.coupled else b, block=1, vmap=1, p_bytes=pb_)
            raise LandscapeError(
                f"the memory budget {pb.budget} is too small for one "
                f"{'BatchNorm batch' if pb.coupled else 'sample'}'s product, which needs about "
                f"{fmt_bytes(need)}",
                f"raise --memory to at least {fmt_bytes(need * 1.25)}",
            )
        # the block: fewer vectors when every batch's state fits the cache (nothing to share
        # after the first pass). Each vector holds two parameter-sized rows: while the block
        # does not fit beside the batch, trade batch (down to 64) for block
        all_state = plan.fixed * len(pb.source)
        plan.wide_cache = all_state <= self._wide_cache_cap()
        cached = (
            self._caches()
            and plan.wide_cache
            and all_state <= budget - plan.working(block=CACHED_BLOCK, p_bytes=pb_)
        )
        want = max(1, int(self._asked["block"] or (CACHED_BLOCK if cached else SHARED_BLOCK)))

        def fits(k: int, b: int) -> bool:
            return plan.working(batch=b, block=k, vmap=1, p_bytes=pb_) <= budget

        k = want
        while k > 1 and not fits(k, b):
            if b > 64 and not pb.coupled and fits(k, 64):
                b //= 2
            else:
                k //= 2
        if b < pb.batch_size:
            plan.notes.append(f"batch {pb.batch_size} -> {b} to fit the budget")
        plan.batch, plan.block = b, k
        # vmap width: 1 on a CPU (a vectorised call runs no faster there and costs its memory)
        w = self._asked["vmap"] or (1 if cpu else min(k, 8))
        while w > 1 and plan.working(vmap=w, p_bytes=pb_) > budget:
            w //= 2
        plan.vmap = max(1, min(w, k))
        plan.cache = max(0, budget - plan.working(p_bytes=pb_)) if self._caches() else 0
        return plan

    def _caches(self) -> bool:
        """Whether this operator keeps per-batch state between passes."""
        return False

    def _wide_cache_cap(self) -> float:
        """Passes of ``CACHED_BLOCK`` or more vectors keep per-batch state only when all of it is at
        most this."""
        return float("inf")

    def _shrink(self, error: BaseException) -> None:
        """Make the plan smaller after an out-of-memory error (see the module docstring)."""
        plan = self.plan()
        why = "out of memory" if not isinstance(error, OutOfBudget) else f"over budget ({error})"
        release(self.device)
        if self._drop_cache():
            plan.cache = 0
            plan.notes.append(f"{why}: cached batch state dropped")
        elif plan.vmap > 1:
            plan.vmap //= 2
            plan.notes.append(f"{why}: vmap -> {plan.vmap}")
        elif plan.batch > 1 and not self.problem.coupled:
            plan.batch //= 2
            plan.notes.append(f"{why}: batch -> {plan.batch}")
        elif plan.block > 1:
            plan.block //= 2
            plan.notes.append(f"{why}: block -> {plan.block}")
        else:
            raise OutOfMemory(
                f"out of memory even with one sample and one vector per product ({why}; budget "
                f"{self.problem.budget})",
                "free memory on the device, measure fewer parameters "
                "(--params), or run on a larger device",
            ) from error

    def _drop_cache(self) -> bool:
        """Free state kept between passes; True if there was any."""
        return False

    # ------------------------------------------------------------------ products
    def _batch_product(self, params, x, y, V: dict) -> dict:  # pragma: no cover - abstract
        raise NotImplementedError

    def _prepare(self, i: int, start: int, x, y, width: int = 1):
        """State shared by the ``width`` vectors of a pass on batch ``i`` (first sample
        ``start``)."""

    def _apply(self, state, x, y, V: dict, last: bool = False) -> dict:
        """The products of the vectors ``V`` on batch ``(x, y)``; ``last``: no product on this
        batch follows in this pass (``state`` may be released)."""
        return self._batch_product(self.problem.params, x, y, V)

    def matmat(self, V: torch.Tensor) -> torch.Tensor:
        """``A V`` for ``V: [p, k]``; counts k products. Blocks of ``block_size`` vectors."""
        if V.dim() != 2 or V.shape[0] != self.shape[0]:
            raise ValueError(f"expected a [{self.shape[0]}, k] block, got {tuple(V.shape)}")
        V = V.to(device=self.device, dtype=self.dtype)
        out = None
        i = 0
        while i < V.shape[1]:
            k = min(self.block_size, V.shape[1] - i)
            part = self._matmat(V[:, i : i + k])
            for hook in PRODUCT_HOOKS:
                hook(k)
            if out is None:
                if k == V.shape[1]:
                    self.matvecs += k
                    return part
                out = torch.empty(V.shape, dtype=self.dtype, device=self.device)
            out[:, i : i + k] = part
            self.matvecs += k
            i += k
        return out

    def _matmat(self, V: torch.Tensor) -> torch.Tensor:
        from .. import distributed

        while True:
            try:
                t0 = time.perf_counter()
                out = self._pass(V)
                self.products_seconds += time.perf_counter() - t0
                return out
            except Exception as e:  # only out-of-memory errors are retried
                if not is_out_of_memory(e):
                    raise
                if distributed.active():
                    raise OutOfMemory(
                        f"out of memory in a data-parallel product ({e})",
                        "set a smaller --memory (every rank plans from it) or --product-batch",
                    ) from e
                self._shrink(e)

    def _pass(self, V: torch.Tensor) -> torch.Tensor:
        """One pass over the data for the block ``V: [p, k]``: ``[p, k]``."""
        pb = self.problem
        plan = self.plan()
        k = V.shape[1]
        out = torch.zeros(k, pb.p, dtype=self.dtype, device=pb.device)
        # [k, p] in the products' dtype, once per pass: a column copy per batch and vector was 5%
        # of a pass
        rows_all = V.T.to(pb.dtype).contiguous()
        names, offsets = pb.layout.names, pb.layout.offsets
        start = 0
        for i, (x, y) in enumerate(pb.batches_of(plan.batch)):
            state = self._prepare(i, start, x, y, k)
            for j in range(0, k, plan.vmap):
                rows = rows_all[j : j + plan.vmap]
                res = self._apply(state, x, y, pb.layout.unflatten_rows(rows),
                                  last=j + plan.vmap >= k)
                for name, o, shape in zip(names, offsets, pb.layout.shapes):
                    out[j : j + rows.shape[0],
                        o : o + shape.numel()] += res[name].reshape(rows.shape[0], -1)
                del res, rows
            del state
            start += B.size(x)
        out /= pb.n
        if self.passes_left is not None:
            self.passes_left -= 1
        return pb.reduce(out).T

    def plan_report(self) -> dict:
        """What the products ran with (for reports): the plan and the budget's source."""
        plan = self.plan()
        return {**plan.to_dict(), "budget": str(self.problem.budget), "describe": plan.describe()}
