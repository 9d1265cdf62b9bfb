"""Tracked training: any optimizer of :mod:`landscape.optim` with curvature metrics every K steps,
evaluation, checkpoints in the core format and exact resume (``landscape train``).

>>> from landscape.train import TrainConfig, train, resume, read_run
>>> cfg = TrainConfig(model="mlp", data="digits", optimizer="sam", hyper={"rho": 0.05}, lr=0.1,
...                   epochs=5, track=["trace", "eig"], every=50)
>>> result = train(cfg, "runs/sam-digits")           # doctest: +SKIP
>>> read_run("runs/sam-digits")["final"]["test_accuracy"]  # doctest: +SKIP
"""

from __future__ import annotations

from ..lazy import exports

_EXPORTS = {
    **dict.fromkeys(["FULL_BATCH", "RunResult", "StopRequest", "TrainConfig", "evaluate", "resume",
                     "train"], "loop"),
    **dict.fromkeys(["BASE_COLUMNS", "RunDir", "Series", "read_run"], "run"),
    **dict.fromkeys(["TRACKERS", "Tracker", "parse_track", "register_tracker", "track"],
                    "tracking"),
}
__getattr__, __dir__ = exports(__name__, _EXPORTS)

__all__ = [
    "BASE_COLUMNS",
    "FULL_BATCH",
    "TRACKERS",
    "RunDir",
    "RunResult",
    "Series",
    "StopRequest",
    "Tracker",
    "TrainConfig",
    "evaluate",
    "parse_track",
    "read_run",
    "register_tracker",
    "resume",
    "track",
    "train",
]
