"""torch.jit.trace under the shim: does the traced module compute what eager mode does?

Traces a small conv/relu/linear model under torch.no_grad() with input x, then runs the traced
module on a *different* input x2 before running eager mode on x2 (so a traced output that is
uninitialised memory cannot happen to hold the eager result), and reports the difference."""
import json

import torch

from e2e_util import report, shim_status


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
    status = shim_status()
    report({
        "mode": None if status is None else status["mode"],
        "graph_ops": sorted({node.kind() for node in traced.inlined_graph.nodes()}),
        "max_abs_diff": (traced_out - eager_out).abs().max().item(),
        "eager_max_abs": eager_out.abs().max().item(),
        "ops": None if status is None else {k: v for k, v in status["ops"].items() if v},
    })


if __name__ == "__main__":
    main()
