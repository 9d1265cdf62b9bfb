"""Tracked training (landscape.train): loss decreases, exact resume, signals, run.h5, tracking."""

from __future__ import annotations

import math
import os
import signal

import h5py
import numpy as np
import pytest
import torch

import landscape
from landscape.errors import ConfigError, NumericalError
from landscape.io.checkpoint import Checkpoint
from landscape.train import (
    TRACKERS,
    RunDir,
    StopRequest,
    TrainConfig,
    read_run,
    register_tracker,
    resume,
    train,
)

SMALL = {"n_train": 400}  # digits: 400 training samples, 359 test samples


def cfg(**kw) -> TrainConfig:
    base = {"model": "mlp", "model_kwargs": {"widths": [32]}, "data": "digits",
            "data_kwargs": SMALL,
            "optimizer": "sgd", "lr": 0.1, "batch_size": 64, "plot": False}
    base.update(kw)
    if "steps" not in kw:
        base.setdefault("epochs", 3)
    return TrainConfig(**base)


def series_equal(a: dict, b: dict) -> None:
    """Every non-timing column bit-identical (NaN where NaN)."""
    cols = [k for k in a["series"] if not k.endswith("_seconds")]
    assert cols and set(cols) == {k for k in b["series"] if not k.endswith("_seconds")}
    for k in cols:
        assert np.array_equal(a["series"][k], b["series"][k], equal_nan=True), k


def params_equal(pa, pb) -> None:
    sa = torch.load(pa, weights_only=True)["state_dict"]
    sb = torch.load(pb, weights_only=True)["state_dict"]
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


def test_short_digits_run_loss_decreases(tmp_path):
    r = train(cfg(epochs=4), tmp_path / "run")
    assert r.status == "finished" and r.step == 4 * math.ceil(400 / 64) == r.total_steps
    s = read_run(tmp_path / "run")["series"]
    loss = s["train_loss"][~np.isnan(s["train_loss"])]
    assert loss[0] > 2.0  # ~log(10) at the start
    assert loss[-1] < 0.5 * loss[0]
    assert r.final["test_accuracy"] > 0.75
    # the final checkpoint is a core checkpoint that rebuilds the problem and gives the same loss
    ck = Checkpoint.load(tmp_path / "run" / "final.pt")
    assert ck.training["optimizer"] == "sgd" and ck.training["step"] == r.step
    assert ck.model["kwargs"]["in_dim"] == 64 and ck.model["kwargs"]["out_dim"] == 10
    assert abs(ck.problem().loss_value() - r.final["train_loss"]) < 1e-5


def test_mse_on_class_labels_trains_on_one_hot_targets(tmp_path):
    """--loss mse on a classification set: one-hot targets (as escape uses), accuracy by argmax,
    and the checkpoint rebuilds the same problem (one-hot again) for the curvature commands."""
    r = train(cfg(loss="mse", epochs=3), tmp_path / "run")
    assert r.status == "finished"
    assert r.final["test_accuracy"] > 0.5  # learns (chance is 0.1)
    ck = Checkpoint.load(tmp_path / "run" / "final.pt")
    pb = ck.problem()
    x, y = pb.batches.first()
    assert y.is_floating_point() and y.shape == (x.shape[0], 10) and torch.equal(y.sum(1),
        torch.ones(x.shape[0]))
    assert abs(pb.loss_value() - r.final["train_loss"]) < 1e-5


@pytest.mark.parametrize(
    "optimizer,hyper,stop",
    [
        ("sgd", {}, 11),
        ("sam", {"rho": 0.05}, 7),
        ("adam-tracer", {}, 13),
        ("lb-full-noise", {"small_batch": 8}, 9),
    ],
)
def test_resume_equals_uninterrupted_to_the_bit(tmp_path, optimizer, hyper, stop):
    c = cfg(optimizer=optimizer, hyper=hyper, lr=0.05 if "adam" not in optimizer else 1e-3,
            epochs=3,
            track=["gradnorm"], every=4, eval_every=5, checkpoint_every=6)
    full = train(c, tmp_path / "full")
    part = train(c, tmp_path / "part", stop_after=stop)  # interrupted mid-epoch (7 steps per epoch)
    assert part.status == "interrupted" and part.step == stop
    assert read_run(tmp_path / "part")["attrs"]["status"] == "interrupted"
    again = resume(tmp_path / "part")
    assert again.status == "finished" and again.step == full.step
    params_equal(tmp_path / "full" / "final.pt", tmp_path / "part" / "final.pt")
    params_equal(tmp_path / "full" / "step-000012.pt", tmp_path / "part" / "step-000012.pt")
    series_equal(read_run(tmp_path / "full"), read_run(tmp_path / "part"))
    # the optimizer state (base moments, the variant's own state and generator) is the same too
    sf = RunDir(tmp_path / "full").load_state()["optimizer"]
    sp = RunDir(tmp_path / "part").load_state()["optimizer"]
    assert repr(sf) == repr(sp)


