"""A conv2d + linear model and a lone linear under no_grad, for IPEX_CONFIG tests.

usage: float_config.py OUT.pt

Prints MARKER right after `import torch` (the shim's core starts during that import, so a
run that IPEX_STRICT=1 stops must never print it), then saves the outputs to OUT.pt and
prints a report line with the shim's status (null without the shim).
"""
import sys

import torch

MARKER = "FLOAT-CONFIG-MODEL-STARTS"
print(MARKER, flush=True)

import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from float_common import op_counts, report, reset_stats, shim_status  # noqa: E402


def main():
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 8, 3, padding=1)
    fc = nn.Linear(8 * 8 * 8, 10)
    lone = nn.Linear(256, 64)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(4, 3, 8, 8, generator=g)
    x_lone = torch.randn(32, 256, generator=g)
    reset_stats()
    with torch.no_grad():
        model_out = fc(F.relu(conv(x)).flatten(1))
        lone_out = lone(x_lone)
    torch.save({"model": model_out, "lone": lone_out}, sys.argv[1])
    status = shim_status()
    report({
        "ops": op_counts(),
        "keep_fp32": None if status is None else status["keep_fp32"],
        "config": None if status is None else status["config"],
        "mode": None if status is None else status["mode"],
    })


if __name__ == "__main__":
    main()
