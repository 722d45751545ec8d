"""DistributedDataParallel (gloo) training of a small CNN for a few steps; run by torchrun.

usage: torchrun --nproc_per_node=2 ... float_ddp.py OUTDIR

Each rank trains on its own seeded batches (DDP averages the gradients, so every rank holds
the same parameters after each step), evaluates a fixed batch under no_grad at the end, and
writes OUTDIR/rank<R>.json with an exact checksum of its parameters and of the eval output,
plus its shim status (null without the shim), and OUTDIR/rank<R>.pt with the parameters and
the eval output themselves. It also prints the checksum line.
"""
import json
import os
import sys

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F

from float_common import op_counts, params_checksum, shim_status

STEPS = 4


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.fc1 = nn.Linear(8 * 4 * 4, 32)
        self.fc2 = nn.Linear(32, 10)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv(x)), 2)
        return self.fc2(F.relu(self.fc1(x.flatten(1))))


def main():
    outdir = sys.argv[1]
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.manual_seed(0)
    model = nn.parallel.DistributedDataParallel(Net())
    initial = params_checksum(model.module)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    g = torch.Generator().manual_seed(100 + rank)
    losses = []
    for _ in range(STEPS):
        x = torch.randn(16, 3, 8, 8, generator=g)
        y = torch.randint(0, 10, (16,), generator=g)
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        losses.append(float(loss))
    train_ops = op_counts()
    grads_ok = all(p.grad is not None and bool(torch.isfinite(p.grad).all())
                   for p in model.parameters())
    with torch.no_grad():
        out = model.module(torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(7)))
    status = shim_status()
    checksum = params_checksum(model.module)
    facts = {
        "rank": rank, "world": world, "checksum": checksum, "initial_checksum": initial,
        "eval_checksum": repr(float(out.double().sum())), "losses": losses,
        "grads_ok": grads_ok, "train_ops": train_ops, "all_ops": op_counts(),
        "active": None if status is None else status["active"],
        "mode": None if status is None else status["mode"],
        "eval_dtype": str(out.dtype),
    }
    torch.save({"params": {n: p.detach().clone() for n, p in model.module.named_parameters()},
                "eval": out}, os.path.join(outdir, f"rank{rank}.pt"))
    with open(os.path.join(outdir, f"rank{rank}.json"), "w") as f:
        json.dump(facts, f, sort_keys=True)
    print(f"rank {rank} checksum {checksum}", flush=True)
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
