"""Batch studies: the study file's checks (file, line, key), one HDF5 file with settings as
attributes, values against dense truths, resume / skip / --force, failing items, atomic commits,
and the `batch` / `report` commands."""

from __future__ import annotations

import json
import math
from pathlib import Path

import h5py
import pytest
import torch
from typer.testing import CliRunner

import landscape
from landscape.cli.app import app
from landscape.data import load_dataset
from landscape.errors import ConfigError
from landscape.io.checkpoint import Checkpoint, make_checkpoint
from landscape.models import build_model
from landscape.study import COMPUTE, KINDS, parse_study, plan_study, read_study, run_study
from landscape.study.report import HEADLINES, summary_markdown
from landscape.study.spec import key_lines

runner = CliRunner()
DATA = {"n_train": 60, "test_fraction": 0.2}


def _checkpoint(path: Path, seed: int, training: dict | None = None) -> Path:
    split = load_dataset("digits", **DATA)
    kw = {"in_dim": 64, "out_dim": 10, "widths": [4]}
    model = build_model("mlp", seed=seed, **kw)
    make_checkpoint("mlp", kw, "digits", DATA, "cross-entropy", model,
                    training or {"optimizer": "sgd", "lr": 0.1, "batch_size": 16},
                    split=split).save(path)
    return path


@pytest.fixture(scope="module")
def ckdir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("cks")
    _checkpoint(d / "a.pt", 0)
    _checkpoint(d / "b.pt", 1)
    _checkpoint(d / "nolr.pt", 2, {"optimizer": "none"})
    return d


def write(folder: Path, text: str, name: str = "study.toml") -> Path:
    p = folder / name
    p.write_text(text)
    return p


STUDY = """\
[study]
output = "out/study.h5"
figures = "out/figures"

[problem]
dtype = "float64"
batch_size = 32

[checkpoints]
files = ["{ck}/a.pt", "{ck}/b.pt"]

[metrics.trace]
probes = 40

[metrics.eig]
which = "both"
tol = 1e-10

[slices.line]
dims = 1
points = 5
test = false
"""


def dense_hessian(path: Path) -> torch.Tensor:
    pb = Checkpoint.load(path).problem(dtype="float64")
    return landscape.Hessian(pb).dense()


# ------------------------------------------------------------------------ the study file
def _error(tmp_path: Path, text: str) -> str:
    p = write(tmp_path, text)
    with pytest.raises(ConfigError) as e:
        parse_study(p)
    return str(e.value)


@pytest.mark.parametrize("body, line, words", [
    ('[metrics.trace]\nprbes = 5\n', 7, ["unknown key 'prbes'", "[metrics.trace]",
                                         "did you mean 'probes'"]),
    ('[metrics.trace]\nprobes = 1\n', 7, ["probes must be an integer >= 2", "got 1"]),
    ('[metrics.trace]\n\nmethod = "hutch"\n', 8, ["method must be one of", '"hutchpp"']),
    ('[metrics.eig]\ntol = -1.0\n', 7, ["tol must be a finite number > 0"]),
    ('[metrics.eig]\ntop_k = true\n', 7, ["top_k must be an integer"]),
    ('[metrics.hessian-trace]\nprobes = 5\n', 6, ["unknown metric kind 'hessian-trace'"]),
    ('[metrics.t2]\nkind = "trcae"\n', 7, ["unknown metric kind 'trcae'", "did you mean 'trace'"]),
    ('[slices.s]\ndirections = "pca"\n', 7, ['needs trajectory']),
    ('[slices.s]\nnorm = "layer"\ndirections = "eigen"\n', 7,
     ["norm applies to random directions"]),
    ('[slices.s]\nrange = [1, -1]\n', 7, ["range must be two numbers [LO, HI]"]),
    ('[metrics.trace]\nsamples = 0\n', 7, ["samples must be an integer >= 1"]),
    ('[metrics.trace]\nmodel = "x.py:f"\n', 7, ["unknown key 'model'"]),
])
def test_bad_settings_name_file_line_and_key(tmp_path, ckdir, body, line, words):
    head = f'[study]\nseed = 0\n\n[checkpoints]\nfiles = ["{ckdir}/a.pt"]\n'
    msg = _error(tmp_path, head + body)
    assert msg.startswith(f"{tmp_path / 'study.toml'}:{line}: "), msg
    for w in words:
        assert w in msg, msg


