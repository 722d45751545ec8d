"""A oneDNN whose reorders lose values (oneDNN 3.7.2 on an AMD EPYC of family 26, Zen 5) would
make every kernel of the shim give wrong results: the shim checks at start, says so once, and
stays off, so the program runs stock PyTorch and gets stock's results, and
torch.ops.ipex_shim.status() says why. On a machine whose
oneDNN passes the check (every other one measured), that path cannot be reached: skipped."""
import json

import pytest

from conftest import Shim, describe

PROGRAM = """
import torch
torch.manual_seed(0)
x, w = torch.randn(8, 37), torch.randn(19, 37)
print(repr(torch.nn.functional.linear(x, w).sum().item()))
try:
    status = torch.ops.ipex_shim.status
except (AttributeError, RuntimeError):  # no core in a process without the preload
    status = None
if status is not None:
    print(status())
"""


def test_a_refused_onednn_leaves_the_program_stock(build_dir, torch_available):
    shim = Shim(build_dir)
    refusal = shim.onednn_refusal()
    if refusal is None:
        pytest.skip("this machine's oneDNN passes the shim's start-up check")
    stock = shim.run_py(PROGRAM, preload=False)
    assert stock.returncode == 0, describe(stock)
    for mode in ("fp32", "bf16", "int8", "calibration"):
        proc = shim.run_py(PROGRAM, mode=mode)
        assert proc.returncode == 0, describe(proc)
        lines = [line for line in proc.stderr.splitlines() if "lost values in a reorder" in line]
        assert len(lines) == 1 and "stays off" in lines[0], proc.stderr
        result, status = proc.stdout.splitlines()
        assert result + "\n" == stock.stdout, (mode, proc.stdout, stock.stdout)
        status = json.loads(status)
        assert status["running"] is False and status["active"] is False, status
        assert "lost values in a reorder" in status["refused"], status
        assert status["environment_mode"] == mode and status["ops"] == {}, status
