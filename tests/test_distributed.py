"""Data-parallel runs: two gloo processes on the CPU give the single-process numbers.

A 2-rank ``torch.distributed`` group (``torch.multiprocessing`` spawn, gloo, TCP on localhost)
computes, on the shards ``indices[rank::2]`` of an uneven data set (37 samples, batches of 8),
the Hessian trace (Hutchinson, seeded probes), the extreme eigenvalues (Lanczos), the loss and
gradient, and two data-parallel training steps (SAM: two gradient all-reduces per step, with
curvature tracking), and three steps of each optimizer with data-parallel terms of its own
(the TRACERs' Hessian-vector product, the covariance noise's per-sample moments); the parent
compares them with the same computations in one process. The results differ only by the order of
floating-point sums, so float64 agreement is ~1e-12.
A second test runs the real command line under ``torch.distributed.run`` (torchrun).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from tests import cases

WORLD = 2
#: optimizers whose step has data-parallel terms of its own, with settings that make them count
OWN_TERMS = {"sgd-tracer": {"rho": 0.5}, "adam-tracer": {"rho": 0.5},
             "lb-diag-noise": {"small_batch": 2, "noise_steps": 3},
             "lb-full-noise": {"small_batch": 2, "noise_steps": 3}}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _train_config():
    from landscape.train import TrainConfig

    return TrainConfig(model="mlp", model_kwargs={"widths": [5]}, data="digits",
                       data_kwargs={"n_train": 40, "test_fraction": 0.2}, optimizer="sam", lr=0.1,
                       batch_size=10, steps=2, dtype="float64", eval_every=1, track=["trace"],
                       every=1,
                       probes=4, track_samples=21, plot=False)


def compute(run_dir: Path) -> dict:
    """The numbers compared between one and two processes (any process layout)."""
    from landscape import Hessian, Problem, top_eigenvalues, trace
    from landscape.train import train

    model, loss, data = cases.mlp_ce(n=37)
    pb = Problem(model, loss, data, batch_size=8)
    H = Hessian(pb)
    tr = trace(H, probes=30, seed=3)
    eig = top_eigenvalues(H, k=2, which="both", tol=1e-10, seed=1)
    value, grad = pb.gradient()
    from landscape.train import loop

    shards, original = [], loop._Session._sharded_closure

    def spy(self, xb, yb):  # records (global batch, this rank's shard) of each step
        shards.append((xb.shape[0], xb[self.rank :: self.world].shape[0]))
        return original(self, xb, yb)

    loop._Session._sharded_closure = spy
    try:
        result = train(_train_config(), run_dir)
    finally:
        loop._Session._sharded_closure = original
    return {"shards": shards, "local_samples": sum(x.shape[0] for x, _ in pb.batches), "n": pb.n,
            "trace": (tr.value, tr.stderr), "eig": eig.values.tolist(),
            "residuals": eig.residuals.tolist(),
            "loss": value, "grad": grad.tolist(), "final": result.final,
            "own_terms": {name: _three_steps(name, hyper, run_dir) for name,
                          hyper in OWN_TERMS.items()}}


def _three_steps(name: str, hyper: dict, run_dir: Path) -> dict:
    """Three steps of the training loop's session with optimizer ``name``: losses and parameters."""
    from landscape.train import TrainConfig
    from landscape.train.loop import _Session
    from landscape.train.run import RunDir

    cfg = TrainConfig(model="mlp", model_kwargs={"widths": [5]}, data="digits",
                      data_kwargs={"n_train": 40, "test_fraction": 0.2}, optimizer=name,
                      hyper=hyper,
                      batch_size=10, steps=3, dtype="float64", plot=False)
    session = _Session(cfg, RunDir(run_dir / name))
    losses = [session.train_step() for _ in range(3)]
    opt = session.optimizer
    noise = getattr(opt, "last_noise", None)
    return {
        "losses": losses,
        "params": [p.detach().clone() for p in session.model.parameters()],
        "penalty": float(opt.last_penalty) if hasattr(opt, "last_penalty") else None,
        "noise": None if noise is None else float(torch.cat([n.flatten() for n in noise]).norm()),
    }