def test_a_finished_run_trains_longer_with_resume(tmp_path):
    a = train(cfg(steps=10, eval_every=5), tmp_path / "run")
    assert a.status == "finished"
    assert resume(tmp_path / "run", steps=10).status == "already-finished"
    b = resume(tmp_path / "run", steps=20)
    assert b.status == "finished" and b.step == 20
    ref = train(cfg(steps=20, eval_every=5), tmp_path / "ref")
    params_equal(tmp_path / "ref" / "final.pt", tmp_path / "run" / "final.pt")
    assert ref.final["train_loss"] == b.final["train_loss"]


def test_stop_request_handler():
    stop = StopRequest()
    stop.handler(signal.SIGTERM, None)
    assert stop.signum == signal.SIGTERM
    with pytest.raises(KeyboardInterrupt):  # a second signal aborts at once
        stop.handler(signal.SIGINT, None)


@pytest.mark.parametrize("how", ["handler", "kill"])
def test_sigterm_saves_state_and_flushes(tmp_path, how):
    def progress(event):
        if event["step"] == 5:
            if how == "handler":  # the installed handler, called directly
                signal.getsignal(signal.SIGTERM)(signal.SIGTERM, None)
            else:  # a real signal to this process
                os.kill(os.getpid(), signal.SIGTERM)

    before = signal.getsignal(signal.SIGTERM)
    r = train(cfg(eval_every=4), tmp_path / "run", handle_signals=True, progress=progress)
    assert signal.getsignal(signal.SIGTERM) is before  # handlers restored
    assert r.status == "interrupted" and r.signum == signal.SIGTERM and r.step == 5
    rec = read_run(tmp_path / "run")
    assert rec["attrs"]["status"] == "interrupted" and rec["attrs"]["step"] == 5
    state = RunDir(tmp_path / "run").load_state()
    assert state["step"] == 5 and state["status"] == "interrupted"
    assert not (tmp_path / "run" / "final.pt").exists()
    done = resume(tmp_path / "run")
    ref = train(cfg(eval_every=4), tmp_path / "ref")
    assert done.step == ref.step
    params_equal(tmp_path / "ref" / "final.pt", tmp_path / "run" / "final.pt")
    series_equal(read_run(tmp_path / "ref"), read_run(tmp_path / "run"))


def test_run_h5_contents_and_tracked_hessian_metrics(tmp_path):
    c = cfg(model_kwargs={"widths": [8]}, data_kwargs={"n_train": 200}, dtype="float64", epochs=2,
            track=["trace", "eig", "gradnorm"], every=3, track_samples=96, probes=30, eval_every=2,
            track_options={"tol": 1e-10}, plot=True, seed=3)
    r = train(c, tmp_path / "run")
    with h5py.File(tmp_path / "run" / "run.h5") as f:
        a = dict(f.attrs)
        assert a["format"] == "landscape-run" and a["status"] == "finished"
        assert (
            a["optimizer"] == "sgd" and a["lr"] == 0.1 and a["batch_size"] == 64 and a["seed"] == 3
        )
        assert a["n_train"] == 200 and a["steps_per_epoch"] == 4 and a["total_steps"] == 8
        cols = {k: f["series"][k][()] for k in f["series"]}
    for k in ("step", "epoch", "wall_seconds", "train_seconds", "track_seconds", "train_loss",
              "test_accuracy",
              "trace", "trace_stderr", "lambda_max", "lambda_max_residual", "grad_norm"):
        assert k in cols, k
    assert len({len(v) for v in cols.values()}) == 1
    steps = cols["step"]
    np.testing.assert_array_equal(steps, [0, 2, 3, 4, 6, 8])
    np.testing.assert_array_equal(~np.isnan(cols["train_loss"]), np.isin(steps, [0, 2, 4, 6, 8]))
    np.testing.assert_array_equal(~np.isnan(cols["trace"]), np.isin(steps, [0, 3, 6, 8]))
    assert np.all(np.diff(cols["wall_seconds"]) >= 0) and np.all(
        np.diff(cols["track_seconds"]) >= 0
    )
    assert r.seconds["track"] > 0 and r.seconds["train"] > 0  # reported separately
    assert (tmp_path / "run" / "run.png").stat().st_size > 10_000
    # the tracked values at the last step are those of the final model's Hessian on the tracking
    # subset
    # (rel 1e-6, not 1e-10: Checkpoint.build_model loads the float64 weights into a float32 model)
    pb = Checkpoint.load(tmp_path / "run" / "final.pt").problem(samples=96, seed=3, dtype="float64")
    H = landscape.Hessian(pb).dense()
    fin = read_run(tmp_path / "run")["final"]
    assert abs(fin["trace"] - float(torch.trace(H))) < 4 * fin["trace_stderr"]
    assert fin["lambda_max"] == pytest.approx(float(torch.linalg.eigvalsh(H)[-1]), rel=1e-6)
    assert fin["grad_norm"] == pytest.approx(float(pb.gradient()[1].norm()), rel=1e-6)


