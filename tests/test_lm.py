"""Language models: dict batches, HF outputs, the token losses and the curvature of a tiny GPT-2,
against an independent float64 reference: the model's own HF loss on all sequences padded into one
batch, differentiated densely by ``torch.func.hessian``, while landscape reads the sequences in
uneven, differently padded batches."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader

import landscape
from landscape.curvature.fisher import EmpiricalFisher, Fisher
from landscape.curvature.ggn import GGN
from landscape.curvature.hessian import Hessian
from landscape.errors import ConfigError
from landscape.estimators.lanczos import top_eigenvalues
from landscape.estimators.trace import hutchinson_trace
from landscape.problem import Problem

transformers = pytest.importorskip("transformers")

VOCAB, LENGTHS = 13, [7, 4, 6, 2, 7, 5, 3]


def tiny_gpt2(attn: str = "eager", seed: int = 0, **config) -> torch.nn.Module:
    """A 1-layer GPT-2 with d = 8 (1,232 parameters), float64, from a config (``config``: other
    GPT2Config settings)."""
    torch.manual_seed(seed)
    cfg = transformers.GPT2Config(n_layer=1, n_embd=8, n_head=2, vocab_size=VOCAB, n_positions=16,
                                  bos_token_id=0, eos_token_id=0, attn_implementation=attn,
                                  **config)
    return transformers.GPT2LMHeadModel(cfg).double().eval()


class Sequences(torch.utils.data.Dataset):
    """Token sequences of different lengths (seeded)."""

    def __init__(self, lengths=LENGTHS, seed: int = 1) -> None:
        g = torch.Generator().manual_seed(seed)
        self.seqs = [torch.randint(0, VOCAB, (n,), generator=g) for n in lengths]

    def __len__(self) -> int:
        return len(self.seqs)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.seqs[i]


def pad(items: list[torch.Tensor]) -> dict:
    """Right-pad to the batch's longest: attention_mask 0 and labels −100 on the padding."""
    length = max(len(s) for s in items)
    ids = torch.zeros(len(items), length, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, s in enumerate(items):
        ids[i, : len(s)], mask[i, : len(s)] = s, 1
    labels = ids.masked_fill(mask == 0, -100)
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def loader(batch_size: int = 3) -> DataLoader:
    return DataLoader(Sequences(), batch_size=batch_size, collate_fn=pad)


def reference_loss(model, batch: dict, params: dict) -> torch.Tensor:
    """The mean next-token cross-entropy over the counted tokens of the batch, written out (HF's
    own ``.loss`` casts the logits to float32)."""
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    logits = torch.func.functional_call(model, params, (), inputs).logits
    labels = batch["labels"][:, 1:]
    logp = torch.log_softmax(logits[:, :-1], dim=-1)
    keep = labels != -100
    picked = logp.gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return -(picked * keep).sum() / keep.sum()


@pytest.fixture(scope="module")
def reference():
    """The loss, gradient and dense Hessian of the loss on all sequences in one padded batch."""
    model = tiny_gpt2()
    params = {k: v.detach() for k, v in model.named_parameters()}
    batch = pad(Sequences().seqs)
    names = list(params)

    def f(flat):
        ps, o = {}, 0
        for n in names:
            ps[n] = flat[o : o + params[n].numel()].reshape(params[n].shape)
            o += params[n].numel()
        return reference_loss(model, batch, ps)

    theta = torch.cat([params[n].reshape(-1) for n in names])
    # row by row with plain autograd: torch.func.hessian (vmapped rows) gives one wrong column
    # through HF's GPT-2 in torch 2.13 (c_proj.bias against ln_f.weight, off by 0.1, asymmetric),
    # where landscape's products agree with finite differences and with this reference
    H = torch.autograd.functional.hessian(f, theta, vectorize=False)
    return {"model": model, "loss": float(f(theta)), "grad": torch.func.grad(f)(theta), "H": H,
            "batch": batch}


def problem(model, batch_size: int = 3, loss: str = "causal-lm", **kw) -> Problem:
    return Problem(model, loss, loader(), batch_size=batch_size, **kw)


def test_loss_and_gradient_are_the_per_token_mean_over_all_sequences(reference):
    for b in (1, 2, 3, 7):  # uneven batches, each padded to its own longest
        pb = problem(reference["model"], batch_size=b)
        assert pb.tokens == sum(n - 1 for n in LENGTHS)
        assert pb.loss_value() == pytest.approx(reference["loss"], rel=1e-13, abs=0)
        value, g = pb.gradient()
        assert value == pytest.approx(reference["loss"], rel=1e-13, abs=0)
        assert torch.allclose(g, reference["grad"], rtol=0, atol=1e-13)


def test_hessian_and_its_eigenvalues_match_the_dense_reference(reference):
    pb = problem(reference["model"])
    H = reference["H"]
    dense = Hessian(pb).dense()
    assert (dense - H).abs().max() <= 1e-12 * H.abs().max()
    exact = torch.linalg.eigvalsh(H)
    eig = top_eigenvalues(Hessian(pb), k=3, which="both", tol=1e-12, seed=0)
    got = torch.as_tensor(eig.values, dtype=torch.float64).sort().values
    want = torch.cat([exact[:3], exact[-3:]])
    assert torch.allclose(got, want, rtol=0, atol=1e-10)


def test_hutchinson_trace_is_within_its_standard_error(reference):
    pb = problem(reference["model"])
    est = hutchinson_trace(Hessian(pb), probes=64, seed=3)
    exact = float(torch.trace(reference["H"]))
    assert abs(est.value - exact) <= 4 * est.stderr


def test_sdpa_attention_runs_its_products_on_the_math_kernel(reference):
    """HF's SDPA attention: the fused CPU kernel has no double backward; the problem says it
    chose the math kernel, and its Hessian is the eager model's."""
    sdpa = tiny_gpt2("sdpa")
    pb = problem(sdpa)
    assert pb.attention == "sdpa-math"
    assert problem(reference["model"]).attention is None
    v = torch.randn(pb.p, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(Hessian(pb).matvec(v), reference["H"] @ v, rtol=0, atol=1e-11)
    # per-sample gradients: HF's mask code branches on the data, so they run one by one
    F = EmpiricalFisher(pb).dense()
    assert torch.allclose(F, EmpiricalFisher(problem(reference["model"])).dense(), atol=1e-13)


def per_sequence_gradients(model) -> torch.Tensor:
    """``∇l_i`` with ``l_i = (n/N) Σ_t ℓ_it``, one sequence at a time, by autograd."""
    seqs = Sequences().seqs
    n, tokens = len(seqs), sum(len(s) - 1 for s in seqs)
    rows = []
    for s in seqs:
        model.zero_grad()
        params = dict(model.named_parameters())
        out = reference_loss(model, pad([s]), params) * (len(s) - 1) * n / tokens
        out.backward()
        rows.append(torch.cat([p.grad.reshape(-1) for p in model.parameters()]))
    return torch.stack(rows)


def test_empirical_fisher_is_the_second_moment_of_per_sequence_gradients(reference):
    model = tiny_gpt2()
    G = per_sequence_gradients(model)
    want = G.T @ G / G.shape[0]
    got = EmpiricalFisher(problem(reference["model"])).dense()
    assert torch.allclose(got, want, rtol=0, atol=1e-13)


class LinearSoftmax(torch.nn.Module):
    """Logits ``W onehot(x_t) + b``: linear in the parameters, so the Hessian of any loss of the
    logits is its GGN exactly."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.head = torch.nn.Linear(VOCAB, VOCAB).double()

    def forward(self, input_ids, attention_mask=None):
        return self.head(torch.nn.functional.one_hot(input_ids, VOCAB).double())


@pytest.mark.parametrize("loss", ["causal-lm", "token-ce"])
def test_ggn_equals_the_hessian_of_a_linear_softmax(loss):
    pb = problem(LinearSoftmax(), loss=loss)
    H = Hessian(pb).dense()
    assert torch.allclose(GGN(pb).dense(), H, rtol=0, atol=1e-13)
    assert torch.linalg.eigvalsh(H).min() > -1e-13


def test_mc_fisher_draws_a_label_per_token_and_tends_to_the_ggn():
    """``E F_mc = GGN`` with labels drawn per token; the Frobenius error of m draws shrinks as
    1/√m (here 0.04 at m = 4000 against 2.4 at m = 1, relative)."""
    pb = problem(LinearSoftmax())
    G = GGN(pb).dense()
    rel = {m: float((Fisher(pb, mc_samples=m, seed=0).dense() - G).norm() / G.norm())
           for m in (1, 4000)}
    assert rel[4000] < 0.1 < rel[1]
    assert 0.5 < rel[4000] * math.sqrt(4000) / rel[1] < 2
    # the same labels whatever the batches
    a = Fisher(problem(LinearSoftmax(), batch_size=2), mc_samples=3, seed=5).dense()
    b = Fisher(problem(LinearSoftmax(), batch_size=7), mc_samples=3, seed=5).dense()
    assert torch.allclose(a, b, rtol=0, atol=1e-14)


def test_token_ce_scores_every_labelled_position_without_the_shift():
    pb = problem(LinearSoftmax(), loss="token-ce")
    batch = pad(Sequences().seqs)
    with torch.no_grad():
        logits = LinearSoftmax()(batch["input_ids"])
    want = torch.nn.functional.cross_entropy(logits.reshape(-1, VOCAB),
                                             batch["labels"].reshape(-1), ignore_index=-100)
    assert pb.tokens == sum(LENGTHS)
    assert pb.loss_value() == pytest.approx(want.item(), rel=1e-13)


def test_transformer_encoder_layer_with_token_ce():
    """A plain torch model (``nn.TransformerEncoderLayer``) taking a tensor of token ids."""

    class Encoder(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            torch.manual_seed(0)
            self.emb = torch.nn.Embedding(VOCAB, 8)
            self.layer = torch.nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0,
                                                          batch_first=True)
            self.head = torch.nn.Linear(8, VOCAB)

        def forward(self, ids):
            return self.head(self.layer(self.emb(ids)))

    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, VOCAB, (5, 6), generator=g)
    pb = Problem(Encoder().double(), "token-ce", (x, x), batch_size=2)
    H = Hessian(pb).dense()
    names = [n for n, _ in Encoder().named_parameters()]
    params = {n: t.detach() for n, t in Encoder().double().named_parameters()}
    theta = torch.cat([params[n].reshape(-1) for n in names])

    def f(flat):
        ps, o = {}, 0
        for n in names:
            ps[n] = flat[o : o + params[n].numel()].reshape(params[n].shape)
            o += params[n].numel()
        out = torch.func.functional_call(Encoder().double(), ps, (x,))
        return torch.nn.functional.cross_entropy(out.reshape(-1, VOCAB), x.reshape(-1))

    assert pb.attention == "sdpa-math"
    with torch.nn.attention.sdpa_kernel([torch.nn.attention.SDPBackend.MATH]):
        want = torch.autograd.functional.hessian(f, theta, vectorize=False)
    assert torch.allclose(H, want, rtol=0, atol=1e-11)


@pytest.mark.parametrize("make, word", [
    (lambda: {"input_ids": torch.zeros(2, 3, dtype=torch.long),
              "labels": torch.zeros(2, 4, dtype=torch.long)}, "got int64 labels"),
    (lambda: {"input_ids": torch.zeros(2, 3, dtype=torch.long),
              "labels": torch.full((2, 3), VOCAB + 5)}, "outside the model's vocabulary"),
    (lambda: {"input_ids": torch.zeros(2, 3, dtype=torch.long),
              "labels": torch.full((2, 3), -100)}, "counts no token"),
    (lambda: {"tokens": torch.zeros(2, 3, dtype=torch.long)}, "no 'labels'"),
])
def test_bad_token_data_get_one_clear_error(make, word):
    with pytest.raises(ConfigError, match=word):
        Problem(tiny_gpt2(), "causal-lm", make())


def test_cross_entropy_on_sequence_logits_points_to_causal_lm():
    with pytest.raises(ConfigError, match="--loss causal-lm"):
        Problem(tiny_gpt2(), "cross-entropy", loader())


def test_labels_default_to_the_input_ids_without_the_padding():
    """A dict batch without labels: the input_ids are the labels, −100 where the mask is 0."""
    with_labels = problem(tiny_gpt2())

    def strip(items):
        out = pad(items)
        del out["labels"]
        return out

    without = Problem(tiny_gpt2(), "causal-lm", DataLoader(Sequences(), batch_size=3,
                                                          collate_fn=strip))
    assert without.tokens == with_labels.tokens
    assert without.loss_value() == pytest.approx(with_labels.loss_value(), rel=1e-14)
    assert landscape.problem.Problem is Problem


# ----------------------------------------------------------------------------- blocks and the CLI
def test_blocks_cut_the_fused_attention_projection_into_q_k_v(reference):
    """``--per-layer``'s blocks of a GPT-2: one per module, with ``c_attn`` cut into its query,
    key and value columns; each block's operator is the principal block of the dense Hessian."""
    from landscape.metrics.run import layer_operators

    pb = problem(reference["model"])
    ops = layer_operators(pb)
    names = list(ops)
    assert {"transformer.h.0.attn.c_attn.q", "transformer.h.0.attn.c_attn.k",
            "transformer.h.0.attn.c_attn.v", "transformer.h.0.attn.c_proj",
            "transformer.wte", "transformer.ln_f"} <= set(names)
    assert sum(op.shape[0] for op in ops.values()) == pb.p
    H = reference["H"]
    offsets = dict(zip(pb.layout.names, pb.layout.offsets))
    w = offsets["transformer.h.0.attn.c_attn.weight"]
    b = offsets["transformer.h.0.attn.c_attn.bias"]
    d = 8  # n_embd: the weight is [d, 3d], the key columns are d … 2d−1
    key = torch.cat([w + torch.arange(d)[:, None] * 3 * d + torch.arange(d, 2 * d),
                     (b + torch.arange(d, 2 * d))[None]]).reshape(-1)
    got = ops["transformer.h.0.attn.c_attn.k"].dense()
    assert torch.allclose(got, H[key][:, key], rtol=0, atol=1e-13)


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
    """A saved tiny GPT-2 (``save_pretrained``) and a data factory file beside it."""
    folder = tmp_path_factory.mktemp("hf")
    tiny_gpt2("sdpa").save_pretrained(folder / "model")
    (folder / "tokens.py").write_text(
        "import sys\n"
        f"sys.path.insert(0, {str(Path(__file__).parent)!r})\n"
        "from test_lm import loader\n"
        "def tokens():\n    return loader()\n")
    return folder


def cli(*args):
    from typer.testing import CliRunner

    from landscape.cli.app import app

    return CliRunner().invoke(app, [str(a) for a in args])


def test_sharpness_of_a_local_hf_directory(hf_dir, reference, tmp_path):
    r = cli("sharpness", f"hf:{hf_dir / 'model'}", "--data", f"{hf_dir / 'tokens.py'}:tokens",
            "--metric", "eig", "--top-k", "2", "--tol", "1e-10", "--dtype", "float64", "--json")
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    exact = torch.linalg.eigvalsh(reference["H"]).flip(0)[:2]
    got = torch.tensor(out["metrics"]["eigenvalues"]["values"], dtype=torch.float64)
    assert torch.allclose(got, exact, rtol=0, atol=1e-10)
    assert out["settings"]["loss"] == "causal-lm" or out["identity"]["loss"] == "causal-lm"
    assert out["data"]["tokens"] == sum(n - 1 for n in LENGTHS)
    assert out["data"]["attention"] == "sdpa-math"


def test_per_block_density_figure_and_file(hf_dir, tmp_path):
    plot, h5 = tmp_path / "blocks.png", tmp_path / "blocks.h5"
    r = cli("sharpness", f"hf:{hf_dir / 'model'}", "--data", f"{hf_dir / 'tokens.py'}:tokens",
            "--metric", "density", "--runs", "2", "--steps", "6", "--per-layer", "--plot", plot,
            "--out", h5)
    assert r.exit_code == 0, r.output
    assert plot.stat().st_size > 10_000
    again = cli("plot", h5, "--out", tmp_path / "again.png")
    assert again.exit_code == 0, again.output
    assert (tmp_path / "again.png").exists() and not list(tmp_path.glob("again-*.png"))


def test_train_an_hf_model_with_sam_then_measure_its_checkpoint(hf_dir, tmp_path):
    """SAM on a causal LM, with gradient accumulation over micro-batches of padded sequences of
    different lengths (the same steps as without), then the checkpoint measured; and a bfloat16
    autocast run of the same model."""
    run = tmp_path / "run"
    no_dropout = tmp_path / "model"  # training runs in train mode: same steps need no dropout
    tiny_gpt2("sdpa", resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0).save_pretrained(no_dropout)
    common = ["train", "--model", f"hf:{no_dropout}", "--data",
              f"{hf_dir / 'tokens.py'}:tokens", "--optimizer", "sam", "--lr", "0.05",
              "--batch-size", "3", "--steps", "4", "--no-plot"]
    r = cli(*common, "--out", run, "--dtype", "float64", "--accumulate", "2")
    assert r.exit_code == 0, r.output
    whole = cli(*common, "--out", tmp_path / "whole", "--dtype", "float64")
    assert whole.exit_code == 0, whole.output
    a = landscape.load(run / "final.pt").state_dict
    b = landscape.load(tmp_path / "whole" / "final.pt").state_dict
    assert all(torch.allclose(a[k], b[k], rtol=0, atol=1e-12) for k in a)
    bf = cli(*common, "--out", tmp_path / "bf16", "--autocast", "bfloat16", "--json")
    assert bf.exit_code == 0, bf.output
    assert math.isfinite(json.loads(bf.stdout)["final"]["train_loss"])
    ckpt = landscape.load(run / "final.pt")
    pb = ckpt.problem(dtype="float64")
    import h5py

    with h5py.File(run / "run.h5") as f:
        final = float(f["series/train_loss"][-1])
    assert pb.loss.name == "causal-lm"
    assert pb.loss_value() == pytest.approx(final, rel=1e-12)


@pytest.mark.parametrize("make, word", [
    (lambda d: d / "missing", "not found"),
    (lambda d: d, "no config.json"),
])
def test_bad_hf_directory_is_one_line(hf_dir, make, word):
    r = cli("sharpness", f"hf:{make(hf_dir)}", "--data", f"{hf_dir / 'tokens.py'}:tokens")
    assert r.exit_code == 2, r.output
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and word in lines[0], r.output


def test_bfloat16_products_are_summed_in_float32_and_checked_against_float32(reference):
    """``--dtype bfloat16``: the model and its products in bfloat16, the batches' sum and the
    estimators' vectors in float32; the precision check compares a few products with float32's
    (bfloat16 keeps 8 bits: a product is good to a few percent)."""
    from landscape.curvature.hessian import precision_check

    pb = problem(tiny_gpt2().float(), dtype="bfloat16")
    H = Hessian(pb)
    assert pb.dtype == torch.bfloat16 and H.dtype == torch.float32
    v = torch.randn(pb.p, generator=torch.Generator().manual_seed(0))
    exact = reference["H"].float() @ v
    got = H.matvec(v)
    assert got.dtype == torch.float32
    rel = float((got - exact).norm() / exact.norm())
    assert 1e-4 < rel < 0.1  # bfloat16 rounding: visible, bounded
    check = precision_check(pb, products=2)
    assert check["dtype"] == "bfloat16" and len(check["relative_difference"]) == 2
    assert 1e-4 < check["max_relative_difference"] < 0.1
    assert pb.loss_value() == pytest.approx(reference["loss"], rel=0.02)


def test_check_precision_needs_a_low_precision_dtype(hf_dir):
    r = cli("sharpness", f"hf:{hf_dir / 'model'}", "--data", f"{hf_dir / 'tokens.py'}:tokens",
            "--check-precision")
    assert r.exit_code == 2 and "--dtype bfloat16" in r.output, r.output


def test_block_spread_names_the_extreme_blocks():
    from landscape.metrics.run import block_spread

    layers = {name: {"metrics": {"eigenvalues": {"values": [lam], "which": "top"},
                                 "trace": {"estimate": tr}}}
              for name, lam, tr in (("a", 1.0, 10.0), ("b", 4.0, 20.0), ("c", 2.0, 30.0))}
    spread = block_spread(layers)
    assert spread["lambda_max"]["max_block"] == "b" and spread["lambda_max"]["min_block"] == "a"
    assert spread["lambda_max"]["ratio"] == 4.0
    t = torch.tensor([10.0, 20.0, 30.0], dtype=torch.float64)
    assert spread["trace"]["cv"] == pytest.approx(float(t.std() / t.mean()))


def test_a_token_loss_on_class_labels_is_one_clear_error():
    with pytest.raises(ConfigError, match="needs integer token labels"):
        Problem(torch.nn.Linear(3, 4), "causal-lm", (torch.zeros(5, 3), torch.zeros(5).long()))


def test_a_user_loss_file_on_dict_batches(hf_dir, tmp_path):
    """``--loss FILE.py:FUNCTION`` gets the outputs and the batch's labels (−100 for padding) and
    returns the batch mean; with all sequences in one batch, a token mean written by the user is
    the causal-lm loss, so the two give the same curvature along the gradient."""
    (tmp_path / "lm_loss.py").write_text(
        "import torch.nn.functional as F\n"
        "def next_token(outputs, labels):\n"
        "    v = outputs.shape[-1]\n"
        "    return F.cross_entropy(outputs[:, :-1].reshape(-1, v), labels[:, 1:].reshape(-1),\n"
        "                           ignore_index=-100)\n")
    got = {}
    for loss in ("causal-lm", f"{tmp_path / 'lm_loss.py'}:next_token"):
        r = cli("sharpness", f"hf:{hf_dir / 'model'}", "--data", f"{hf_dir / 'tokens.py'}:tokens",
                "--loss", loss, "--metric", "grad-curvature", "--product-batch", len(LENGTHS),
                "--dtype", "float64", "--json")
        assert r.exit_code == 0, r.output
        got[loss] = json.loads(r.stdout)
    lm, user = got.values()
    assert user["loss"].endswith(":next_token") and lm["loss"] == "causal-lm"
    assert user["loss_value"] == pytest.approx(lm["loss_value"], rel=1e-12)
    assert user["metrics"]["grad_curvature"]["estimate"] == pytest.approx(
        lm["metrics"]["grad_curvature"]["estimate"], rel=1e-10)
