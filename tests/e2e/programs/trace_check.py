"""torch.jit.trace under the shim: does the traced module compute what eager mode does?

Traces a small conv/relu/linear model under torch.no_grad() with input x, then runs the traced
module on a *different* input x2 before running eager mode on x2 (so a traced output that is
uninitialised memory cannot happen to hold the eager result), and reports the difference."""
import json

import torch

from e2e_util import report, shim_status


class Block(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(8, 8, 3, padding=1, bias=False)
        self.bn1 = torch.nn.BatchNorm2d(8)
        self.conv2 = torch.nn.Conv2d(8, 8, 3, padding=1, bias=False)
        self.bn2 = torch.nn.BatchNorm2d(8)

    def forward(self, x):
        out = torch.relu_(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += x
        return torch.relu_(out)


def main():
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(), torch.nn.Flatten(),
        torch.nn.Linear(8 * 6 * 6, 4)).eval()
    x = torch.randn(2, 3, 8, 8)
    x2 = torch.randn(2, 3, 8, 8) + 1.0
    with torch.no_grad():
        traced = torch.jit.trace(model, x, check_trace=False)
        traced_out = traced(x2)
        eager_out = model(x2)
    # A residual block, traced, run three times: its convolutions (aten::_convolution in the
    # graph) get the shim's kernels and fusion as in eager mode.
    block = Block().eval()
    with torch.no_grad():
        for m in block.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
        traced_block = torch.jit.trace(block, torch.randn(2, 8, 10, 10), check_trace=False)
        before = shim_status()
        y = torch.randn(2, 8, 10, 10)
        block_outs = [traced_block(y) for _ in range(3)]
        block_eager = block(y)
    status = shim_status()
    report({
        "block_max_abs_diff": max((o - block_eager).abs().max().item() for o in block_outs),
        "block_eager_max_abs": block_eager.abs().max().item(),
        "block_fusion": None if status is None else {
            k: status["fusion"][k] - before["fusion"][k]
            for k in ("fused_convolutions", "mispredictions", "repairs")},
        "mode": None if status is None else status["mode"],
        "graph_ops": sorted({node.kind() for node in traced.inlined_graph.nodes()}),
        "max_abs_diff": (traced_out - eager_out).abs().max().item(),
        "eager_max_abs": eager_out.abs().max().item(),
        "ops": None if status is None else {k: v for k, v in status["ops"].items() if v},
    })


if __name__ == "__main__":
    main()
