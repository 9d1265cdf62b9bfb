"""The settings that turn a checkpoint into a :class:`~landscape.problem.Problem`, declared once:
the problem flags of every measuring command and a study file's ``[problem]`` table (and its
per-item overrides) both follow from :data:`PROBLEM`. Torch-free."""

from __future__ import annotations

from .schema import Option, choice, integer

PROBLEM: dict[str, Option] = {
    "model": Option("str", help="Model factory for a foreign state_dict (or to override the "
                                "checkpoint's): FILE.py:FUNCTION or package.module:FUNCTION "
                                "returning an nn.Module."),
    "data": Option("str", help="Data factory: FILE.py:FUNCTION returning (inputs, targets), a "
                               "Dataset or a DataLoader (read batch by batch, never held whole)."),
    "loss": Option("str", help="cross-entropy, mse (½‖f−y‖² per sample), causal-lm "
                               "(next-token cross-entropy over [B, T, V] logits, labels −100 "
                               "ignored, the mean over all counted tokens) or token-ce (the same "
                               "without the shift); defaults to the checkpoint's."),
    "split": choice("train", "test", help="Which data split to measure on."),
    "samples": integer(1, help="Use a seeded random subset of this many samples (default: all)."),
    "batch_size": integer(1, help="Samples per product batch (memory and speed only: every "
                                  "estimate uses all samples with exact weights). Default 256, "
                                  "fewer if the memory budget needs it.", flag="--product-batch"),
    "bn_batch": integer(1, help="With --train-mode: the batch over which BatchNorm takes its "
                                "statistics (the Hessian depends on it; default the product "
                                "batch)."),
    "params": Option("str", help="Regular expression: restrict to the matching parameters (others "
                                 "held fixed)."),
    "dtype": choice("float32", "float64", "bfloat16", "float16",
                    help="Precision of the model and the products (bfloat16/float16: the "
                         "products in it, their sums and the estimators in float32)."),
    "check_precision": Option("bool", False, help="With --dtype bfloat16/float16: report how far "
                                                  "a few products are from float32's."),
    "train_mode": Option("bool", False, help="Evaluate with BatchNorm batch statistics and dropout "
                                             "on (default: eval mode, running statistics)."),
    "memory": Option("str", help="Memory budget, e.g. 20GiB or 800MB (a plain number is MiB). "
                                 "Default: 90% of a GPU's free memory, half the available RAM on "
                                 "a CPU."),
    "allow_random_data": Option("bool", False, help="Measure even if two reads of the data differ "
                                                    "(a shuffling loader, random augmentation); "
                                                    "recorded in the output."),
}

#: how a checkpoint loads: in a study, the same for every item (no per-item override)
LOADING = ("model", "data", "loss")
