"""torch.cat of convolution chains' results (shim/fusion.h): squeezenet's fire modules, whose
two expand chains are joined and pooled or read by the next squeeze convolution, in every
mode. On passes 2 and 3 the chains keep their results in oneDNN's layout (INT8: in the next
op's input scale) and the cat joins the bytes as they are.

Usage: joined.py OUT.pt [inference_mode]
Each scenario builds the network afresh (same weights), runs two passes, then a third in
which some scenarios use the tensors differently from what passes 1 and 2 taught:
  plain          as learned
  joined_read    the joined tensor read by the program (its sum) before the next op
  part_read      one expand chain's result read after the cat (it stays the chain's value)
  part_changed   one expand chain's result changed in place before the cat
  swapped        the cat's inputs in the other order
Saves {"results": {scenario: output of pass 3 (with what was read)}, "counters":
{scenario: status()["fusion"] and cat's paths}} (counters only under the shim).
"""
import json
import sys

import torch
import torch.nn as nn


class Fire(nn.Module):
    def __init__(self, cin, squeeze, expand):
        super().__init__()
        self.squeeze = nn.Sequential(nn.Conv2d(cin, squeeze, 1), nn.ReLU(inplace=True))
        self.expand1 = nn.Sequential(nn.Conv2d(squeeze, expand, 1), nn.ReLU(inplace=True))
        self.expand3 = nn.Sequential(nn.Conv2d(squeeze, expand, 3, padding=1),
                                     nn.ReLU(inplace=True))
        self.twist = None
        self.seen = None

    def forward(self, x):
        x = self.squeeze(x)
        a, b = self.expand1(x), self.expand3(x)
        if self.twist == "part_changed":
            a.mul_(0.5)
        joined = torch.cat([b, a] if self.twist == "swapped" else [a, b], 1)
        if self.twist == "part_read":
            self.seen = a.sum().item()
        if self.twist == "joined_read":
            self.seen = joined.sum().item()
        return joined


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 32, 3, 2), nn.ReLU(inplace=True))
        self.fire1 = Fire(32, 16, 32)
        self.pool = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.fire2 = Fire(64, 16, 32)  # joined, then read by fire3's squeeze directly
        self.fire3 = Fire(64, 24, 48)
        self.head = nn.Conv2d(96, 10, 1)

    def forward(self, x):
        x = self.pool(self.fire1(self.stem(x)))
        x = self.fire3(self.fire2(x))
        return self.head(x).mean((2, 3))


SCENARIOS = ["plain", "joined_read", "part_read", "part_changed", "swapped"]


def main():
    out_path = sys.argv[1]
    grad_mode = torch.inference_mode if sys.argv[2:] == ["inference_mode"] else torch.no_grad
    x = torch.rand(2, 3, 33, 33, generator=torch.Generator().manual_seed(1))
    try:
        status = torch.ops.ipex_shim.status
    except (RuntimeError, AttributeError):
        status = None  # stock PyTorch, no preload
    results, counters = {}, {}
    for scenario in SCENARIOS:
        torch.manual_seed(0)
        net = Net().eval()
        with grad_mode():
            for _ in range(2):
                net(x)
            net.fire2.twist = scenario
            result = net(x).flatten()
            if net.fire2.seen is not None:
                result = torch.cat([result, torch.tensor([net.fire2.seen])])
            results[scenario] = result.clone()
        if status is not None:
            report = json.loads(status())
            counters[scenario] = dict(report["fusion"], cat=report["ops"]["cat"])
    torch.save({"results": results, "counters": counters}, out_path)


if __name__ == "__main__":
    main()
