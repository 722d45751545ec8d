"""Training-side behaviour: gradients, BatchNorm running statistics, fresh weights.

usage: float_training.py OUT.pt

Everything is seeded; the same program runs without the shim (stock) and under
IPEX_MODE=bf16/fp32. Saved to OUT.pt:
  grads[model][variant]  per-parameter gradients of one forward+backward (cross entropy) of
                         "mlp" (3 Linear) and "cnn" (2 Conv2d+BatchNorm2d, Linear) in train
                         mode; variant "plain" (the program as written, i.e. whatever the shim
                         does) and, in the stock run only, "autocast" (torch.autocast("cpu",
                         torch.bfloat16)).
  bn[variant]            running_mean/running_var/num_batches_tracked of both BatchNorms of a
                         fresh cnn after one train-mode forward "with_grad" (parameters
                         require grad) and after one more train-mode forward under "no_grad".
  stale                  eval outputs (no_grad) of a conv+linear model after each step of:
                         start, optimizer.step(), load_state_dict(other), no_grad w.copy_(...),
                         w.data = new, no_grad bias.add_(...); plus, per step, an in-process
                         reference computed with an input that requires grad (never the
                         no-grad kernels, so never a packed weight).
  aba                    `weight.data = new` twice between two no_grad evals, the second new
                         storage landing where the packed one was (see part_aba): output,
                         output before, and in-process reference.
The report line holds the shim's op counts per part and the weight cache statistics.
"""
import json
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F

from float_common import op_counts, report, reset_stats, shim_status


class MLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.l1, self.l2, self.l3 = nn.Linear(64, 128), nn.Linear(128, 128), nn.Linear(128, 10)

    def forward(self, x):
        return self.l3(F.relu(self.l2(F.relu(self.l1(x)))))


class BNCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16)
        self.conv2, self.bn2 = nn.Conv2d(16, 32, 3, padding=1, stride=2), nn.BatchNorm2d(32)
        self.fc = nn.Linear(32, 10)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


class Small(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.fc = nn.Linear(8 * 4 * 4, 10)

    def forward(self, x):
        return self.fc(F.avg_pool2d(F.relu(self.conv(x)), 2).flatten(1))


def seeded(shape, seed, scale=1.0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)) * scale


def grads_of(model_cls, x, y, autocast):
    torch.manual_seed(0)
    model = model_cls().train()
    with torch.autocast("cpu", torch.bfloat16, enabled=autocast):
        out = model(x)
    loss = F.cross_entropy(out.float(), y)
    loss.backward()
    return {n: (None if p.grad is None else p.grad.detach().clone())
            for n, p in model.named_parameters()}, str(out.dtype)


def part_grads(stock, facts):
    inputs = {"mlp": (MLP, seeded((32, 64), 1), torch.arange(32) % 10),
              "cnn": (BNCNN, seeded((8, 3, 16, 16), 2), torch.arange(8) % 10)}
    result = {}
    for name, (cls, x, y) in inputs.items():
        reset_stats()
        result[name] = {}
        result[name]["plain"], dtype = grads_of(cls, x, y, autocast=False)
        facts[f"grads_{name}_ops"] = op_counts()
        facts[f"grads_{name}_out_dtype"] = dtype
        if stock:
            result[name]["autocast"], _ = grads_of(cls, x, y, autocast=True)
    return result


def bn_state(model):
    return {f"{bn}.{k}": getattr(model, bn).state_dict()[k].clone()
            for bn in ("bn1", "bn2")
            for k in ("running_mean", "running_var", "num_batches_tracked")}


def part_bn(facts):
    torch.manual_seed(0)
    model = BNCNN().train()
    x = seeded((8, 3, 16, 16), 3, 2.0) + 0.5
    reset_stats()
    model(x)
    result = {"with_grad": bn_state(model)}
    facts["bn_with_grad_ops"] = op_counts()
    reset_stats()
    with torch.no_grad():
        model(x * 0.5 - 0.25)
    result["no_grad"] = bn_state(model)
    facts["bn_no_grad_ops"] = op_counts()
    return result


def eval_pair(model, x):
    """(no_grad output, reference output through the gradient path)."""
    model.eval()
    with torch.no_grad():
        fast = model(x)
    ref = model(x.clone().requires_grad_(True)).detach()
    return fast, ref


def part_stale(facts):
    torch.manual_seed(0)
    model = Small()
    torch.manual_seed(7)
    other = Small().state_dict()
    x = seeded((16, 3, 8, 8), 4)
    xt, yt = seeded((16, 3, 8, 8), 5), torch.arange(16) % 10
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    outs, refs, names = [], [], []

    def ev(name):
        fast, ref = eval_pair(model, x)
        outs.append(fast)
        refs.append(ref)
        names.append(name)

    reset_stats()
    status = shim_status()
    facts["stale_cache_before"] = status["weight_cache"] if status else None
    ev("start")
    model.train()
    opt.zero_grad()
    F.cross_entropy(model(xt), yt).backward()
    opt.step()
    ev("optimizer.step")
    model.load_state_dict(other)
    ev("load_state_dict")
    with torch.no_grad():
        model.conv.weight.copy_(seeded(model.conv.weight.shape, 8, 0.3))
        model.fc.weight.copy_(seeded(model.fc.weight.shape, 9, 0.1))
    ev("no_grad copy_")
    model.conv.weight.data = seeded(model.conv.weight.shape, 10, 0.3)
    model.fc.weight.data = seeded(model.fc.weight.shape, 11, 0.1)
    ev("weight.data = new")
    with torch.no_grad():
        model.fc.bias.add_(1.0)
        model.conv.bias.mul_(-1.0)
    ev("no_grad bias change")
    facts["stale_ops"] = op_counts()
    status = shim_status()
    facts["stale_cache_after"] = status["weight_cache"] if status else None
    return {"names": names, "outs": outs, "refs": refs}


def part_aba(facts, n=3072):
    """`weight.data = new` twice between two no_grad evals:

        y0 = fc(x)                               # packs the weight (storage at P)
        fc.weight.data = torch.empty(n, n).normal_(0, 0.03)   # storage P is freed
        fc.weight.data = fc.weight.data * 0.5    # new storage: the allocator reuses P
        y1 = fc(x)

    A 36 MiB weight is above glibc's mmap threshold, so the freed block is unmapped and the
    next block of that size is mapped at the same address: deterministic reuse. Tensor.data
    assignment keeps the parameter's version counter, so data_ptr, version and shape all
    match the packed entry. y1 must still use the new weight."""
    torch.manual_seed(0)
    fc = nn.Linear(n, n)
    x = seeded((4, n), 12)
    with torch.no_grad():
        before = fc(x)
    packed_at, version = fc.weight.data_ptr(), fc.weight._version
    fc.weight.data = torch.empty(n, n).normal_(0, 0.03)
    fc.weight.data = fc.weight.data * 0.5
    facts["aba"] = {"reused_address": fc.weight.data_ptr() == packed_at,
                    "version_unchanged": fc.weight._version == version}
    with torch.no_grad():
        out = fc(x)
    ref = fc(x.clone().requires_grad_(True)).detach()
    return {"before": before, "out": out, "ref": ref}


def main():
    out_path = sys.argv[1]
    stock = shim_status() is None
    facts = {"stock": stock, "mode": None if stock else shim_status()["mode"]}
    saved = {"grads": part_grads(stock, facts), "bn": part_bn(facts),
             "stale": part_stale(facts), "aba": part_aba(facts)}
    torch.save(saved, out_path)
    report(facts)


if __name__ == "__main__":
    main()