def test_missing_checkpoints_unknown_tables_and_bad_toml(tmp_path, ckdir):
    msg = _error(tmp_path,
                 f'[checkpoints]\nfiles = ["{ckdir}/a.pt",\n  "nothere/*.pt"]\n[metrics.trace]\n')
    assert ":2: checkpoint 'nothere/*.pt' matches no file" in msg
    msg = _error(tmp_path, '[checkpoints]\n\nfiles = ["missing.pt"]\n[metrics.trace]\n')
    assert ":3: checkpoint 'missing.pt' does not exist" in msg
    msg = _error(tmp_path, '[checkpoints]\nruns = ["noruns"]\n[metrics.trace]\n')
    assert ":2: run directory 'noruns' does not exist" in msg
    msg = _error(tmp_path, f'[checkpoints]\nfiles = ["{ckdir}/a.pt"]\n\n[metric.trace]\n')
    assert ":4: unknown key 'metric' at the top level" in msg and "did you mean 'metrics'" in msg
    msg = _error(tmp_path, f'[checkpoints]\nfiles = ["{ckdir}/a.pt"]\n[study]\noutput = \n')
    assert ":4: invalid TOML" in msg
    msg = _error(tmp_path, f'[checkpoints]\nfiles = ["{ckdir}/a.pt"]\n')
    assert "names no metric or slice" in msg
    msg = _error(tmp_path,
                 f'[checkpoints]\nfiles = ["{ckdir}/a.pt"]\n[metrics.trace]\n[slices.trace]\n')
    assert ":4: 'trace' is both [metrics.trace] and [slices.trace]" in msg


def test_key_lines_skip_multiline_values():
    text = ('# c\n[a]\nx = [1,\n  2, # y = 5\n]\ny = """\nz = 1\n"""\n"q.r" = 3\n[b.c]\nd.e = 1\n'
            'f = {g = 1}\n[[t]]\nu = 1\n[[t]]\nu = 2\n')
    lines = key_lines(text)
    assert lines[("a",)] == 2 and lines[("a", "x")] == 3 and lines[("a", "y")] == 6
    assert ("a", "z") not in lines and lines[("a", "q.r")] == 9
    assert lines[("b", "c")] == 10 and lines[("b", "c", "d", "e")] == 11 and lines[("b", "c",
                                                                                    "f")] == 12
    assert lines[("t", "0", "u")] == 14 and lines[("t", "1", "u")] == 16


def test_settings_resolve_with_defaults_overrides_and_only(tmp_path, ckdir):
    p = write(
        tmp_path,
        STUDY.format(ck=ckdir)
        + '\n[metrics.hpp]\nkind = "trace"\nmethod = "hutchpp"\nsamples = 30\nseed = 4\n',
    )
    s = parse_study(p)
    assert s.output == tmp_path / "out/study.h5" and s.figures == tmp_path / "out/figures"
    assert [c.label for c in s.checkpoints] == [f"{ckdir.name}|a", f"{ckdir.name}|b"]
    items = {i.name: i for i in s.items}
    assert items["trace"].settings == {"probes": 40, "method": "hutchinson", "seed": 0}
    assert items["hpp"].kind == "trace" and items["hpp"].settings["seed"] == 4
    assert items["hpp"].problem["samples"] == 30 and items["trace"].problem["samples"] is None
    assert items["hpp"].problem["dtype"] == "float64" and items["line"].group == "slices"
    assert [i.name for i in s.select(["trace,line"]).items] == ["trace", "line"]
    with pytest.raises(ConfigError, match="--only 'nope'"):
        s.select(["nope"])


def test_every_kind_has_a_computation_and_headlines():
    assert set(KINDS) == set(COMPUTE) == set(HEADLINES)


# ------------------------------------------------------------------------ running
@pytest.fixture(scope="module")
def done(tmp_path_factory, ckdir):
    """The STUDY computed once (shared by the tests that only read it)."""
    folder = tmp_path_factory.mktemp("study")
    study = parse_study(write(folder, STUDY.format(ck=ckdir)))
    result = run_study(study)
    return study, result


