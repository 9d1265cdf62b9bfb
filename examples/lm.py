"""A GPT-2-style causal language model and synthetic token batches, for ``--model`` / ``--data``
(and ``hf:DIR`` once saved with ``save_pretrained``). Needs ``pip install -e ".[hf]"``.

    python examples/lm.py save /tmp/gpt2-tiny            # a local HF directory (no download)
    landscape sharpness hf:/tmp/gpt2-tiny --data examples/lm.py:tokens --metric trace,eig
"""

from __future__ import annotations

import sys

import torch
from torch.utils.data import DataLoader, Dataset


def build(layers: int = 2, width: int = 64, heads: int = 4, vocab: int = 256,
          context: int = 64, seed: int = 0, attention: str = "sdpa"):
    """A GPT-2 language model built from a config (random weights, nothing downloaded)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    config = GPT2Config(n_layer=layers, n_embd=width, n_head=heads, vocab_size=vocab,
                        n_positions=context, bos_token_id=0, eos_token_id=0,
                        attn_implementation=attention)
    return GPT2LMHeadModel(config)


class Synthetic(Dataset):
    """Token sequences of seeded random lengths from a seeded first-order Markov chain (so there
    is something to learn), ``n`` of them, at most ``length`` tokens."""

    def __init__(self, n: int = 256, length: int = 64, vocab: int = 256, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        step = torch.randint(1, 8, (vocab,), generator=g)
        self.seqs = []
        for _ in range(n):
            size = int(torch.randint(length // 2, length + 1, (1,), generator=g))
            s = torch.empty(size, dtype=torch.long)
            s[0] = torch.randint(0, vocab, (1,), generator=g)
            noise = torch.randint(0, 4, (size,), generator=g)
            for t in range(1, size):
                s[t] = (s[t - 1] + step[s[t - 1]] + noise[t]) % vocab
            self.seqs.append(s)

    def __len__(self) -> int:
        return len(self.seqs)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.seqs[i]


def pad(items: list[torch.Tensor]) -> dict:
    """A batch as HF models take it: right-padded input_ids, attention_mask, and labels with −100
    on the padding."""
    length = max(len(s) for s in items)
    ids = torch.zeros(len(items), length, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, s in enumerate(items):
        ids[i, : len(s)], mask[i, : len(s)] = s, 1
    return {"input_ids": ids, "attention_mask": mask, "labels": ids.masked_fill(mask == 0, -100)}


def tokens(n: int = 256, length: int = 64, vocab: int = 256, batch_size: int = 16,
           seed: int = 0) -> DataLoader:
    """The data factory: a DataLoader of padded dict batches (not shuffled)."""
    return DataLoader(Synthetic(n, length, vocab, seed), batch_size=batch_size, collate_fn=pad)


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] != "save":
        sys.exit("usage: python examples/lm.py save DIR")
    build().save_pretrained(sys.argv[2])
    print(f"saved to {sys.argv[2]}")
