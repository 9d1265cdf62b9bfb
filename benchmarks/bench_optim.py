"""Time per step of every optimizer of ``landscape.optim.OPTIMIZERS`` relative to ``sgd``.

Same model, same batches (128 digits images), same base (torch SGD, momentum 0.9). Two models:
``--model mlp`` (64-128-128-10, 26k parameters, ~1 ms/step on one CPU thread: per-step Python and
kernel-launch costs are a visible part of a step there, and drawing p Gaussian numbers costs ~10% of
an sgd step) and ``--model cnn`` (LeNet-like, conv 32-64 + dense 128, 85k parameters, where a step's
arithmetic dominates and the ratios approach the pass counts). Repeats are interleaved round-robin
over the optimizers (so a load change on a shared machine hits all of them alike); the ratio to sgd
is taken within each round, and medians over the rounds are reported. On CPU the clock is the
process's CPU time by default (other jobs on a shared machine do not count). Prints a markdown
table: optimizer, median ms/step, its ratio to sgd, passes/step, target ratio (issue 5). On a loaded
machine compare ``gd`` with ``sgd`` (the same step here, both with momentum 0.9) to read the noise
floor.

    python benchmarks/bench_optim.py [--model mlp|cnn] [--steps 20] [--repeats 25] [--threads 1]
                                     [--device cpu] [--clock cpu|wall]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits

from landscape.models import build_model
from landscape.optim import OPTIMIZERS, build_optimizer

ADAM = "sgd on the Adam base"
TARGETS = {"sam": 2.1, "asam": 2.1, "fsam": 2.1, "vsam": 2.1, "sgd-tracer": 3.0, "adam-tracer": 3.0,
           "rsam": 1.3, "mfvi": 1.3}


def mlp(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.ReLU(), torch.nn.Linear(128, 128),
                               torch.nn.ReLU(), torch.nn.Linear(128, 10))


def cnn(seed: int = 0) -> torch.nn.Module:
    return build_model("cnn", seed=seed, in_channels=1, image_size=8, channels=(32, 64),
                       hidden=(128,))


MODELS = {"mlp": (mlp, "MLP 64-128-128-10"), "cnn": (cnn, "CNN conv 32-64, dense 128")}


def batches(device: torch.device, size: int = 128, images: bool = False) -> list[tuple[torch.Tensor,
    torch.Tensor]]:
    x, y = load_digits(return_X_y=True)
    x = torch.tensor(x / 16.0, dtype=torch.float32, device=device)
    if images:
        x = x.reshape(-1, 1, 8, 8)
    y = torch.tensor(y, device=device)
    g = torch.Generator().manual_seed(0)
    perm = torch.randperm(len(x), generator=g).to(device)
    return [(x[perm[i:i + size]], y[perm[i:i + size]]) for i in range(0, len(x) - size + 1, size)]


def make(name: str, model: torch.nn.Module, n: int):
    if name == "torch.optim.SGD":
        return torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    if name == ADAM:  # the plain step on adam-tracer's base: its own reference
        return build_optimizer("sgd", model.parameters(), base="adam", lr=1e-3)
    kw: dict = {}
    if name in ("mfvi", "vsam"):
        kw["num_data"] = n
    if name.startswith("lb-"):
        kw.update(small_batch=32, total_steps=10**9, model=model, loss_fn="cross-entropy")
    if name in ("rsam", "mfvi") or name.startswith("lb-"):
        kw["seed"] = 0
    if name == "gd":
        kw["momentum"] = 0.9  # the same step as sgd: the two rows show the timing noise floor
    lr = 1e-3 if name == "adam-tracer" else 0.05
    return build_optimizer(name, model.parameters(), lr=lr, **kw)


def loss_closure(model, x, y):
    return lambda: F.cross_entropy(model(x), y)


def backward_closure(model, opt, x, y):
    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        return loss
    return closure


def run(name: str, model, opt, data, steps: int, sync, clock=time.perf_counter) -> float:
    """Seconds per step over ``steps`` steps."""
    t0 = clock()
    for i in range(steps):
        x, y = data[i % len(data)]
        if name == "torch.optim.SGD":
            opt.step(backward_closure(model, opt, x, y))
        elif name.startswith("lb-"):
            opt.step(loss_closure(model, x, y), batch=(x, y))
        else:
            opt.step(loss_closure(model, x, y))
    sync()
    return (clock() - t0) / steps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", choices=list(MODELS), default="mlp")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=25)
    ap.add_argument("--threads", type=int, default=1,
                    help="torch intra-op threads (1 is stable on a shared box)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--clock", choices=["cpu", "wall"], default=None,
                    help="cpu: this process's CPU time (default on CPU: robust to other jobs on a "
                         "shared machine); wall: elapsed time (default on GPU)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    clock_name = args.clock or ("wall" if device.type == "cuda" else "cpu")
    clock = time.process_time if clock_name == "cpu" else time.perf_counter
    build, label = MODELS[args.model]
    data = batches(device, images=args.model == "cnn")
    n = sum(len(b[0]) for b in data)
    names = ["torch.optim.SGD", *OPTIMIZERS, ADAM]
    setups = {}
    for name in names:
        model = build().to(device)
        opt = make(name, model, n)
        run(name, model, opt, data, 10, sync)  # warm-up
        setups[name] = (model, opt)
    times: dict[str, list[float]] = {name: [] for name in names}
    for _ in range(args.repeats):
        for name in names:
            model, opt = setups[name]
            times[name].append(run(name, model, opt, data, args.steps, sync, clock))
    med = {name: statistics.median(t) for name, t in times.items()}
    # ratio within each round (neighbouring measurements see the same load), then the median
    ratio = {name: statistics.median(a / b for a, b in zip(t, times["sgd"])) for name,
             t in times.items()}
    print(f"device {device}, {torch.get_num_threads()} thread(s), {clock_name} time, batch 128, "
          f"{label}, median of {args.repeats} x {args.steps} steps\n")
    print("| optimizer | ms/step | ratio to sgd | passes/step | target |")
    print("| --- | ---: | ---: | ---: | --- |")
    for name in names:
        opt = setups[name][1]
        passes = getattr(opt, "passes_per_step", 1)
        target = TARGETS.get(name)
        verdict = (
            ""
            if target is None
            else (f"≤ {target}x " + ("ok" if ratio[name] <= target else "MISSED"))
        )
        if (
            name == "adam-tracer"
        ):  # also against its own base, Adam (whose step costs more than SGD's)
            own = statistics.median(a / b for a, b in zip(times[name], times[ADAM]))
            verdict += f"; {own:.2f}x the plain Adam step"
        print(f"| {name} | {1e3 * med[name]:.3f} | {ratio[name]:.2f} | {passes} | {verdict} |")


if __name__ == "__main__":
    main()
