"""calibration and int8 modes on a small CNN trained on sklearn's digits.

The model, data split and training are programs/float_digits.py's (conv 1->16 3x3, relu,
conv 16->32 3x3, relu, maxpool 2, linear 512->10; fixed 1437/360 split, seed 0, Adam, 6
epochs), trained by stock PyTorch. programs/int8_digits.py then evaluates the trained
weights: stock on the 360 held-out test images (the reference), under
IPEX_MODE=calibration on the 1437 training images, and under IPEX_MODE=int8 with the config
that calibration wrote on the test images.
"""
import json

import pytest
import torch

from conftest import cosine, describe, parse_report


@pytest.fixture(scope="module")
def digits(run_py, shim, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("int8_digits")
    state = workdir / "stock.final.pt"
    config = workdir / "digits.json"
    proc = run_py(shim.program("float_digits.py"), preload=False,
                  args=("train", "stock", workdir))
    assert proc.returncode == 0, describe(proc)
    trained = parse_report(proc.stdout)

    program = shim.program("int8_digits.py")
    runs = {}
    for tag, phase, mode, preload in (("stock_test", "test", None, False),
                                      ("stock_train", "calibrate", None, False),
                                      ("calibration", "calibrate", "calibration", True),
                                      ("int8", "test", "int8", True)):
        env = {"IPEX_CONFIG": config} if preload else None
        out = workdir / f"{tag}.pt"
        proc = run_py(program, mode=mode, preload=preload, env=env, args=(phase, state, out))
        assert proc.returncode == 0, describe(proc)
        runs[tag] = {"report": parse_report(proc.stdout), "logits": torch.load(out),
                     "stderr": proc.stderr}
    with open(config) as file:
        entries = json.load(file)
    return trained, runs, entries


def test_stock_reference(digits):
    """Sanity: the trained weights are useful, and the reference ran stock."""
    trained, runs, _ = digits
    stock = runs["stock_test"]["report"]
    assert stock["status"] is None
    assert stock["acc"] == pytest.approx(trained["final_acc"], abs=1e-9)
    assert stock["acc"] >= 95.0, stock["acc"]


def test_calibration_on_training_images(digits):
    """Calibration leaves the training-set logits bit for bit stock's, observes both
    convolutions and the linear layer, and writes a config entry for each."""
    _, runs, entries = digits
    calibration = runs["calibration"]
    assert torch.equal(calibration["logits"], runs["stock_train"]["logits"])
    ops = calibration["report"]["status"]["ops"]
    for op in ("conv2d", "linear"):
        assert ops[op].get("observed", 0) > 0, ops[op]
    names = [e["name"] for e in entries]
    assert names.count("Convolution") == 2 and names.count("Linear") == 1, names


def test_int8_accuracy_within_one_point(digits):
    """INT8 test accuracy within 1 point of stock fp32's, on the INT8 kernels: every conv2d
    and linear call on onednn_int8, every op matched its config entry."""
    _, runs, entries = digits
    stock, int8 = runs["stock_test"], runs["int8"]
    report = int8["report"]
    text = (f"digits int8 accuracy {report['acc']:.2f}% vs stock fp32 "
            f"{stock['report']['acc']:.2f}%, logits cosine "
            f"{cosine(int8['logits'], stock['logits']):.5f}")
    print(text)
    assert int8["logits"].dtype == torch.float32 and int8["logits"].shape == (360, 10)
    assert abs(report["acc"] - stock["report"]["acc"]) <= 1.0, text
    status = report["status"]
    for op in ("conv2d", "linear"):
        counts = status["ops"][op]
        calls = sum(v for v in counts.values() if isinstance(v, int))
        assert calls > 0 and counts.get("onednn_int8", 0) == calls, f"{op}: {counts}"
    summary = status["int8"]
    assert summary["mismatched"] == 0, f"{summary}\n{int8['stderr']}"
    assert summary["matched"] >= 3 and summary["entries"] == len(entries), summary
    assert status["config_state"] == "applied", status["config_state"]
