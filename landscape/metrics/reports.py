"""The settings of the report commands ``landscape fisher``, ``noise`` and ``stability``, declared
once: their flags, and the keys of a study file's ``[metrics.fisher]``, ``[metrics.noise]`` and
``[metrics.stability]`` tables, both follow from these. Torch-free (the reports themselves are in
:mod:`landscape.metrics.fisher` and :mod:`landscape.metrics.stability`)."""

from __future__ import annotations

from ..schema import Option, choice, integer, positive

_TOL = positive(1e-4, "Relative residual tolerance of Lanczos.")
_MAX_STEPS = integer(1, help="Cap on Lanczos steps.")
_S_SAMPLES = integer(1, help="Seeded subset of samples for the non-uniformity s (default: all).")
_CHUNK = integer(1, help="Samples per chunk of per-sample vectors / Gram block (default: fit the "
                         "memory budget).")

FISHER: dict[str, Option] = {
    "probes": integer(2, 100, "Rademacher probes shared by all traces, norms and cosines."),
    "mc_samples": integer(1, 16, "Labels drawn from the model per sample for the Monte-Carlo "
                                 "Fisher (its products cost the same for any number; its errors "
                                 "cover the draws)."),
    "tol": _TOL,
    "max_steps": _MAX_STEPS,
    "chunk": _CHUNK,
}

NOISE: dict[str, Option] = {
    "s_samples": _S_SAMPLES,
    "tol": _TOL,
    "max_steps": _MAX_STEPS,
    "chunk": _CHUNK,
    "g_rtol": Option("float", 0.0, 0.0, help="Drop output-space directions of each loss Hessian "
                                             "below this fraction of its largest eigenvalue (0: "
                                             "exact; the dropped trace is reported)."),
}

STABILITY: dict[str, Option] = {
    "lr": positive(None, "Learning rate η (default: the checkpoint's recorded one)."),
    "sgd_batch_size": integer(1, help="SGD batch size B (default: the checkpoint's recorded one).",
                              flag="--batch-size"),
    "probes": integer(2, 100, "Probes for the Hessian's Frobenius norm."),
    "tol": _TOL,
    "max_steps": _MAX_STEPS,
    "s_samples": _S_SAMPLES,
    "chunk": _CHUNK,
    "sufficient": Option("bool", False, help="Also test the slides' matrix condition (sufficient, "
                                             "not necessary)."),
    "sampling": choice("without", "with",
                       help="How the SGD minibatches are drawn: without replacement (landscape's "
                            "SGD, any epoch-based shuffling; c_B = (n-B)/(B(n-1))) or with "
                            "(c_B = 1/B)."),
}
