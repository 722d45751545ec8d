"""softmax.int (F.softmax, torch.softmax) on oneDNN's kernel: an fp32 tensor over its last,
contiguous dimension, without a gradient, in fp32, bf16 and int8 mode. Its results must be
stock's to fp32 accuracy (rows far beyond exp's range and left-out keys included); every
other call (another dimension, a transposed input, a dtype argument, a gradient, double,
empty) must run stock, give stock's bytes and be counted with its reason; calibration runs
stock."""
import json

import pytest
import torch

from conftest import describe

PROGRAM = r"""
import json, sys
import torch
torch.manual_seed(7)
scores = torch.randn(2, 3, 5, 11) * 4
scores[0, 0, 0] = 1e4                      # a row far beyond exp's range
scores[1, 2, 3, 4] = float("-inf")         # a left-out key
grad = torch.randn(4, 6, requires_grad=True)
cases = {
    "last": lambda: torch.softmax(scores, -1),
    "last_positive_dim": lambda: torch.nn.functional.softmax(scores, dim=3),
    "matrix": lambda: torch.softmax(scores[0, 0], 1),
    "other_dim": lambda: torch.softmax(scores, 2),
    "transposed": lambda: torch.softmax(scores.transpose(2, 3), -1),
    "dtype": lambda: torch.softmax(scores, -1, dtype=torch.float64).float(),
    "double": lambda: torch.softmax(scores.double(), -1).float(),
    "grad": lambda: torch.softmax(grad, -1).detach(),
    "empty": lambda: torch.softmax(torch.randn(0, 5), -1),
}
results = {name: f() for name, f in cases.items()}
torch.save(results, sys.argv[1])
report = {}
if hasattr(torch.ops, "ipex_shim") and hasattr(torch.ops.ipex_shim, "status"):
    report = json.loads(torch.ops.ipex_shim.status())["ops"]["softmax.int"]
print(json.dumps(report))
"""
ONEDNN = ["last", "last_positive_dim", "matrix"]
STOCK = {"other_dim": "unsupported shape or arguments", "transposed": "unsupported shape or arguments",
         "dtype": "input not a plain fp32 CPU tensor",
         "double": "input not a plain fp32 CPU tensor", "grad": "gradient needed",
         "empty": "unsupported shape or arguments"}


@pytest.fixture(scope="module")
def runs(shim, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("softmax")
    out = {}
    for mode in (None, "fp32", "bf16", "int8", "calibration"):
        path = tmp / f"{mode}.pt"
        env = {"IPEX_CONFIG": str(tmp / "conf.json")} if mode in ("int8", "calibration") else {}
        proc = shim.run_py(PROGRAM, mode=mode, env=env, preload=mode is not None,
                           args=(str(path),))
        assert proc.returncode == 0, describe(proc)
        assert "kernel failed" not in proc.stderr, proc.stderr
        out[mode] = {"results": torch.load(path),
                     "report": json.loads(proc.stdout.strip().splitlines()[-1])}
    return out


@pytest.mark.parametrize("mode", ["fp32", "bf16", "int8", "calibration"])
def test_results_are_stocks(runs, mode):
    stock = runs[None]["results"]
    for case, got in runs[mode]["results"].items():
        ref = stock[case]
        assert got.shape == ref.shape and got.dtype == ref.dtype, case
        if case in STOCK or mode == "calibration":
            assert torch.equal(got, ref), (mode, case)  # stock ran it
        else:
            assert (got - ref).abs().max().item() <= 1e-6, (mode, case)
            if got.dim() == 4:  # the left-out key gets exactly 0, as in stock
                assert got[1, 2, 3, 4].item() == 0.0 == ref[1, 2, 3, 4].item(), (mode, case)


@pytest.mark.parametrize("mode", ["fp32", "bf16", "int8"])
def test_the_kernel_takes_last_dim_calls_and_the_rest_is_counted(runs, mode):
    report = runs[mode]["report"]
    assert report.get("onednn_fp32") == len(ONEDNN), report
    assert report.get("stock") == len(STOCK), report
    expected = {}
    for reason in STOCK.values():
        expected[reason] = expected.get(reason, 0) + 1
    assert report["fallback_reasons"] == expected, report


def test_calibration_runs_stock(runs):
    report = runs["calibration"]["report"]
    assert report.get("stock") == len(ONEDNN) + len(STOCK) and "onednn_fp32" not in report, report