def _worker(rank: int, port: int, tmp: str) -> None:
    os.environ.update({"RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(WORLD),
                       "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=WORLD,
                            init_method=f"tcp://127.0.0.1:{port}")
    try:
        out = compute(Path(tmp) / "run2")
        torch.save(out, Path(tmp) / f"rank{rank}.pt")
        dist.barrier()  # no rank tears its group down while another still talks to it
    finally:
        dist.destroy_process_group()


def _close(a, b, rtol=1e-10, atol=1e-12) -> None:
    torch.testing.assert_close(torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b,
        dtype=torch.float64),
                               rtol=rtol, atol=atol)


def test_two_gloo_processes_match_one(tmp_path):
    mp.spawn(_worker, args=(_free_port(), str(tmp_path)), nprocs=WORLD, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(WORLD)]
    one = compute(tmp_path / "run1")
    # each rank held its shard of the uneven data set; together all of it
    assert [r["local_samples"] for r in ranks] == [19, 18] and all(r["n"] == 37 for r in ranks)
    # each training step: every rank took half of the global minibatch of 10 (one process: all of
    # it)
    assert [r["shards"] for r in ranks] == [[(10, 5), (10, 5)]] * 2 and one["shards"] == [
        (10, 10),
        (10, 10),
    ]
    for r in ranks:  # every rank returns the global numbers
        _close(r["trace"], one["trace"])
        _close(r["eig"], one["eig"])
        _close(r["loss"], one["loss"])
        _close(r["grad"], one["grad"])
        for k in ("batch_loss", "train_loss", "test_loss", "train_accuracy", "trace"):
            _close(r["final"][k], one["final"][k])
    # rank 0 alone wrote the run; its parameters after two data-parallel SAM steps are the same
    a = torch.load(tmp_path / "run1" / "final.pt", weights_only=True)["state_dict"]
    b = torch.load(tmp_path / "run2" / "final.pt", weights_only=True)["state_dict"]
    for k in a:
        _close(b[k], a[k])
    first = next(iter(a))
    assert (
        a[first].double() - _initial(first)
    ).abs().max() > 1e-4  # the steps did move the parameters
    assert not list((tmp_path / "run2").glob(".*.tmp"))
    for (
        name
    ) in OWN_TERMS:  # TRACERs and covariance noise: the global minibatch's step on every rank
        a, b = one["own_terms"][name], ranks[0]["own_terms"][name]
        for k in ("losses", "penalty", "noise"):
            if a[k] is not None:
                _close(b[k], a[k])
        for pa, pb, p1 in zip(a["params"], b["params"], ranks[1]["own_terms"][name]["params"]):
            _close(pb, pa)
            assert torch.equal(pb, p1), name  # the ranks stay bit-identical
    assert all(one["own_terms"][n]["noise"] > 0 for n in ("lb-diag-noise", "lb-full-noise"))
    assert all(one["own_terms"][n]["penalty"] > 1e-6 for n in ("sgd-tracer", "adam-tracer"))


def _initial(name: str) -> torch.Tensor:
    from landscape.data import load_dataset
    from landscape.models import build_model, model_kwargs_for

    cfg = _train_config()
    split = load_dataset(cfg.data, **cfg.data_kwargs)
    model = build_model(
        cfg.model, seed=cfg.seed, **model_kwargs_for(cfg.model, split, **cfg.model_kwargs)
    )
    return model.state_dict()[name].double()