def test_tracked_nonuniformity_and_mu_equal_dense_values(tmp_path):
    """--track nonuniformity,mu (the issue's example): s = sqrt(λ_max(Σ_H)) and μ =
    tr(ΣG)/(2L‖G‖_F²)
    at the last step equal the dense per-sample computation on the final model's tracking subset."""
    from tests import reference as ref

    c = cfg(model_kwargs={"widths": [4]}, data_kwargs={"n_train": 200}, dtype="float64", steps=6,
            track=["nonuniformity", "mu"], every=6, track_samples=40, track_options={"tol": 1e-10},
            seed=1)
    train(c, tmp_path / "run")
    fin = read_run(tmp_path / "run")["final"]
    pb = Checkpoint.load(tmp_path / "run" / "final.pt").problem(samples=40, seed=1, dtype="float64")
    s_dense = math.sqrt(float(torch.linalg.eigvalsh(ref.nonuniformity(pb))[-1]))
    assert fin["nonuniformity"] == pytest.approx(s_dense, rel=1e-5)
    sigma, G = ref.noise_covariance(pb), ref.ggn(pb)
    mu = float((sigma * G).sum() / (2 * ref.loss(pb) * (G * G).sum()))
    assert fin["mu"] == pytest.approx(mu, rel=1e-5)
    assert fin["mu"] == pytest.approx(fin["alpha"] * fin["beta"], rel=1e-12)
    # --track-arg noise_samples=K: the same quantities on a seeded subset of the tracking samples
    from landscape.estimators.alignment import alignment
    from landscape.metrics.stability import nonuniformity

    train(cfg(**{**c.to_dict(), "track_options": {"tol": 1e-10, "noise_samples": 15}}),
          tmp_path / "sub")
    sub = read_run(tmp_path / "sub")["final"]
    assert sub["mu"] == pytest.approx(alignment(pb, samples=15, seed=1).mu, rel=1e-5)
    assert sub["nonuniformity"] == pytest.approx(nonuniformity(pb, samples=15, seed=1,
                                                               tol=1e-10).value, rel=1e-5)
    assert sub["mu"] != pytest.approx(fin["mu"], rel=1e-3)


def test_custom_tracker_and_unknown_names(tmp_path):
    register_tracker("const", lambda problem, s: {"const": (float(problem.n), 0.5),
                                                  "step_seen": s.extra["step"]},
                     "test tracker")
    try:
        r = train(cfg(steps=4, track=["const"], every=2, track_samples=50), tmp_path / "run")
        s = read_run(tmp_path / "run")["series"]
        np.testing.assert_array_equal(s["const"], [50, 50, 50])
        np.testing.assert_array_equal(s["const_stderr"], [0.5, 0.5, 0.5])
        np.testing.assert_array_equal(s["step_seen"], [0, 2, 4])
        assert r.final["const"] == 50
    finally:
        TRACKERS.pop("const")
    with pytest.raises(ConfigError, match="trace"):
        train(cfg(track=["nosuch"]), tmp_path / "bad")
    assert not (tmp_path / "bad").exists()
    # --track-arg values of the wrong type: one clear error naming the option
    from landscape.train.tracking import settings_from

    for options, message in (({"noise_samples": "abc"}, "noise_samples='abc' is not an integer"),
                             ({"tol": "x"}, "tol='x' is not a number"), ({"top_k": 2.5},
                                                                         "not an integer"),
                             ({"method": 3}, "not a string"), ({"nosuch": 1},
                                                               "unknown tracking option")):
        with pytest.raises(ConfigError, match=message):
            settings_from(20, 0, options)
    s = settings_from(20, 0, {"tol": 1, "noise_samples": 64, "max_steps": None})
    assert s.tol == 1.0 and isinstance(s.tol,
                                       float) and s.noise_samples == 64 and s.max_steps is None