def test_one_file_with_settings_as_attributes_and_values_match_dense(done, ckdir):
    study, result = done
    assert result.count("computed") == 6 and not result.failed
    with h5py.File(study.output, "r") as f:
        assert f.attrs["format"] == "landscape-study" and "[metrics.trace]" in f.attrs["study_text"]
        labels = list(f["checkpoints"])
        assert len(labels) == 2
        g = f["checkpoints"][labels[0]]
        assert g.attrs["sha256"] and g.attrs["model"] == "mlp"
        it = g["trace"]
        assert it.attrs["complete"] == 1 and it.attrs["kind"] == "trace"
        assert json.loads(it.attrs["settings"]) == {"probes": 40, "method": "hutchinson", "seed": 0}
        assert (
            json.loads(it.attrs["problem"])["dtype"] == "float64"
            and len(it.attrs["settings_hash"]) == 16
        )
    rec = read_study(study.output)
    for ref in study.checkpoints:
        H = dense_hessian(ref.path)
        ev = torch.linalg.eigvalsh(H)
        tr = rec.item(ref.label, "trace")["result"]
        assert abs(tr["estimate"] - float(torch.trace(H))) < 4 * tr["stderr"]
        eig = rec.item(ref.label, "eig")["result"]
        assert abs(eig["values"][0] - float(ev[-1])) < 1e-7 * abs(float(ev[-1]))
        assert abs(eig["values"][1] - float(ev[0])) < 1e-7 * max(1.0, abs(float(ev[0])))
        line = rec.item(ref.label, "line")["result"]
        loss = line["values"]["train_loss"]
        assert loss.shape == (5,) and abs(loss[2] - line["origin"]["train_loss"]) < 1e-12
        pb = Checkpoint.load(ref.path).problem(dtype="float64")
        assert abs(line["origin"]["train_loss"] - pb.loss_value()) < 1e-12


def test_rerun_skips_complete_items_and_changed_settings_recompute(done, ckdir, tmp_path):
    study, _ = done

    def stamps():
        with h5py.File(study.output, "r") as f:
            return {(c, n): f["checkpoints"][c][n].attrs["computed_at"] for c in f["checkpoints"]
                    for n in f["checkpoints"][c]}

    before = stamps()
    again = run_study(parse_study(study.path))
    assert again.count("skipped") == 6 and again.count("computed") == 0
    assert stamps() == before
    # a changed setting recomputes that item only; force recomputes all
    changed = write(study.path.parent, STUDY.format(ck=ckdir).replace("probes = 40", "probes = 41"),
                    "changed.toml")
    s2 = parse_study(changed)
    s2.output = study.output
    plan = plan_study(s2)
    assert {(p.item.name, p.action) for p in plan} == {("trace", "compute"), ("eig", "skip"),
                                                       ("line", "skip")}
    assert {p.reason for p in plan if p.action == "compute"} == {"settings or checkpoint changed"}
    assert all(p.action == "compute" and p.reason == "forced" for p in plan_study(s2, force=True))


def test_interrupted_study_resumes_without_losing_or_redoing(tmp_path, ckdir):
    study = parse_study(write(tmp_path, STUDY.format(ck=ckdir)))
    seen = []

    def stop_after_two(e):
        if e["event"] == "done":
            seen.append((e["label"], e["name"]))
            if len(seen) == 2:
                raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_study(study, on_event=stop_after_two)
    rec = read_study(study.output)
    assert [(it["label"], it["name"]) for it in rec.items if it["complete"]] == seen
    assert not [p for p in tmp_path.rglob(".*.tmp")]  # no temporary file left behind
    rest = run_study(parse_study(study.path))
    assert rest.count("skipped") == 2 and rest.count("computed") == 4
    assert {(o.label, o.name) for o in rest.outcomes if o.status == "skipped"} == set(seen)


