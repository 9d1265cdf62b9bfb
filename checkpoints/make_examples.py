"""Make the small example checkpoints shipped in ``checkpoints/``, with the library's training loop
(the code path of ``landscape train``)::

    python checkpoints/make_examples.py            # all three, about a minute on one CPU core
    python checkpoints/make_examples.py --only digits-mlp-sgd

=====================  ======================================================================
``digits-mlp-gd.pt``   MLP 64-128-128-10 (ReLU) on digits, full-batch GD, lr 0.1, no momentum,
                       until the training loss is below 5e-3 (at most 5000 steps)
``digits-mlp-sgd.pt``  the same MLP by plain minibatch SGD, batch 32, lr 0.1, 30 epochs
``digits-cnn-bn.pt``   a LeNet-like CNN with BatchNorm on digits as 1x8x8 images (conv 3x3 8, 16
                       channels, one hidden layer of 32), SGD with momentum 0.9, lr 0.05,
                       batch 64, 15 epochs
=====================  ======================================================================

Each is the run's ``final.pt`` (float32, seed 0; digits split 80/20 with seed 0), well under 1 MB.
The equivalent command for the first one::

    landscape train --model mlp --model-arg widths=[128,128] --data digits --optimizer gd \\
        --lr 0.1 --steps 5000 --until-loss 5e-3 --eval-every 25 --out runs/digits-mlp-gd
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

from landscape.io.checkpoint import Checkpoint
from landscape.train import TrainConfig, train

HERE = Path(__file__).resolve().parent

EXAMPLES: dict[str, TrainConfig] = {
    "digits-mlp-gd": TrainConfig(
        model="mlp", model_kwargs={"widths": [128, 128]}, data="digits", optimizer="gd", lr=0.1,
        steps=5000, until_loss=5e-3, eval_every=25, seed=0, plot=False),
    "digits-mlp-sgd": TrainConfig(
        model="mlp", model_kwargs={"widths": [128, 128]}, data="digits", optimizer="sgd", lr=0.1,
        momentum=0.0, batch_size=32, epochs=30, seed=0, plot=False),
    "digits-cnn-bn": TrainConfig(
        model="cnn", model_kwargs={"channels": [8, 16], "hidden": [32], "kernel_size": 3,
                                   "batchnorm": True},
        data="digits", data_kwargs={"image": True}, optimizer="sgd", lr=0.05, momentum=0.9,
        batch_size=64, epochs=15, seed=0, plot=False),
}


def make(name: str, out_dir: Path) -> Path:
    """Train example ``name`` in a temporary run directory and keep its ``final.pt``."""
    with tempfile.TemporaryDirectory() as tmp:
        result = train(EXAMPLES[name], Path(tmp) / name)
        ckpt = Checkpoint.load(result.path / "final.pt")
    ckpt.training["run"] = None  # the temporary directory is gone
    ckpt.state_dict = {k: (v.float() if v.is_floating_point() else v) for k,
                       v in ckpt.state_dict.items()}
    dest = ckpt.save(out_dir / f"{name}.pt")
    f = result.final
    print(f"{dest}: {result.step} steps, train loss {f['train_loss']:.3g}, "
          f"test accuracy {f['test_accuracy']:.3f}, {dest.stat().st_size / 1024:.0f} KiB",
          file=sys.stderr)
    return dest


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=sorted(EXAMPLES), action="append", help="make only these")
    parser.add_argument("--out", type=Path, default=HERE, help="folder for the .pt files")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (1: the same bits everywhere)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    for name in args.only or EXAMPLES:
        make(name, args.out)
    print(f"done in {time.perf_counter() - t:.0f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
