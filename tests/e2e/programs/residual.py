"""Residual blocks for the `out += identity` fusion (shim/fusion.h), in every mode.

Usage: residual.py OUT.pt [inference_mode]
Runs a small residual network (three blocks, the first with a downsample), a mobilenet-style
one (`x + bn(conv(...))`) and a regnet-style one (`relu(proj(x) + f(x))`) on seeded inputs,
three passes per scenario (under torch.no_grad(), or torch.inference_mode() when asked:
its tensors have no version counters); on pass 3 some scenarios use the block's tensors differently
from what passes 1 and 2 taught. Saves {"results": {scenario: output of pass 3},
"counters": {scenario: status()["fusion"] and the max pool's paths after it}} (counters
only under the shim).
"""
import json
import sys

import torch
import torch.nn as nn


class Block(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                            nn.BatchNorm2d(cout))
        self.twist = None  # set by a scenario for pass 3

    def forward(self, x):
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        if self.twist == "identity_changed":
            identity.mul_(0.5)  # in place, after the convolution that would add it
        if self.twist == "out_changed":
            out.mul_(-2.0)  # the addend of the downsample's fused add, changed after it ran
        if self.twist == "out_viewed":
            self.view = out[:, :4]  # a view that must see the add
        if self.twist == "identity_read":
            self.seen = identity.sum().item()
        if self.twist == "identity_kept":
            self.kept = identity  # read after the network ran, when later blocks have run too
        if self.twist == "other_addend":
            out += torch.ones_like(out)
        else:
            out += identity
        out = self.relu(out)
        return out


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16),
                                  nn.ReLU(inplace=True))
        self.pool = nn.MaxPool2d(3, 2, 1)
        self.blocks = nn.Sequential(Block(16, 32, 2), Block(32, 32, 1), Block(32, 32, 1))
        self.head = nn.Linear(32, 10)
        self.twist = None

    def forward(self, x):
        x = self.pool(self.stem(x))
        if self.twist == "pooled_read":
            self.seen = x.sum().item()  # the pooled result, handed over in oneDNN's layout, read
        x = self.blocks(x)
        if self.twist == "features_read":
            self.seen = x.sum().item()  # the last block's result, pooled as handed over, read
        return self.head(torch.nn.functional.adaptive_avg_pool2d(x, 1).flatten(1))


class InvertedResidual(nn.Module):
    """mobilenet_v2's block: `x + bn(conv(relu6(bn(conv(x)))))`, an out-of-place add."""

    def __init__(self, channels):
        super().__init__()
        self.expand = nn.Sequential(nn.Conv2d(channels, 2 * channels, 1, bias=False),
                                    nn.BatchNorm2d(2 * channels), nn.ReLU6(inplace=True))
        self.project = nn.Conv2d(2 * channels, channels, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(channels)
        self.twist = None

    def forward(self, x):
        out = self.bn(self.project(self.expand(x)))
        if self.twist == "oop_identity_changed":
            x.mul_(0.5)  # in place, after the convolution that would add it
        if self.twist == "oop_swapped":
            result = out + x  # the other operand order
        else:
            result = x + out
        if self.twist == "oop_out_read":
            self.seen = out.sum().item()  # the batch norm's own result, read after the add
        return result


class OutOfPlaceNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16))
        self.blocks = nn.Sequential(InvertedResidual(16), InvertedResidual(16))
        self.head = nn.Linear(16, 10)

    def forward(self, x):
        x = self.blocks(self.stem(x))
        return self.head(x.mean((2, 3)))


OUT_OF_PLACE = ["oop_plain", "oop_identity_changed", "oop_swapped", "oop_out_read"]


