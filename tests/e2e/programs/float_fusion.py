"""Fusion scenarios (conv -> batch_norm -> relu), each run for 3 passes under no_grad.

usage: float_fusion.py OUT.pt
Saves {scenario: [output of each pass]} and, under the shim, the fusion counters after each
scenario. Every scenario builds its module from seed 0, so a control run without the shim
gives the reference values.
"""
import json
import sys

import torch
import torch.nn as nn


class Block(nn.Module):
    """conv -> bn -> relu_, and on request a different use of the same tensors."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(4, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.relu = nn.ReLU(inplace=True)
        self.variant = "plain"

    def forward(self, x):
        c = self.conv(x)
        if self.variant == "conv_output_used_twice":
            b = self.bn(c)
            return self.relu(b) + c          # reads the raw conv output after the chain
        if self.variant == "no_batch_norm":
            return c * 2                      # the predicted batch_norm never comes
        if self.variant == "bn_output_used_before_relu":
            b = self.bn(c)
            s = b.sum()                       # reads the bn output before the relu
            return self.relu(b) + s
        if self.variant == "input_changed_then_conv_output_read":
            x.add_(1)                         # changes the conv's input...
            return c * 3                      # ...then a misprediction needs the raw conv
        return self.relu(self.bn(c))


class Mlp(nn.Module):
    """linear -> activation -> linear, and on request a different use of the first output."""

    def __init__(self, activation):
        super().__init__()
        self.first = nn.Linear(16, 32)
        self.second = nn.Linear(32, 8)
        self.activation = activation
        self.variant = "plain"

    def forward(self, x):
        h = self.first(x)
        if self.variant == "linear_output_used_twice":
            return self.second(self.activation(h)) + h.sum()
        if self.variant == "other_gelu":
            return self.second(torch.nn.functional.gelu(h, approximate="tanh"))
        return self.second(self.activation(h))


def run_mlp(activation, variant_after_learning):
    torch.manual_seed(0)
    mlp = Mlp(activation).eval()
    g = torch.Generator().manual_seed(2)
    outputs = []
    with torch.no_grad():
        for i in range(3):
            mlp.variant = "plain" if i == 0 else variant_after_learning
            outputs.append(mlp(torch.randn(4, 16, generator=g)))
    return outputs


class TwoConvs(nn.Module):
    """conv -> bn -> relu_ -> conv: the first chain hands its result to the second conv."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(8)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(8, 4, 3, padding=1)
        self.variant = "plain"

    def forward(self, x):
        b = self.relu(self.bn1(self.conv1(x)))
        if self.variant == "other_consumer":
            return torch.sigmoid(b)  # not the learned convolution (nor a pool, which reads
            #                          handed-over bytes as they are)
        y = self.conv2(b)
        if self.variant == "read_after_handoff":
            return y + b.mean()                          # reads the handed-over tensor
        return y


def run_two_convs(variant_after_learning):
    torch.manual_seed(0)
    model = TwoConvs()
    with torch.no_grad():
        model.bn1.running_mean.uniform_(-0.5, 0.5)
        model.bn1.running_var.uniform_(0.5, 2.0)
    model.eval()
    g = torch.Generator().manual_seed(4)
    outputs = []
    with torch.no_grad():
        for i in range(3):
            model.variant = "plain" if i == 0 else variant_after_learning
            outputs.append(model(torch.randn(2, 3, 10, 10, generator=g)))
    return outputs


def run_conv_relu(variant_after_learning):
    """conv -> relu_ with no batch norm (VGG style); "twice" also reads the raw conv output."""
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 6, 3, padding=1)
    relu = nn.ReLU(inplace=True)
    g = torch.Generator().manual_seed(3)
    outputs = []
    with torch.no_grad():
        for i in range(3):
            c = conv(torch.randn(2, 3, 7, 7, generator=g))
            if i > 0 and variant_after_learning == "twice":
                total = c.sum()
                outputs.append(relu(c) + total)
            else:
                outputs.append(relu(c))
    return outputs


def make_block():
    torch.manual_seed(0)
    block = Block()
    with torch.no_grad():  # real statistics for the batch norm
        block.bn.running_mean.uniform_(-0.5, 0.5)
        block.bn.running_var.uniform_(0.5, 2.0)
        block.bn.weight.uniform_(0.5, 1.5)
        block.bn.bias.uniform_(-0.5, 0.5)
    return block.eval()


def status():
    if hasattr(torch.ops.ipex_shim, "status"):
        return json.loads(torch.ops.ipex_shim.status())["fusion"]
    return None


def run(variant_after_learning, hook=False):
    block = make_block()
    if hook:
        seen = []
        block.conv.register_forward_hook(lambda m, i, o: seen.append(float(o.sum())))
    outputs = []
    g = torch.Generator().manual_seed(1)
    inputs = [torch.randn(2, 4, 9, 9, generator=g) for _ in range(3)]
    with torch.no_grad():
        for i, x in enumerate(inputs):
            block.variant = "plain" if i == 0 else variant_after_learning
            outputs.append(block(x.clone()))
    if hook:
        outputs.append(torch.tensor(seen))
    return outputs


def main():
    results, counters = {}, {}
    scenarios = ["plain", "conv_output_used_twice", "no_batch_norm",
                 "bn_output_used_before_relu", "input_changed_then_conv_output_read"]
    for name in scenarios:
        results[name] = run(name)
        counters[name] = status()
    results["hook_reads_conv_output"] = run("plain", hook=True)
    counters["hook_reads_conv_output"] = status()
    for name in ["handoff", "handoff_read_after", "handoff_other_consumer"]:
        variant = {"handoff": "plain", "handoff_read_after": "read_after_handoff",
                   "handoff_other_consumer": "other_consumer"}[name]
        results[name] = run_two_convs(variant)
        counters[name] = status()
    for name, variant in [("conv_relu", "plain"), ("conv_relu_output_used_twice", "twice")]:
        results[name] = run_conv_relu(variant)
        counters[name] = status()
    linear_scenarios = {
        "linear_gelu": (nn.GELU(), "plain"),
        "linear_relu_inplace": (nn.ReLU(inplace=True), "plain"),
        "linear_relu": (nn.ReLU(), "plain"),
        "linear_output_used_twice": (nn.ReLU(), "linear_output_used_twice"),
        "other_gelu": (nn.GELU(), "other_gelu"),
    }
    for name, (activation, variant) in linear_scenarios.items():
        results[name] = run_mlp(activation, variant)
        counters[name] = status()
    torch.save({"results": results, "counters": counters}, sys.argv[1])


if __name__ == "__main__":
    main()
