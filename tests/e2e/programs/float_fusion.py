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
    torch.save({"results": results, "counters": counters}, sys.argv[1])


if __name__ == "__main__":
    main()
