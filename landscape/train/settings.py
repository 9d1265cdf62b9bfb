"""The settings of a training run, declared once: the flags of ``landscape train`` follow from
:data:`TRAIN` and :data:`HYPER`, and :meth:`landscape.train.TrainConfig.validate` checks a run's
configuration against the same declarations. Torch-free."""

from __future__ import annotations

from ..schema import Option, integer, positive

TRAIN: dict[str, Option] = {
    "model": Option("str", "mlp", help="Model: mlp, cnn, resnet, two-layer, linear, or "
                                       "FILE.py:FUNCTION."),
    "data": Option("str", "digits", help="Dataset: digits, gaussian-mixture, teacher-student, "
                                         "parity, file, mnist, ... or FILE.py:FUNCTION."),
    "loss": Option("str", None, help="cross-entropy, mse (½‖f−y‖² per sample; on one-hot labels "
                                     "for a classification dataset), causal-lm or token-ce; "
                                     "default from the data: cross-entropy for classification, "
                                     "mse for regression, causal-lm for tokens."),
    "optimizer": Option("str", "sgd", flag="--optimizer -o",
                        help="gd (full batch), sgd (minibatch), sam, asam, fsam, sgd-tracer, "
                             "adam-tracer, rsam, mfvi, vsam, lb-diag-noise, lb-full-noise."),
    "base": Option("str", None, help="Base optimizer: sgd (with momentum) or adam."),
    "lr": positive(None, "Learning rate (default 0.1 for the sgd base, 1e-3 for adam)."),
    "momentum": Option("float", None, 0.0, help="SGD momentum (default 0.9; 0 for gd)."),
    "weight_decay": Option("float", 0.0, 0.0, help="Weight decay, applied once by the base "
                                                   "optimizer."),
    "batch_size": integer(1, 128, "Minibatch size (gd always uses the whole training set)."),
    "accumulate": integer(1, 1, "Gradient accumulation: each minibatch in K micro-batches whose "
                                "gradients are summed (the same step, about a K-th of the "
                                "activation memory; BatchNorm then sees micro-batch statistics)."),
    "autocast": Option("choice", None, choices=("bfloat16",),
                       help="Run the training forward passes under bfloat16 autocast (weights, "
                            "gradients and the optimizer stay in --dtype; the loss is summed in "
                            "float32). Evaluation and tracking run in --dtype."),
    "epochs": integer(1, help="Epochs to train (gd: one step per epoch). Default 10 unless "
                              "--steps."),
    "steps": integer(1, help="Optimizer steps to train (instead of --epochs)."),
    "until_loss": positive(None, "Stop earlier once the full training loss is below this (checked "
                                 "at each evaluation)."),
    "every": integer(1, 100, "Track every K steps (and at the end)."),
    "track_samples": integer(0, 1024, "Seeded subset of training samples used for tracking (0: "
                                      "all)."),
    "probes": integer(1, 20, "Random probes per trace / Frobenius estimate when tracking."),
    "track_batch_size": integer(1, 512, "Samples per Hessian-product batch when tracking (memory "
                                        "only)."),
    "eval_every": integer(1, help="Evaluate full train/test loss and accuracy every K steps "
                                  "(default once an epoch, at most 500 times)."),
    "checkpoint_every": integer(1, help="Also write RUN/step-XXXXXX.pt every K steps."),
}

#: the optimizers' own settings with a dedicated flag (docs/algorithms.md §3); each goes to the
#: optimizer as the keyword of :data:`HYPER_KEYWORDS` (its own name unless listed)
HYPER: dict[str, Option] = {
    "rho": Option("float", None, help="Perturbation radius (sam, asam, rsam, mfvi, vsam) or "
                                      "penalty weight (tracer)."),
    "eta_a": Option("float", None, help="ASAM offset in T = |θ| + η_a."),
    "gamma": Option("float", None, help="Fisher SAM radius γ."),
    "eta_f": Option("float", None, help="Fisher SAM η_f (0 gives SAM)."),
    "delta": Option("float", None, help="G-TRACER damping δ."),
    "beta": Option("float", None, help="G-TRACER smoothing β of f̄."),
    "sigma0": Option("float", None, help="Prior standard deviation σ₀ (mfvi, vsam)."),
    "small_batch": integer(1, help="Covariance noise: the small batch M_S to emulate."),
}
HYPER_KEYWORDS = {"sigma0": "prior_std"}
