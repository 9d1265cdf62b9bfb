"""Shared set-up of the benchmarks: the digits data and the models the issues name."""

from __future__ import annotations

import time

import torch
from sklearn.datasets import load_digits
from torch import nn


def digits(image: bool = False, dtype=torch.float32):
    d = load_digits()
    X = torch.tensor(d.data, dtype=dtype) / 16.0
    if image:
        X = X.reshape(-1, 1, 8, 8)
    return X, torch.tensor(d.target)


def digits_mlp(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 128), nn.ReLU(),
                         nn.Linear(128, 10))


def digits_cnn(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 32, 3, padding=1),
                         nn.ReLU(),
                         nn.MaxPool2d(2), nn.Flatten(), nn.Linear(32 * 16, 64), nn.ReLU(),
                         nn.Linear(64, 10))


def pretrain(model: nn.Module, X, Y, steps: int = 300, lr: float = 0.1, seed: int = 0) -> nn.Module:
    """A few hundred SGD steps so the Hessian is that of a trained network, not of its init."""
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    for _ in range(steps):
        idx = torch.randint(0, X.shape[0], (128,), generator=g)
        opt.zero_grad()
        nn.functional.cross_entropy(model(X[idx]), Y[idx]).backward()
        opt.step()
    return model


def best_of(fn, repeats: int = 3) -> float:
    """Minimum wall time of ``repeats`` calls (the least disturbed by other processes)."""
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def markdown(rows: list[list], header: list[str]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


def dispatch(args, work, run, table) -> None:
    """The main of a benchmark whose measurements run in worker processes: ``--worker CONFIG``
    measures one configuration and prints its JSON line, ``--table`` prints the tables of
    ``--results``, otherwise ``run`` measures what is missing."""
    import json
    from pathlib import Path

    if args.worker:
        print(json.dumps(work(json.loads(args.worker))))
    elif args.table:
        table(Path(args.results))
    else:
        run(args)


def measure_in_worker(script: str, cfg: dict, threads: int, path, hide=("config",)) -> dict:
    """Run ``script --worker CFG`` in a fresh process (its peak memory its own), append its record
    (or its last error line) to the JSON-lines file ``path`` and echo it on stderr."""
    import json
    import os
    import subprocess
    import sys

    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run([sys.executable, script, "--worker", json.dumps(cfg)],
                          capture_output=True, text=True, env=env, check=False)
    if proc.returncode != 0:
        lines = proc.stderr.strip().splitlines()
        rec = {"config": cfg, "error": lines[-1] if lines else "failed"}
    else:
        rec = {"config": cfg, **json.loads(proc.stdout.strip().splitlines()[-1])}
    with open(path, "a") as f:
        f.write(json.dumps(rec) + "\n")
    print(f"    {json.dumps({k: v for k, v in rec.items() if k not in hide})}", file=sys.stderr)
    return rec
