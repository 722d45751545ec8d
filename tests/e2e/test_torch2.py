"""Torch 2.x features under the preload, in every mode, against the same program without it:
torch.compile (inductor), torch.export, FakeTensor and meta tensors, inference_mode and
torch.amp.autocast("cpu"). Each gives stock's result within the mode's precision; the shim
steps aside (counted) where its kernels do not apply, and says nothing."""
import pytest
import torch

from conftest import PROGRAMS, describe, parse_report, rel_l2, shim_lines

pytestmark = pytest.mark.skipif(int(torch.__version__.split(".")[0]) < 2,
                                reason="torch.compile and torch.export need torch 2.x")

TOLERANCE = {"fp32": 1e-4, "bf16": 3e-2}


@pytest.fixture(scope="module")
def stock(run_py, tmp_path_factory):
    out = tmp_path_factory.mktemp("torch2") / "stock.pt"
    proc = run_py(PROGRAMS / "torch2_features.py", preload=False, args=(out,), timeout=600)
    assert proc.returncode == 0, describe(proc)
    return parse_report(proc.stdout), torch.load(out)


@pytest.mark.parametrize("mode", ["fp32", "bf16"])
def test_torch2_features_match_stock(run_py, tmp_path, stock, mode):
    out = tmp_path / f"{mode}.pt"
    proc = run_py(PROGRAMS / "torch2_features.py", mode=mode, args=(out,), timeout=600)
    assert proc.returncode == 0, describe(proc)
    assert shim_lines(proc.stderr) == [], describe(proc)
    report = parse_report(proc.stdout)
    stock_report, stock_out = stock
    got = torch.load(out)
    for name, value in stock_out.items():
        tolerance = 2e-2 if name == "amp" else TOLERANCE[mode]
        assert rel_l2(got[name], value) <= tolerance, (name, rel_l2(got[name], value))
    # Autocast's own results (BF16) reach the program as autocast gives them.
    assert report["amp_dtype"] == stock_report["amp_dtype"] == "torch.bfloat16"
    assert report["fake_shape"] == [4, 16, 16, 16] and report["meta_device"] == "meta"
    ops = report["ops"]
    assert ops["conv2d"].get("onednn_fp32", 0) + ops["conv2d"].get("onednn_bf16", 0) > 0, ops
    assert report["compile_warnings"] == stock_report["compile_warnings"], report
