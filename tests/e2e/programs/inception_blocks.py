"""Inception's joins (shim/fusion.h): a block whose branches include an average pool before
a convolution, a reduction block joining two chains with a max pool of its input (the pool's
bytes keep that input's INT8 scale, the chains write in the next op's), and a block whose
join takes two inner joins' results (inception_v3's last blocks). In every mode the cats
join the handed-over bytes from pass 3 on (the inner joins learn from the outer join's
reader), without a failed prediction.

Usage: inception_blocks.py OUT.pt [inference_mode]
Each scenario builds the network afresh (same weights), runs three passes, then a fourth:
  plain         as learned
  pool_read     the reduction block's max-pool result read by the program after its join
  inner_read    one inner join's result read by the program after the outer join
Saves {"results": {scenario: output of pass 4 (with what was read)}, "counters": {scenario:
[after pass 2, after pass 4] of status()["fusion"] and the cat/avg_pool2d/max_pool2d paths}}
(counters only under the shim).
"""
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F

from e2e_util import shim_status


def chain(cin, cout, kernel, stride=1, padding=0):
    return nn.Sequential(nn.Conv2d(cin, cout, kernel, stride, padding, bias=False),
                         nn.BatchNorm2d(cout, eps=0.001), nn.ReLU(inplace=True))


class BlockA(nn.Module):  # inception A: the pool branch averages, then a convolution
    def __init__(self, cin):
        super().__init__()
        self.b1 = chain(cin, 16, 1)
        self.b2 = nn.Sequential(chain(cin, 8, 1), chain(8, 16, 3, padding=1))
        self.b3 = chain(cin, 16, 1)

    def forward(self, x):
        pooled = F.avg_pool2d(x, kernel_size=3, stride=1, padding=1)
        return torch.cat([self.b1(x), self.b2(x), self.b3(pooled)], 1)


class BlockB(nn.Module):  # reduction: two chains and a max pool of the block's input
    def __init__(self, cin):
        super().__init__()
        self.b1 = chain(cin, 32, 3, stride=2)
        self.b2 = nn.Sequential(chain(cin, 16, 1), chain(16, 16, 3, stride=2))
        self.twist = None
        self.seen = None

    def forward(self, x):
        pooled = F.max_pool2d(x, kernel_size=3, stride=2)
        joined = torch.cat([self.b1(x), self.b2(x), pooled], 1)
        if self.twist == "pool_read":
            self.seen = pooled.sum().item()
        return joined


class BlockE(nn.Module):  # inner joins inside the outer one
    def __init__(self, cin):
        super().__init__()
        self.b1 = chain(cin, 16, 1)
        self.b2 = chain(cin, 16, 1)
        self.b2a = chain(16, 16, (1, 3), padding=(0, 1))
        self.b2b = chain(16, 16, (3, 1), padding=(1, 0))
        self.b3 = chain(cin, 16, 1)
        self.b3a = chain(16, 16, (1, 3), padding=(0, 1))
        self.b3b = chain(16, 16, (3, 1), padding=(1, 0))
        self.twist = None
        self.seen = None

    def forward(self, x):
        t = self.b2(x)
        inner = torch.cat([self.b2a(t), self.b2b(t)], 1)
        u = self.b3(x)
        other = torch.cat([self.b3a(u), self.b3b(u)], 1)
        joined = torch.cat([self.b1(x), inner, other], 1)
        if self.twist == "inner_read":
            self.seen = inner.sum().item()
        return joined


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = chain(3, 24, 3, padding=1)
        self.a = BlockA(24)        # 48 channels
        self.b = BlockB(48)        # 32 + 16 + 48 = 96
        self.e = BlockE(96)        # 16 + 32 + 32 = 80
        self.head = chain(80, 10, 1)

    def forward(self, x):
        return self.head(self.e(self.b(self.a(self.stem(x))))).mean((2, 3))


SCENARIOS = ["plain", "pool_read", "inner_read"]
WATCHED = ["cat", "avg_pool2d", "max_pool2d"]


def main():
    out_path = sys.argv[1]
    grad_mode = torch.inference_mode if sys.argv[2:] == ["inference_mode"] else torch.no_grad
    x = torch.rand(2, 3, 19, 19, generator=torch.Generator().manual_seed(1))
    def counters():
        report = shim_status()
        if report is None:  # stock PyTorch, no preload
            return None
        return dict(report["fusion"], **{op: report["ops"].get(op, {}) for op in WATCHED})

    results, seen = {}, {}
    for scenario in SCENARIOS:
        torch.manual_seed(0)
        net = Net()
        with torch.no_grad():  # batch norms with statistics of their own
            for bn in net.modules():
                if isinstance(bn, nn.BatchNorm2d):
                    bn.running_mean.uniform_(-0.2, 0.2)
                    bn.running_var.uniform_(0.5, 2.0)
        net.eval()
        with grad_mode():
            for _ in range(2):
                net(x)
            before = counters()
            net(x)
            net.b.twist = net.e.twist = scenario
            result = net(x).flatten()
            extra = [m.seen for m in (net.b, net.e) if m.seen is not None]
            if extra:
                result = torch.cat([result, torch.tensor(extra)])
            results[scenario] = result.clone()
        if before is not None:
            seen[scenario] = [before, counters()]
    torch.save({"results": results, "counters": seen}, out_path)


if __name__ == "__main__":
    main()