def test_torchrun_command_line_matches_one_process(tmp_path):
    from typer.testing import CliRunner

    from landscape.cli.app import app
    from landscape.data import load_dataset
    from landscape.io.checkpoint import make_checkpoint
    from landscape.models import build_model

    dk = {"n_train": 45, "test_fraction": 0.2}
    kw = {"in_dim": 64, "out_dim": 10, "widths": [6]}
    ck = tmp_path / "tiny.pt"
    make_checkpoint("mlp", kw, "digits", dk, "cross-entropy", build_model("mlp", seed=0, **kw), {},
                    split=load_dataset("digits", **dk)).save(ck)
    args = ["sharpness", str(ck), "-m", "trace,eig", "--probes", "12", "--top-k", "2", "--dtype",
            "float64",
            "--batch-size", "8", "--json"]
    single = CliRunner().invoke(app, args)
    assert single.exit_code == 0, single.output
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                           "--nproc-per-node",
                           str(WORLD), "-m", "landscape", *args, "--out", str(tmp_path / "out.h5")],
                          capture_output=True, text=True, env=env, timeout=240, cwd=tmp_path,
                          check=False)
    if (
        proc.returncode != 0 and "Address already in use" in proc.stderr
    ):  # pragma: no cover - port race
        pytest.skip("no free port for the rendezvous")
    assert proc.returncode == 0, proc.stderr[-2000:]
    a, b = (
        json.loads(single.stdout),
        json.loads(proc.stdout),
    )  # exactly one JSON object: rank 1 is silent
    assert b["samples"] == a["samples"] == 45
    _close(b["metrics"]["trace"]["estimate"], a["metrics"]["trace"]["estimate"])
    _close(b["metrics"]["trace"]["stderr"], a["metrics"]["trace"]["stderr"])
    _close(b["metrics"]["eigenvalues"]["values"], a["metrics"]["eigenvalues"]["values"])
    assert (tmp_path / "out.h5").is_file() and not list(tmp_path.glob(".*.tmp"))


def test_torchrun_noise_and_fisher_match_one_process(tmp_path):
    """The exact alignment (Gram blocks split over ranks) and the Monte-Carlo Fisher (labels drawn
    per global sample) give the single-process numbers under torchrun."""
    from typer.testing import CliRunner

    from landscape.cli.app import app
    from landscape.data import load_dataset
    from landscape.io.checkpoint import make_checkpoint
    from landscape.models import build_model

    dk = {"n_train": 45, "test_fraction": 0.2}
    kw = {"in_dim": 64, "out_dim": 10, "widths": [6]}
    ck = tmp_path / "tiny.pt"
    make_checkpoint("mlp", kw, "digits", dk, "cross-entropy", build_model("mlp", seed=0, **kw), {},
                    split=load_dataset("digits", **dk)).save(ck)
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    for args, keys in [
        (["noise", str(ck), "--dtype", "float64", "--chunk", "7", "--json"],
         ["alpha", "beta", "mu", "loss", "tr_sigma_g", "sigma_frobenius", "g_frobenius",
          "nonuniformity"]),
        (["fisher", str(ck), "--dtype", "float64", "--probes", "8", "--mc-samples", "3", "--json"],
         None),
    ]:
        single = CliRunner().invoke(app, args)
        assert single.exit_code == 0, single.output
        proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                               "--nproc-per-node",
                               str(WORLD), "-m", "landscape", *args],
                              capture_output=True, text=True, env=env, timeout=240, cwd=tmp_path,
                              check=False)
        if (
            proc.returncode != 0 and "Address already in use" in proc.stderr
        ):  # pragma: no cover - port race
            pytest.skip("no free port for the rendezvous")
        assert proc.returncode == 0, proc.stderr[-2000:]
        a, b = json.loads(single.stdout), json.loads(proc.stdout)
        if keys:
            for k in keys:
                _close(b[k], a[k], rtol=1e-9)
        else:
            for name, entry in a["matrices"].items():
                _close(b["matrices"][name]["trace"]["estimate"], entry["trace"]["estimate"],
                       rtol=1e-9)