class ProjectionBlock(nn.Module):
    """regnet's block: `relu(proj(x) + f(x))`, out of place. The projection runs first; the
    block's last convolution adds its result."""

    def __init__(self, cin, cout, stride):
        super().__init__()
        self.proj = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                  nn.BatchNorm2d(cout))
        self.f = nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False),
                               nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
                               nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout))
        self.relu = nn.ReLU(inplace=True)
        self.twist = None

    def forward(self, x):
        projected = self.proj(x)
        out = self.f(x)
        if self.twist == "proj_changed":
            projected.mul_(0.5)  # in place, after the convolution that would add it
        if self.twist == "proj_read":
            self.seen = projected.sum().item()  # kept in oneDNN's layout for the add, read
        if self.twist == "proj_swapped":
            result = out + projected
        else:
            result = projected + out
        return self.relu(result)


class ProjectionNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16),
                                  nn.ReLU(inplace=True))
        self.blocks = nn.Sequential(ProjectionBlock(16, 32, 2), ProjectionBlock(32, 32, 1))
        self.head = nn.Linear(32, 10)

    def forward(self, x):
        x = self.blocks(self.stem(x))
        return self.head(x.mean((2, 3)))


PROJECTION = ["proj_plain", "proj_changed", "proj_read", "proj_swapped"]
NETWORKS = {"out_of_place": OutOfPlaceNet, "projection": ProjectionNet}


def build(kind=None):
    torch.manual_seed(0)
    net = NETWORKS.get(kind, Net)().eval()
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    return net


def main():
    out_path = sys.argv[1]
    inference_mode = len(sys.argv) > 2 and sys.argv[2] == "inference_mode"
    grad_mode = torch.inference_mode if inference_mode else torch.no_grad
    x = torch.randn(4, 3, 24, 24, generator=torch.Generator().manual_seed(1))
    try:
        status = torch.ops.ipex_shim.status
    except (RuntimeError, AttributeError):
        status = None  # stock PyTorch, no preload
    results, counters = {}, {}
    net = None
    for scenario in ["plain", "identity_changed", "identity_read", "identity_kept",
                     "other_addend",
                     "out_changed", "out_viewed", "pooled_read", "features_read"] + \
            OUT_OF_PLACE + PROJECTION:
        net = None  # each scenario learns on a network of its own (same weights)
        if scenario in OUT_OF_PLACE + PROJECTION:
            net = build("out_of_place" if scenario in OUT_OF_PLACE else "projection")
            with grad_mode():
                for _ in range(2):
                    net(x)
                for i, block in enumerate(net.blocks):
                    block.twist = scenario if i == 1 else None
                result = net(x).clone()
                if scenario in ("oop_out_read", "proj_read"):
                    result = torch.cat([result.flatten(), torch.tensor([net.blocks[1].seen])])
                results[scenario] = result
            if status is not None:
                report = json.loads(status())
                counters[scenario] = dict(report["fusion"], add=report["ops"]["add.Tensor"])
            continue
        net = build()
        with grad_mode():
            for _ in range(2):
                net(x)
            downsample_block = scenario.startswith("out_")
            for i, block in enumerate(net.blocks):
                block.twist = scenario if (i == 0) == downsample_block else None
            net.twist = scenario if scenario in ("pooled_read", "features_read") else None
            result = net(x).clone()
            if scenario in ("pooled_read", "features_read"):
                result = torch.cat([result.flatten(), torch.tensor([net.seen])])
            if scenario == "out_viewed":  # the view holds the block's output, after relu
                result = torch.cat([result.flatten(), net.blocks[0].view.flatten()])
            if scenario == "identity_kept":  # the inputs of blocks 1 and 2, read last
                result = torch.cat([result.flatten(), net.blocks[1].kept.flatten(),
                                    net.blocks[2].kept.flatten()])
            results[scenario] = result
        if status is not None:
            report = json.loads(status())
            counters[scenario] = dict(report["fusion"], max_pool2d=report["ops"]["max_pool2d"],
                                      add_=report["ops"]["add_.Tensor"],
                                      adaptive_avg_pool2d=report["ops"]["adaptive_avg_pool2d"])
    torch.save({"results": results, "counters": counters}, out_path)


if __name__ == "__main__":
    main()