def test_existing_run_directories(tmp_path):
    c = cfg(steps=3)
    train(c, tmp_path / "run")
    assert train(c, tmp_path / "run").status == "already-finished"
    train(c, tmp_path / "half", stop_after=1)
    with pytest.raises(ConfigError, match="--resume"):
        train(c, tmp_path / "half")
    assert train(c, tmp_path / "half", force=True).status == "finished"
    with pytest.raises(ConfigError, match="no run to resume"):
        resume(tmp_path / "nothing")


def test_gd_is_full_batch_and_until_loss_stops(tmp_path):
    r = train(cfg(optimizer="gd", lr=0.5, epochs=200, until_loss=0.3, eval_every=5),
              tmp_path / "run")
    a = read_run(tmp_path / "run")["attrs"]
    assert a["batch_size"] == 400 and a["steps_per_epoch"] == 1 and a["momentum"] == 0
    assert r.status == "finished" and r.stop_reason == "until_loss" and r.step < 200
    assert r.final["train_loss"] < 0.3 and r.step % 5 == 0


def test_divergence_is_reported_and_recorded(tmp_path):
    with pytest.raises(NumericalError):
        train(cfg(lr=1e12, momentum=0.9), tmp_path / "run")
    assert read_run(tmp_path / "run")["attrs"]["status"] == "diverged"


@pytest.mark.parametrize("optimizer, hyper", [("sgd", {}), ("sam", {"rho": 0.05})])
def test_gradient_accumulation_takes_the_same_steps(tmp_path, optimizer, hyper):
    """``accumulate=3``: each minibatch in 3 micro-batches whose gradients are summed gives the
    same parameters as the whole minibatch at once (float64, to rounding)."""
    runs = {}
    for k in (1, 3):
        runs[k] = train(cfg(optimizer=optimizer, hyper=hyper, dtype="float64", steps=12,
                            accumulate=k), tmp_path / f"k{k}")
    a = torch.load(tmp_path / "k1" / "final.pt", weights_only=True)["state_dict"]
    b = torch.load(tmp_path / "k3" / "final.pt", weights_only=True)["state_dict"]
    for name in a:
        assert torch.allclose(a[name], b[name], rtol=0, atol=1e-12), name
    assert runs[3].final["train_loss"] == pytest.approx(runs[1].final["train_loss"], rel=1e-12)


def test_accumulation_is_refused_for_the_tracers(tmp_path):
    with pytest.raises(ConfigError, match="--accumulate is not available for sgd-tracer"):
        train(cfg(optimizer="sgd-tracer", steps=2, accumulate=2), tmp_path / "r")


def test_bfloat16_autocast_trains_close_to_float32(tmp_path):
    """The forward passes in bfloat16 (8-bit mantissa), the weights and the optimizer in float32:
    the same run's loss curve within a few percent of float32's, the weights stored in float32."""
    full = train(cfg(steps=30), tmp_path / "f32")
    low = train(cfg(steps=30, autocast="bfloat16", accumulate=2), tmp_path / "bf16")
    assert low.final["train_loss"] == pytest.approx(full.final["train_loss"], rel=0.05)
    assert low.final["train_loss"] < 0.8 * read_run(tmp_path / "bf16")["series"]["train_loss"][0]
    sd = torch.load(tmp_path / "bf16" / "final.pt", weights_only=True)["state_dict"]
    assert all(t.dtype == torch.float32 for t in sd.values())
    with pytest.raises(ConfigError, match="autocast"):
        train(cfg(steps=2, autocast="float16"), tmp_path / "f16")