def test_a_failing_item_is_reported_and_the_rest_go_on(tmp_path, ckdir):
    text = (
        f'[checkpoints]\nfiles = ["{ckdir}/nolr.pt", "{ckdir}/a.pt"]\n[problem]\ndtype = '
        '"float64"\n'
        "[metrics.stability]\nprobes = 5\n[metrics.trace]\nprobes = 5\n"
    )
    study = parse_study(write(tmp_path, text))
    res = run_study(study)
    failed = res.failed
    assert [(o.label.split("|")[-1], o.name) for o in failed] == [("nolr", "stability")]
    assert "records no lr" in failed[0].error
    assert res.count("computed") == 3
    rec = read_study(study.output)
    bad = rec.item(failed[0].label, "stability")
    assert bad["complete"] == 0 and "records no lr" in bad["error"]
    md = summary_markdown(rec)
    assert "FAILED" in md and "## Failures" in md
    # a re-run retries the failed item only
    assert [(p.item.name, p.reason) for p in plan_study(study) if p.action == "compute"] == \
        [("stability", "failed or incomplete before")]


def test_commit_is_atomic_when_writing_fails(tmp_path, ckdir, monkeypatch):
    study = parse_study(write(tmp_path, STUDY.format(ck=ckdir).replace("[slices.line]",
                                                                       "[slices.line]\nseed = 1")))
    study.items = study.items[:1]
    study.checkpoints = study.checkpoints[:1]
    run_study(study)
    good = study.output.read_bytes()
    from landscape.io import hdf5

    def boom(*a, **k):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(hdf5, "write_group", boom)
    with pytest.raises(RuntimeError):
        from landscape.study.runner import commit_item

        commit_item(study.output, study, "x", {}, "y", {"complete": 1}, {"a": 1})
    assert study.output.read_bytes() == good
    assert not list(tmp_path.rglob(".*.tmp"))


def test_items_are_appended_and_a_replaced_items_space_is_reused(tmp_path):
    from types import SimpleNamespace

    import numpy as np

    from landscape.study.runner import commit_item

    path, study = tmp_path / "s.h5", SimpleNamespace(path="s.toml", text="")

    def commit(i: int, value: float) -> None:
        commit_item(path, study, f"ck{i // 5}", {"path": "x"}, f"item{i % 5}",
                    {"complete": 1}, {"grid": np.full((40, 40), value)})

    for i in range(20):
        commit(i, i)
    size = path.stat().st_size
    for rnd in range(3):  # every item recomputed three times: without reuse the file would double
        for i in range(20):  # each round
            commit(i, 100 * (rnd + 1) + i)
    assert path.stat().st_size < 2 * size
    with h5py.File(path) as f:
        assert f.attrs["format"] == "landscape-study"
        assert [f[f"checkpoints/ck{i // 5}/item{i % 5}/result/grid"][0, 0] for i in range(20)] \
            == [300 + i for i in range(20)]


def test_output_that_is_not_a_study_is_refused(tmp_path, ckdir):
    study = parse_study(write(tmp_path, STUDY.format(ck=ckdir)))
    study.output.parent.mkdir(parents=True)
    with h5py.File(study.output, "w") as f:
        f.attrs["format"] = "landscape-run"
    with pytest.raises(ConfigError, match="not a landscape study"):
        plan_study(study)


# ------------------------------------------------------------------------ the commands
def test_batch_and_report_commands(done, tmp_path):
    study, _ = done
    r = runner.invoke(app, ["batch", str(study.path), "--json", "--no-figures"])
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    assert d["computed"] == 0 and d["skipped"] == 6 and d["failed"] == 0
    vals = {(i["checkpoint"], i["name"]): i["values"] for i in d["results"]}
    assert all("tr(H)" in v for (c, n), v in vals.items() if n == "trace")
    r = runner.invoke(app, ["batch", str(study.path), "--check", "--only", "trace", "--force",
                            "--json"])
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    assert d["compute"] == 2 and {i["name"] for i in d["items"]} == {"trace"}
    out = tmp_path / "rep"
    r = runner.invoke(app, ["report", str(study.output), "--out", str(out)])
    assert r.exit_code == 0, r.output
    md = (out / "summary.md").read_text()
    assert "| checkpoint | trace: tr(H) | eig: λ_max | eig: λ_min |" in md
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert "summary.png" in pngs and sum(n.endswith("__line.png") for n in pngs) == 2
    assert all((out / n).stat().st_size > 5000 for n in pngs)


