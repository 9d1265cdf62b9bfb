"""Can a Hessian-vector product run through torch's FSDP2 (``fully_shard``)? Run it under torchrun
with two CPU processes and see what torch says (docs/design/fsdp.md records the answer):

    torchrun --nproc-per-node 2 scripts/probe_fsdp.py

It shards a small float64 MLP with ``fully_shard`` (gloo) and tries, on the sharded parameters:
a first derivative by ``torch.autograd.grad``; a double backward (``create_graph=True``, then the
gradient of ``gᵀv``); forward-over-reverse with ``torch.func``; and ``loss.backward(
create_graph=True)`` followed by a product through the ``.grad`` it leaves."""

import torch
import torch.distributed as dist
import torch.nn.functional as F


def attempt(rank: int, what: str, fn) -> None:
    try:
        fn()
        print(f"rank {rank}: {what}: ok", flush=True)
    except Exception as e:  # noqa: BLE001  (the point is to print torch's exact error)
        print(f"rank {rank}: {what}: {type(e).__name__}: {str(e).splitlines()[0]}", flush=True)


def main() -> None:
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard
    from torch.func import functional_call, grad, jvp

    dist.init_process_group("gloo")
    rank = dist.get_rank()
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(),
                                torch.nn.Linear(16, 4)).double()
    mesh = init_device_mesh("cpu", (dist.get_world_size(),))
    for layer in model:
        if isinstance(layer, torch.nn.Linear):
            fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)
    x = torch.randn(6, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    y = torch.randint(0, 4, (6,), generator=torch.Generator().manual_seed(2))
    params = list(model.parameters())
    print(f"rank {rank}: parameters are {sorted({type(p).__name__ for p in params})}", flush=True)

    def loss():
        return F.cross_entropy(model(x), y)

    def double_backward():
        g = torch.autograd.grad(loss(), params, create_graph=True)
        torch.autograd.grad(g, params, [torch.ones_like(p) for p in params])

    def forward_over_reverse():
        ps = dict(model.named_parameters())
        f = lambda q: F.cross_entropy(functional_call(model, q, (x,)), y)
        jvp(grad(f), (ps,), ({n: torch.ones_like(p) for n, p in ps.items()},))

    def through_dot_grad():
        loss().backward(create_graph=True)
        dot = sum(p.grad.sum() for p in params)
        torch.autograd.grad(dot, params)

    attempt(rank, "torch.autograd.grad", lambda: torch.autograd.grad(loss(), params))
    attempt(rank, "double backward", double_backward)
    attempt(rank, "torch.func forward-over-reverse", forward_over_reverse)
    attempt(rank, "backward(create_graph=True), then grad of the .grad", through_dot_grad)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
