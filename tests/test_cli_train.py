"""`landscape train` and `landscape compare` as a user runs them (Typer's CliRunner)."""

from __future__ import annotations

import json
import os
import signal

import numpy as np
import pytest
import torch

from landscape.train import TRACKERS, read_run, register_tracker
from tests.cli import one_line_error, run

TINY = ["--model-arg", "widths=[16]", "--data-arg", "n_train=300", "--batch-size", "64"]




@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    a = run("train", *TINY, "--optimizer", "sgd", "--lr", "0.1", "--epochs", "3", "--track",
            "gradnorm",
            "--every", "5", "--no-plot", "--out", root / "sgd", "--json")
    b = run("train", *TINY, "--optimizer", "sam", "--rho", "0.05", "--lr", "0.1", "--epochs", "3",
            "--track", "gradnorm", "--every", "5", "--out", root / "sam", "--json")
    return root, a, b


def test_train_json_is_one_object(two_runs):
    root, a, b = two_runs
    for r, name in ((a, "sgd"), (b, "sam")):
        assert r.exit_code == 0, r.output
        d = json.loads(r.stdout)
        assert d["status"] == "finished" and d["step"] == d["total_steps"] == 3 * 5
        assert d["final"]["train_loss"] < 2.0 and d["final"]["grad_norm"] > 0
        assert {"train", "track", "eval", "wall"} <= set(d["seconds"])
        attrs = read_run(root / name)["attrs"]
        assert attrs["optimizer"] == name and attrs["model_kwargs"] == {"widths": [16],
                                                                        "in_dim": 64, "out_dim": 10}
    assert read_run(root / "sam")["attrs"]["hyper"] == {"rho": 0.05}
    assert (root / "sam" / "run.png").exists() and not (root / "sgd" / "run.png").exists()
    assert (root / "sam" / "final.pt").exists()


def test_compare_table_json_and_plot(two_runs, tmp_path):
    root, _, _ = two_runs
    r = run("compare", root / "sgd", root / "sam", "--json", "--plot", tmp_path / "cmp.png")
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    assert [s["settings"]["optimizer"] for s in d["runs"]] == ["sgd", "sam"]
    for s, name in zip(d["runs"], ("sgd", "sam")):
        rec = read_run(root / name)
        assert s["final"]["test_accuracy"] == rec["series"]["test_accuracy"][-1]
        assert s["metrics"]["grad_norm"]["value"] == rec["series"]["grad_norm"][-1]
    assert (tmp_path / "cmp.png").stat().st_size > 10_000
    t = run("compare", root / "sgd", root / "sam")
    assert t.exit_code == 0 and "test_accuracy" in t.stdout and "grad_norm" in t.stdout
    one_line_error(run("compare", root / "sgd", tmp_path / "nope"), "no such run")


def test_finished_run_is_not_redone(two_runs):
    root, _, _ = two_runs
    r = run("train", *TINY, "--optimizer", "sgd", "--lr", "0.1", "--epochs", "3", "--track",
            "gradnorm",
            "--every", "5", "--no-plot", "--out", root / "sgd")
    assert r.exit_code == 0 and "already holds a finished run" in r.stderr
    # other settings onto a finished run: an error naming the difference, not "nothing to do"
    one_line_error(run("train", *TINY, "--optimizer", "sgd", "--lr", "0.3", "--epochs", "3",
                       "--out", root / "sgd"),
                   "other settings", "lr")


@pytest.mark.parametrize("args,words", [
    (["--optimizer", "adamx"], ["unknown optimizer", "sam"]),
    (["--model", "nosuchnet"], ["unknown model", "mlp"]),
    (["--data", "nosuchdata"], ["unknown dataset", "digits"]),
    (["--track", "trace,nosuch"], ["unknown tracked metric", "frobenius"]),
    (["--model-arg", "widths"], ["key=value"]),
    (["--optimizer", "sgd", "--rho", "0.1"], ["rho"]),
    (["--epochs", "2", "--steps", "3"], ["--epochs", "--steps"]),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, args, words):
    one_line_error(run("train", *TINY, *args, "--out", tmp_path / "r"), *words)
    assert not (tmp_path / "r" / "run.h5").exists()


def test_resume_errors(tmp_path):
    one_line_error(run("train", "--resume", tmp_path / "missing"), "no run to resume")
    one_line_error(run("train", "--epochs", "1"), "--out")
    r = run("train", *TINY, "--steps", "2", "--no-plot", "--out", tmp_path / "r")
    assert r.exit_code == 0, r.output
    one_line_error(run("train", "--resume", tmp_path / "r", "--lr", "0.5"), "--lr")


def test_sigterm_exits_143_and_resume_matches(tmp_path):
    fired = []

    def killer(problem, settings):  # sends SIGTERM to this process once, at step 5
        if settings.extra["step"] == 5 and not fired:
            fired.append(1)
            os.kill(os.getpid(), signal.SIGTERM)
        return {"k": 0.0}

    register_tracker("killer", killer, "test: SIGTERM at step 5")
    try:
        args = [*TINY, "--epochs", "2", "--track", "killer", "--every", "5", "--no-plot"]
        r = run("train", *args, "--out", tmp_path / "a")
        assert r.exit_code == 143, r.output
        msg = [ln for ln in r.stderr.splitlines() if ln.strip()]
        assert (
            msg[-1].startswith("interrupted (SIGTERM) at step 5")
            and f"--resume {tmp_path / 'a'}" in msg[-1]
        )
        assert read_run(tmp_path / "a")["attrs"]["status"] == "interrupted"
        r = run("train", "--resume", tmp_path / "a", "--json")
        assert r.exit_code == 0, r.output
        assert json.loads(r.stdout)["status"] == "finished"
        r = run("train", *args, "--out", tmp_path / "b")
        assert r.exit_code == 0, r.output
    finally:
        TRACKERS.pop("killer")
    sa = torch.load(tmp_path / "a" / "final.pt", weights_only=True)["state_dict"]
    sb = torch.load(tmp_path / "b" / "final.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    A, B = read_run(tmp_path / "a")["series"], read_run(tmp_path / "b")["series"]
    assert np.array_equal(A["train_loss"], B["train_loss"], equal_nan=True)