def test_batch_exit_codes(tmp_path, ckdir):
    bad = write(tmp_path,
                f'[checkpoints]\nfiles = ["{ckdir}/a.pt"]\n[metrics.trace]\nprobes = "many"\n')
    r = runner.invoke(app, ["batch", str(bad)])
    assert r.exit_code == 2
    assert f"{bad}:4:" in r.output and "probes must be an integer" in r.output
    failing = write(
        tmp_path,
        f'[checkpoints]\nfiles = ["{ckdir}/nolr.pt"]\n[metrics.stability]\nprobes = 3\n',
        "failing.toml",
    )
    r = runner.invoke(app, ["batch", str(failing), "--no-figures"])
    assert r.exit_code == 1 and "1 item(s) failed" in r.output
    r = runner.invoke(app, ["report", str(tmp_path / "nothing.h5")])
    assert r.exit_code == 2 and "no such file" in r.output


def test_headlines_of_a_nan_free_record(done):
    study, _ = done
    rec = read_study(study.output)
    for it in rec.items:
        for q, v, e in HEADLINES[it["kind"]](it["result"]):
            assert math.isfinite(v), (it["name"], q)


def test_run_directories_give_checkpoints_by_step_and_a_figure_over_steps(tmp_path):
    from landscape.study.report import overview_figure
    from landscape.train import TrainConfig, train

    cfg = TrainConfig(model="mlp", model_kwargs={"widths": [3]}, data="digits", data_kwargs=DATA,
                      optimizer="sgd",
                      batch_size=20, steps=4, checkpoint_every=2, dtype="float64", plot=False)
    train(cfg, tmp_path / "runs" / "r1")
    text = ('[checkpoints]\nruns = ["runs/*"]\n[problem]\ndtype = "float64"\nsamples = 20\n'
            '[metrics.trace]\nprobes = 4\n')
    study = parse_study(write(tmp_path, text))
    assert [c.label for c in study.checkpoints] == ["runs|r1|step-000002", "runs|r1|step-000004",
                                                    "runs|r1|final"]
    final_only = parse_study(
        write(
            tmp_path,
            text.replace('runs = ["runs/*"]', 'runs = ["runs/r1"]\nrun_checkpoints = "final"'),
            "final.toml",
        )
    )
    assert [c.label for c in final_only.checkpoints] == ["runs|r1|final"]
    run_study(study)
    rec = read_study(study.output)
    assert [rec.checkpoints[lb]["step"] for lb in rec.checkpoints] == [
        4,
        2,
        4,
    ]  # file order: by name
    fig = overview_figure(rec)
    ax = fig.axes[0]
    assert ax.get_xlabel() == "training step" and sorted(ax.lines[0].get_xdata()) == [2, 4, 4]


def test_per_layer_items_give_the_blocks_table_and_their_spread(tmp_path, ckdir):
    """``per_layer = true``: each block's λ_max equals the dense principal block's, the stored
    spread is that of the blocks, and the report has one blocks table per checkpoint."""
    study = parse_study(write(tmp_path, f"""\
[study]
output = "s.h5"
figures = ""
[problem]
dtype = "float64"
[checkpoints]
files = ["{ckdir}/a.pt"]
[metrics.eig]
per_layer = true
tol = 1e-10
[metrics.trace]
per_layer = true
probes = 10
"""))
    assert run_study(study).count("computed") == 2
    rec = read_study(study.output)
    label = study.checkpoints[0].label
    layers = rec.item(label, "eig")["result"]["layers"]
    pb = Checkpoint.load(ckdir / "a.pt").problem(dtype="float64")
    H = landscape.Hessian(pb).dense()
    tops = {}
    for block, names in pb.layout.groups().items():
        idx = torch.cat([torch.arange(pb.layout.slice(n).start, pb.layout.slice(n).stop)
                         for n in names])
        tops[block] = float(torch.linalg.eigvalsh(H[idx][:, idx])[-1])
        got = float(layers[block]["metrics"]["eigenvalues"]["values"][0])
        assert got == pytest.approx(tops[block], rel=1e-8)
    spread = rec.item(label, "eig")["result"]["blocks"]["lambda_max"]
    assert spread["max"] == pytest.approx(max(tops.values()), rel=1e-8)
    assert spread["ratio"] == pytest.approx(max(tops.values()) / min(tops.values()), rel=1e-8)
    md = summary_markdown(rec)
    assert "## Blocks" in md and "| block | params | λ_max | tr(H) |" in md
    assert all(f"| {block} |" in md for block in tops)
    assert "λ_max max/min block" in md
