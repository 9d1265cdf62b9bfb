"""User mistakes are user errors: each gets one line on stderr and exit code 2, never exit 1
("internal error ... report it") and never meaningless numbers; the output paths are checked
before any computation."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from landscape.cli.app import app

CKPT = str(Path(__file__).resolve().parents[1] / "checkpoints" / "digits-mlp-sgd.pt")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("bad")
    (d / "factories.py").write_text(
        textwrap.dedent("""
        import torch
        def model_raises():
            raise RuntimeError("no GPU weights here")
        def data_raises(n=10):
            raise FileNotFoundError(f"/data/cifar not found (n={n})")
        def data_nan():
            X = torch.randn(20, 64)
            X[3, 5] = float("nan")
            return X, torch.arange(20) % 10
        def mlp():
            nn = torch.nn
            return nn.Sequential(nn.Linear(64, 8), nn.Tanh(), nn.Linear(8, 10))
        def scalar():
            return torch.nn.Linear(64, 1)
    """)
    )
    torch.save(torch.nn.Linear(64, 1).state_dict(), d / "scalar.pt")
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(64, 8), torch.nn.Tanh(), torch.nn.Linear(8, 10))
    torch.save(net.state_dict(), d / "mlp.pt")
    bad = {k: v.clone() for k, v in net.state_dict().items()}
    bad["2.weight"][0, 0] = float("nan")
    torch.save(bad, d / "nan.pt")
    (d / "ro").mkdir()
    (d / "ro").chmod(0o555)
    (d / "state-run").mkdir()
    (d / "state-run" / "state.pt").write_bytes(b"\x80\x02garbage that is no pickle")
    return d


def _cases(d: Path) -> list[tuple[list[str], str]]:
    f = d / "factories.py"
    return [
        (["sharpness", str(d / "mlp.pt"), "--model", f"{f}:model_raises", "--data", "digits"],
         "model factory"),
        (["sharpness", str(d / "mlp.pt"), "--model", f"{f}:mlp", "--data", f"{f}:data_raises",
          "--data-arg", "n=3"],
         "data factory"),
        (["sharpness", CKPT, "--model-arg", "widths=abc"], "rejected its options"),
        (["sharpness", CKPT, "--device", "tpu"], "unknown device"),
        (["sharpness", CKPT, "--params", "["], "not a regular expression"),
        (["sharpness", CKPT, "--metric", "density", "--plot", str(d / "density.xyz")],
         "cannot write"),
        (["sharpness", CKPT, "--out", str(d)], "is a directory"),
        (["noise", CKPT, "--samples", "1"], "at least 2 samples"),
        (["stability", CKPT, "--lr", "inf", "--batch-size", "8"], "finite number > 0"),
        (["train", "--momentum", "nan", "--steps", "1", "--out", str(d / "r1")], "--momentum"),
        (["train", "--weight-decay", "nan", "--steps", "1", "--out", str(d / "r2")],
         "--weight-decay"),
        (["train", "--steps", "1", "--out", str(d / "mlp.pt")], "is a file"),
        (["train", "--optimizer", "lb-diag-noise", "--steps", "1", "--out", str(d / "r3")],
         "--small-batch"),
        (["train", "--resume", str(d / "state-run")], "state.pt"),
        (["interpolate", str(d / "mlp.pt"), str(d / "nan.pt"), "--model", f"{f}:mlp", "--data",
          "digits"],
         "NaN or infinite weights"),
        (["escape", str(d / "nan.pt"), "--model", f"{f}:mlp", "--data", "digits", "--from",
          "checkpoint",
          "--no-theory", "--steps", "2", "--trajectories", "2"], "NaN"),
        (["sharpness", str(d / "mlp.pt"), "--model", f"{f}:mlp", "--data", f"{f}:data_nan", "-m",
          "trace"],
         "the data hold NaN"),
        (["sharpness", CKPT, "--memory", "1kB"], "raise --memory to at least"),
    ]


@pytest.mark.parametrize("index", range(18))
def test_bad_input_is_one_line_and_exit_2(files, index):
    args, word = _cases(files)[index]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 2, (args, r.output)
    lines = [ln for ln in r.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and word in lines[0], (args, r.stderr)
    assert "Traceback" not in r.output


def test_the_case_list_is_complete(files):
    assert len(_cases(files)) == 18


def test_messages_print_brackets_as_they_are(files):
    """rich's markup swallowed ``[batch, classes]`` in "cross-entropy needs [batch, classes]
    logits"."""
    r = CliRunner().invoke(app, ["sharpness", str(files / "scalar.pt"), "--model",
                                 f"{files / 'factories.py'}:scalar",
                                 "--data", "digits", "--loss", "cross-entropy"])
    assert r.exit_code == 2 and "[batch, classes]" in r.stderr, r.stderr


def test_a_warning_is_one_line(files):
    r = CliRunner().invoke(app, ["train", "--momentum", "1.5", "--steps", "1", "--no-plot", "--out",
                                 str(files / "r-momentum")])
    assert r.exit_code == 0
    warnings = [ln for ln in r.stderr.splitlines() if "momentum" in ln]
    assert len(warnings) == 1 and warnings[0].startswith("warning:"), r.stderr
