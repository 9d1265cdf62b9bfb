"""Real data at real size: streamed data equal in-memory data, memory-aware products honour their
budget and shrink on out-of-memory errors, no gradient graph outlives its product, and the data
checks (shuffling, random augmentation, bad batches) refuse with one line.

The data are a BatchNorm CNN's images given five ways by one factory (``make(kind=...)``):
tensors, a map-style Dataset, a DataLoader over it (batch 7: uneven batches), a DataLoader over
an IterableDataset (a stream), and a DataLoader with a sampler of its own order. Every metric
and command must give the same numbers from each (float64, to 1e-12 relative).
"""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
import textwrap
import weakref
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

import landscape
from landscape.cli.app import app
from landscape.curvature import functional as fx
from landscape.errors import LandscapeError
from tests.cases import TinyCNN

F64 = torch.float64

DATA = textwrap.dedent("""
    import os
    import torch
    from torch.utils.data import DataLoader, Dataset, IterableDataset

    def tensors(n=29, seed=0):
        g = torch.Generator().manual_seed(seed)
        X = torch.randn(n, 1, 6, 6, generator=g, dtype=torch.float64)
        return X, torch.randint(0, 3, (n,), generator=g)

    class Items(Dataset):
        def __init__(self, X, Y, log=None, noise=False):
            self.X, self.Y, self.log, self.noise = X, Y, log, noise
        def __len__(self):
            return len(self.X)
        def __getitem__(self, i):
            if self.log:
                with open(self.log, "a") as f:
                    f.write(f"{os.environ.get('RANK', '-')} {int(i)}\\n")
            x = self.X[i] + (0.1 * torch.randn_like(self.X[i]) if self.noise else 0)
            return x, int(self.Y[i])

    class Stream(IterableDataset):
        def __init__(self, X, Y):
            self.X, self.Y = X, Y
        def __iter__(self):
            return iter(zip(self.X, self.Y.tolist()))

    def make(kind="tensors", n=29, batch=7, log=None):
        X, Y = tensors(n)
        if kind == "tensors":
            return X, Y
        if kind == "dataset":
            return Items(X, Y, log)
        if kind == "loader":
            return DataLoader(Items(X, Y, log), batch_size=batch)
        if kind == "stream":
            return DataLoader(Stream(X, Y), batch_size=batch)
        if kind == "ordered":
            return DataLoader(Items(X, Y), batch_size=batch, sampler=list(reversed(range(n))))
        if kind == "shuffled":
            return DataLoader(Items(X, Y), batch_size=batch, shuffle=True)
        if kind == "augmented":
            return DataLoader(Items(X, Y, noise=True), batch_size=batch)
        if kind == "dict":
            return DataLoader(Items(X, Y), batch_size=batch,
                              collate_fn=lambda items: {"image": items})
        if kind == "empty":
            return DataLoader(Items(X[:0], Y[:0]), batch_size=batch)
        raise ValueError(kind)
""")

MODEL = textwrap.dedent('''
    import torch
    from tests.cases import TinyCNN

    def cnn():
        return TinyCNN().double()
''')

KINDS = ["dataset", "loader", "stream", "ordered"]


def _model(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = TinyCNN().double()
    model.train()
    with torch.no_grad():  # non-trivial running statistics
        model(torch.randn(64, 1, 6, 6, dtype=F64) * 1.5 + 0.3)
    return model.eval()


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("stream")
    (d / "data.py").write_text(DATA)
    (d / "models.py").write_text(MODEL)
    torch.save(_model().state_dict(), d / "cnn.pt")
    torch.save(_model(1).state_dict(), d / "cnn_b.pt")
    return d


def _data(files: Path, kind: str, **kw):
    from landscape.factory import load_factory

    return load_factory(f"{files / 'data.py'}:make")(kind=kind, **kw)


def _run(files: Path, *args: str, kind: str = "tensors", extra=()):
    env = {"PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    old = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = env["PYTHONPATH"] + (os.pathsep + old if old else "")
    try:
        return CliRunner().invoke(app, [*args, "--model", f"{files / 'models.py'}:cnn", "--data",
                                        f"{files / 'data.py'}:make", "--data-arg", f"kind={kind}",
                                        "--dtype", "float64", *extra])
    finally:
        if old is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = old


# ------------------------------------------------------------- library: streamed = in memory
def _problems(files, kind, **kw):
    model = _model()
    a = landscape.Problem(model, "cross-entropy", _data(files, "tensors"), batch_size=5, **kw)
    b = landscape.Problem(model, "cross-entropy", _data(files, kind), batch_size=4, resident=False,
                          **kw)
    return a, b


@pytest.mark.parametrize("kind", KINDS)
def test_streamed_problem_equals_in_memory(files, kind):
    a, b = _problems(files, kind)
    assert not b.resident and b.n == a.n == 29
    assert abs(a.loss_value() - b.loss_value()) <= 1e-14 and a.accuracy() == b.accuracy()
    ga, gb = a.gradient()[1], b.gradient()[1]
    assert torch.allclose(ga, gb, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("kind", ["loader", "stream"])
@pytest.mark.parametrize("make", [
    lambda pb: landscape.Hessian(pb),
    lambda pb: landscape.Hessian(pb, engine="jvp"),
    lambda pb: landscape.GGN(pb),
    lambda pb: landscape.Fisher(pb, mc_samples=3, seed=4),
    lambda pb: landscape.EmpiricalFisher(pb, chunk=3),
    lambda pb: landscape.NoiseCovariance(pb, chunk=3),
    lambda pb: landscape.NonUniformity(pb, samples=17, seed=2, chunk=3),
], ids=["hessian", "hessian-jvp", "ggn", "fisher", "empirical-fisher", "noise", "nonuniformity"])
def test_streamed_products_equal_in_memory(files, kind, make):
    a, b = _problems(files, kind)
    V = torch.randn(a.p, 3, dtype=F64, generator=torch.Generator().manual_seed(0))
    A, B = make(a).matmat(V), make(b).matmat(V)
    assert torch.allclose(A, B, rtol=1e-12, atol=1e-14 * float(A.abs().max()))


def test_samples_subset_reads_only_its_samples(files, tmp_path):
    log = tmp_path / "reads.log"
    pb = landscape.Problem(_model(), "cross-entropy", _data(files, "loader", log=str(log)),
                           samples=10, seed=3,
                           resident=False)
    log.write_text("")
    pb.loss_value()
    read = sorted({int(line.split()[1]) for line in log.read_text().splitlines()})
    assert read == pb.indices.tolist() and len(read) == 10


def test_sampler_order_and_drop_last_are_kept(files):
    from torch.utils.data import DataLoader

    from landscape.data.source import DatasetSource, as_source

    src = as_source(_data(files, "ordered"))
    assert isinstance(src, DatasetSource) and src.index.tolist() == list(reversed(range(29)))
    X, _ = _data(files, "tensors")
    x0, _ = next(iter(src.batches(3)))
    assert torch.equal(x0, X[[28, 27, 26]])
    items = _data(files, "dataset")
    assert len(as_source(DataLoader(items, batch_size=5, drop_last=True))) == 25


def test_bn_batch_is_the_statistics_batch(files):
    """In train mode BatchNorm takes its statistics over --bn-batch samples: the Hessian depends
    on it, not on the product batch (which cannot split a statistics batch)."""
    model = _model()
    X, Y = _data(files, "tensors")

    def dense_reference(group: int) -> torch.Tensor:
        train = landscape.Problem(model, "cross-entropy", (X, Y), train_mode=True, bn_batch=group)
        theta = train.theta

        def loss(t):
            params = train.layout.unflatten(t)
            return sum(train.loss.sum(train.forward(params, X[i:i + group]), Y[i:i + group])
                       for i in range(0, X.shape[0], group)) / X.shape[0]

        # reverse over reverse: torch.func.hessian (forward over reverse) returns an asymmetric
        # matrix through train-mode batch_norm in torch 2.13
        return torch.func.jacrev(torch.func.grad(loss))(theta)

    ref8 = dense_reference(8)
    for product_batch in (3, 100):
        pb = landscape.Problem(model, "cross-entropy", (X, Y), train_mode=True, bn_batch=8,
                               batch_size=product_batch)
        assert pb.bn_batch == 8 and [x.shape[0] for x, _ in pb.batches] == [8, 8, 8, 5]
        assert torch.allclose(landscape.Hessian(pb).dense(), ref8, rtol=1e-10, atol=1e-12)
    assert (dense_reference(16) - ref8).abs().max() > 1e-3  # the statistics batch matters


# ----------------------------------------------------------------------------- CLI: every command
def _numbers(obj, path=""):
    skip = ("seconds", "data", "products", "settings", "identity", "checkpoint",
            "points_per_second", "plan")
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            if k in skip:
                continue
            out.update(_numbers(v, f"{path}.{k}"))
        return out
    if isinstance(obj, list):
        out = {}
        for i, v in enumerate(obj):
            out.update(_numbers(v, f"{path}[{i}]"))
        return out
    if isinstance(obj, (int, float)) and not isinstance(obj, bool):
        return {path: float(obj)}
    return {}


COMMANDS = {
    "sharpness": ["sharpness", "{ck}", "-m", "trace,eig,frobenius,density", "--probes", "6",
                  "--top-k", "2",
                  "--runs", "2", "--steps", "6"],
    "fisher": ["fisher", "{ck}", "--probes", "4", "--mc-samples", "2"],
    "noise": ["noise", "{ck}", "--s-samples", "20"],
    "stability": ["stability", "{ck}", "--lr", "0.1", "--batch-size", "4", "--probes", "4"],
    "slice": ["slice", "{ck}", "--dims", "2", "--points", "4", "--directions", "random"],
    "interpolate": ["interpolate", "{ck}", "{ck_b}", "--points", "5"],
}


@pytest.mark.parametrize("command", list(COMMANDS))
def test_every_command_gives_the_same_numbers_streamed(files, command):
    args = [a.format(ck=files / "cnn.pt", ck_b=files / "cnn_b.pt") for a in COMMANDS[command]]
    runs = {}
    for kind in ("tensors", "loader", "stream"):
        r = _run(files, *args, kind=kind, extra=["--json", "--product-batch", "4"])
        assert r.exit_code == 0, r.output
        runs[kind] = json.loads(r.stdout)
    ref = _numbers(runs["tensors"])
    assert len(ref) > 3
    for kind in ("loader", "stream"):
        got = _numbers(runs[kind])
        assert set(got) == set(ref), kind
        for key, v in ref.items():
            assert abs(got[key] - v) <= 1e-12 * max(1.0, abs(v)), (kind, key, got[key], v)
    assert (
        runs["loader"]["data"]["kind"] == "dataset" and runs["stream"]["data"]["kind"] == "stream"
    )


def test_factory_arguments_reach_the_factory(files):
    r = _run(files, "sharpness", str(files / "cnn.pt"), "-m", "trace", "--probes", "3", "--json",
             kind="loader",
             extra=["--data-arg", "n=17"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["samples"] == 17


# ----------------------------------------------------------------------------- memory
def test_a_gradient_graph_is_freed_with_its_product():
    pb = landscape.Problem(_model(), "cross-entropy", (torch.randn(12, 1, 6, 6, dtype=F64),
                                                       torch.arange(12) % 3))
    gg = fx.GradientGraph(pb.forward, pb.loss, pb.params, *pb.batches.first())
    ref = weakref.ref(gg)
    del gg
    gc.collect()
    assert ref() is None, "a GradientGraph outlived its owner (a reference cycle through autograd)"
    built = []
    real = fx.GradientGraph.__init__

    def init(self, *args, **kwargs):
        real(self, *args, **kwargs)
        built.append(weakref.ref(self))

    fx.GradientGraph.__init__ = init
    try:
        H = landscape.Hessian(pb, cache_bytes=0)
        H.matvec(torch.ones(pb.p, dtype=F64))
    finally:
        fx.GradientGraph.__init__ = real
    gc.collect()
    assert built and all(r() is None for r in built)


def _rss() -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def test_memory_stays_flat_over_many_products():
    """Each uncached product builds and frees three batches' graphs (about 8 MiB each): with a
    graph leaking per product, 12 products would add about 300 MiB."""
    if _rss() is None:
        pytest.skip("no /proc/self/status on this platform")
    g = torch.Generator().manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Linear(64, 512),
        torch.nn.Tanh(),
        torch.nn.Linear(512, 512),
        torch.nn.Tanh(),
        torch.nn.Linear(512, 10),
    )
    X, Y = torch.randn(768, 64, generator=g), torch.randint(0, 10, (768,), generator=g)
    H = landscape.Hessian(model, "cross-entropy", (X, Y), batch_size=256, cache_bytes=0)
    v = torch.randn(H.shape[0], generator=g)
    for _ in range(3):
        H.matvec(v)
    before = _rss()
    for _ in range(12):
        H.matvec(v)
    gc.collect()
    assert _rss() - before < 48 << 20


def test_an_estimate_of_one_pass_keeps_no_graph_and_gives_the_same_numbers():
    """The estimators tell the Hessian how many passes they will make: a trace whose probes fit
    one pass keeps no batch graph (it would never be read again), one of many passes keeps them
    (each is read on every pass), and both give the numbers of an uncached Hessian."""
    g = torch.Generator().manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.Tanh(), torch.nn.Linear(32, 4))
    X, Y = torch.randn(300, 16, generator=g), torch.randint(0, 4, (300,), generator=g)

    def hessian(**kw):
        return landscape.Hessian(model, "cross-entropy", (X, Y), batch_size=100,
                                 dtype="float64", **kw)

    for probes, kept in ((4, False), (40, True)):
        H, plain = hessian(), hessian(cache_bytes=0)
        for estimate in (landscape.trace, landscape.frobenius):
            assert estimate(H, probes=probes, seed=1).value == estimate(plain, probes=probes,
                                                                         seed=1).value
        assert (len(H._graphs) > 0) is kept and H.passes_left is None


def test_a_dataset_four_times_the_budget_runs_within_it(files):
    """A generated Dataset whose samples' graphs fill four budgets: streamed (not resident), the
    cache holds what fits, every graph counted stays within the budget, and the numbers are the
    unconstrained ones."""
    from torch.utils.data import Dataset

    class Generated(Dataset):
        def __len__(self):
            return 256

        def __getitem__(self, i):
            g = torch.Generator().manual_seed(i)
            return torch.randn(1, 16, 16, generator=g, dtype=F64), int(
                torch.randint(0, 10, (1,), generator=g)
            )

    torch.manual_seed(
        0
    )  # activations far larger than the parameters, as in a real convolutional net
    nn = torch.nn
    model = nn.Sequential(nn.Conv2d(1, 8, 3), nn.Tanh(), nn.Conv2d(8, 8, 3), nn.Tanh(),
                          nn.AdaptiveAvgPool2d(1),
                          nn.Flatten(), nn.Linear(8, 10)).double()
    free = landscape.Hessian(model, "cross-entropy", Generated(), batch_size=32)
    per_sample = free.plan().fixed  # measured graph bytes per sample
    budget = int(
        per_sample * 256 / 4 + 12 * free.p_bytes
    )  # a quarter of the graphs, and a few vectors
    tight = landscape.Hessian(model, "cross-entropy", Generated(), batch_size=32, memory=budget)
    V = torch.randn(free.shape[0], 4, dtype=F64, generator=torch.Generator().manual_seed(1))
    A = free.matmat(V)
    B = tight.matmat(V)
    B2 = tight.matmat(V)  # a second pass: cached graphs plus rebuilt ones
    assert not tight.problem.resident and tight.problem.budget.bytes == budget
    plan = tight.plan()
    assert plan.cache + plan.working(p_bytes=tight.p_bytes) <= budget
    assert 0 < tight.cache_report()["cached_bytes"] <= plan.cache < per_sample * 256
    assert torch.allclose(A, B, rtol=1e-12, atol=1e-14) and torch.equal(B, B2)


def test_out_of_budget_shrinks_the_plan_and_retries():
    """A device with less memory than planned for (the budget lowered after planning): the
    counted graph passes it, the batch halves until it fits, and the result is unchanged."""
    g = torch.Generator().manual_seed(0)
    X, Y = torch.randn(40, 1, 6, 6, generator=g, dtype=F64), torch.randint(0, 3, (40,), generator=g)
    ref = landscape.Hessian(_model(), "cross-entropy", (X, Y), batch_size=16)
    H = landscape.Hessian(_model(), "cross-entropy", (X, Y), batch_size=16)
    plan = H.plan()
    plan.budget = int(plan.fixed * 5 + 4 * H.p_bytes)  # room for about four samples' graph
    v = torch.randn(H.shape[0], dtype=F64, generator=g)
    assert torch.allclose(H.matvec(v), ref.matvec(v), rtol=1e-12, atol=1e-15)
    assert plan.batch <= 4 and any(
        "over budget" in note and "batch ->" in note for note in plan.notes
    )


def test_out_of_memory_error_shrinks_and_too_small_a_budget_is_refused(monkeypatch):
    g = torch.Generator().manual_seed(0)
    X, Y = torch.randn(30, 1, 6, 6, generator=g, dtype=F64), torch.randint(0, 3, (30,), generator=g)
    H = landscape.Hessian(_model(), "cross-entropy", (X, Y), batch_size=16)
    ref = landscape.Hessian(_model(), "cross-entropy", (X, Y), batch_size=16)
    real = fx.GradientGraph.hvp

    def failing(self, V, last=False):  # a device out of memory beyond 5 samples
        if self._batch > 5:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(self, V, last)

    real_init = fx.GradientGraph.__init__

    def init(self, forward, loss, params, x, y, meter=None):
        real_init(self, forward, loss, params, x, y, meter)
        self._batch = x.shape[0]

    monkeypatch.setattr(fx.GradientGraph, "__init__", init)
    monkeypatch.setattr(fx.GradientGraph, "hvp", failing)
    v = torch.randn(H.shape[0], dtype=F64, generator=g)
    assert torch.allclose(H.matvec(v), ref.matvec(v), rtol=1e-12, atol=1e-15)
    assert H.plan().batch <= 4 and any("out of memory" in n for n in H.plan().notes)
    with pytest.raises(LandscapeError, match="too small for one sample's product"):
        landscape.Hessian(_model(), "cross-entropy", (X, Y), memory=1000).plan()


# -------------------------------------------------------------- the command line's checks
def _one_line_error(r, word: str) -> None:
    assert r.exit_code == 2, r.output
    lines = [ln for ln in r.output.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and word in lines[0], r.output


@pytest.mark.parametrize("kind, word", [
    ("shuffled", "shuffles"), ("augmented", "different data"), ("dict",
                                                                "not an (inputs, targets) pair"),
    ("empty", "no samples"),
])
def test_bad_data_is_refused_in_one_line(files, kind, word):
    _one_line_error(_run(files, "sharpness", str(files / "cnn.pt"), "-m", "trace", "--probes", "3",
                         kind=kind), word)


def test_random_data_can_be_allowed_and_is_recorded(files):
    r = _run(files, "sharpness", str(files / "cnn.pt"), "-m", "trace", "--probes", "3", "--json",
             "--allow-random-data", kind="shuffled")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["data"]["allow_random_data"] is True


def test_budget_and_out_of_memory_errors_are_user_errors(files, monkeypatch):
    r = _run(files, "sharpness", str(files / "cnn.pt"), "-m", "trace", "--probes", "3", "--memory",
             "2kB")
    _one_line_error(r, "raise --memory to at least")

    def oom(*a, **k):
        raise RuntimeError("CUDA out of memory. Tried to allocate 20.00 GiB")

    monkeypatch.setattr(landscape.Hessian, "_pass", oom)
    r = _run(files, "sharpness", str(files / "cnn.pt"), "-m", "trace", "--probes", "3")
    _one_line_error(r, "while computing trace: out of memory even with one sample and one vector")
    assert "nothing was written" in r.output


def test_plan_predicts_before_computing(files):
    r = _run(files, "sharpness", str(files / "cnn.pt"), "-m", "trace,eig,density", "--probes", "30",
             "--plan",
             "--json", "--runs", "3", "--steps", "7")
    assert r.exit_code == 0, r.output
    plan = json.loads(r.stdout)["plan"]
    assert (
        plan["metrics"]["trace"]["products"] == 30 and plan["metrics"]["density"]["products"] == 21
    )
    assert plan["n"] == 29 and plan["peak_bytes"] > 0 and plan["seconds"] >= 0
    assert "metrics" not in json.loads(r.stdout)  # nothing was measured
    r = _run(files, "info", str(files / "cnn.pt"), "--plan", "--metric", "eig", "--top-k", "3")
    assert r.exit_code == 0 and "expected: about" in r.output


def test_torchrun_reads_only_each_ranks_shard(files, tmp_path):
    """Two gloo processes on a streamed Dataset: the single-process numbers to 1e-10, and each
    rank reads only its own samples (positions rank, rank + 2, ...)."""
    log = tmp_path / "reads.log"
    args = ["sharpness", str(files / "cnn.pt"), "-m", "trace,eig", "--probes", "6", "--json",
            "--model",
            f"{files / 'models.py'}:cnn", "--data", f"{files / 'data.py'}:make", "--data-arg",
            "kind=loader",
            "--data-arg", f"log={log}", "--dtype", "float64", "--product-batch", "4"]
    root = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": root}
    single = subprocess.run([sys.executable, "-m", "landscape", *args], capture_output=True,
                            text=True, env=env,
                            timeout=240, check=False)
    assert single.returncode == 0, single.stderr[-2000:]
    log.write_text("")
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                           "--nproc-per-node", "2",
                           "-m", "landscape", *args], capture_output=True, text=True, env=env,
                          timeout=240,
                          cwd=tmp_path, check=False)
    if (
        proc.returncode != 0 and "Address already in use" in proc.stderr
    ):  # pragma: no cover - port race
        pytest.skip("no free port for the rendezvous")
    assert proc.returncode == 0, proc.stderr[-2000:]
    a, b = json.loads(single.stdout), json.loads(proc.stdout)
    for key in ("estimate", "stderr"):
        assert abs(a["metrics"]["trace"][key] - b["metrics"]["trace"][key]) <= 1e-10 * abs(
            a["metrics"]["trace"][key]
        )
    for x, y in zip(a["metrics"]["eigenvalues"]["values"], b["metrics"]["eigenvalues"]["values"]):
        assert abs(x - y) <= 1e-10 * abs(x)
    reads: dict[str, set] = {}
    for line in log.read_text().splitlines():
        rank, i = line.split()
        reads.setdefault(rank, set()).add(int(i))
    assert set(reads) == {"0", "1"}
    # its own positions, and sample 0 (read once, to learn the data's shapes and task)
    assert all(i % 2 == 0 for i in reads["0"]) and all(i % 2 == 1 for i in reads["1"] - {0})
    assert reads["0"] | reads["1"] == set(range(29)) and len(reads["1"]) <= 15
