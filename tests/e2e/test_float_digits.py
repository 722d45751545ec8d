"""fp32 and bf16 modes on a small CNN trained on sklearn's digits (programs/float_digits.py:
conv 1->16 3x3, relu, conv 16->32 3x3, relu, maxpool 2, linear 512->10; fixed 1437/360
split, seed 0, Adam lr 3e-3, batch 64, 6 epochs, a validation loop under no_grad after every
epoch).

Runs: stock training (saves the final weights); IPEX_MODE=bf16 and IPEX_MODE=fp32 runs that
first evaluate the stock-trained weights (inference) and then train from the same seed;
finally a stock process re-evaluates the exact weights every shim validation loop saw.
"""
import math

import pytest
import torch

from conftest import skip_without_kernels, cosine, describe, parse_report

EPOCHS = 6
N_TEST = 360



@pytest.fixture(scope="module")
def digits(run_py, shim, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("float_digits")
    program = shim.program("float_digits.py")
    reports = {}

    proc = run_py(program, preload=False, args=("train", "stock", workdir))
    assert proc.returncode == 0, describe(proc)
    reports["stock"] = parse_report(proc.stdout)
    for mode in ("bf16", "fp32"):
        proc = run_py(program, mode=mode,
                      args=("train", mode, workdir, workdir / "stock.final.pt"))
        assert proc.returncode == 0, describe(proc)
        reports[mode] = parse_report(proc.stdout)
    proc = run_py(program, preload=False, args=("eval", workdir, "bf16", "fp32"))
    assert proc.returncode == 0, describe(proc)
    reports["reeval"] = parse_report(proc.stdout)
    return workdir, reports


def test_stock_training_learns(digits):
    """Sanity: the reference reaches a useful accuracy and never touched the shim."""
    _, reports = digits
    stock = reports["stock"]
    print(f"digits stock fp32 accuracy per epoch: {stock['epochs']}")
    assert stock["final_acc"] >= 95.0, stock["epochs"]
    assert all(e["train_ops"] is None and e["val_ops"] is None for e in stock["epochs"])


@pytest.mark.parametrize("mode", ["bf16", "fp32"])
def test_inference_of_stock_trained_weights(digits, mode, cpu_plan):
    skip_without_kernels(cpu_plan, mode)
    """(a) The stock-trained weights evaluated under the shim: test accuracy within 0.5
    points of stock, on the shim's kernels."""
    workdir, reports = digits
    stock_acc = reports["stock"]["final_acc"]
    got = reports[mode]
    print(f"digits inference {mode}: {got['given_acc']:.2f}% vs stock {stock_acc:.2f}%")
    assert abs(got["given_acc"] - stock_acc) <= 0.5
    ops = got["given_ops"]
    for op in ("conv2d", "linear"):
        assert ops[op].get(f"onednn_{mode}", 0) > 0 and ops[op].get("stock", 0) == 0, ops
    ref = torch.load(workdir / f"stock.epoch{EPOCHS - 1}.pt")["logits"]
    logits = torch.load(workdir / f"{mode}.given.pt")
    assert logits.dtype == torch.float32 and logits.shape == (N_TEST, 10)
    if mode == "fp32":
        torch.testing.assert_close(logits, ref, rtol=1e-4, atol=1e-4)
    else:
        assert cosine(logits, ref) >= 0.999


@pytest.mark.parametrize("mode", ["bf16", "fp32"])
def test_training_accuracy_and_gradients(digits, mode, cpu_plan):
    skip_without_kernels(cpu_plan, mode)
    """(b) Training from the same seed under the shim: final test accuracy within 1 point of
    stock fp32 training. bf16: conv2d and linear ran the autograd BF16 path, every parameter
    got a finite fp32 gradient. fp32: training ran stock kernels (gradient needed)."""
    _, reports = digits
    stock, got = reports["stock"], reports[mode]
    print(f"digits training {mode}: {[round(e['acc'], 2) for e in got['epochs']]} "
          f"vs stock {[round(e['acc'], 2) for e in stock['epochs']]}")
    assert abs(got["final_acc"] - stock["final_acc"]) <= 1.0
    for epoch in got["epochs"]:
        ops = epoch["train_ops"]
        for op in ("conv2d", "linear"):
            if mode == "bf16":
                assert ops[op].get("autograd_shim", 0) > 0, ops
                assert ops[op].get("onednn_bf16", 0) == 0, ops
            else:
                assert ops[op].get("stock", 0) > 0, ops
                assert ops[op]["fallback_reasons"] == {"gradient needed": ops[op]["stock"]}
        assert math.isfinite(epoch["loss"])
    grads = got["last_grads"]
    assert set(grads) == {"conv1.weight", "conv1.bias", "conv2.weight", "conv2.bias",
                          "fc.weight", "fc.bias"}
    for name, grad in grads.items():
        assert grad is not None, f"{name} got no gradient"
        dtype, finite, size = grad
        assert dtype == "torch.float32" and finite and size > 0, (name, grad)


@pytest.mark.parametrize("mode", ["bf16", "fp32"])
def test_validation_loop_uses_fresh_weights(digits, mode, cpu_plan):
    skip_without_kernels(cpu_plan, mode)
    """(c) The no_grad validation loop between epochs runs on the shim's kernels and matches a
    stock evaluation of the very weights it saw (the optimizer changed them in place since
    the previous epoch: a stale packed weight would match the previous epoch instead)."""
    workdir, reports = digits
    got = reports[mode]
    previous = None
    for epoch in range(EPOCHS):
        ops = got["epochs"][epoch]["val_ops"]
        for op in ("conv2d", "linear"):
            assert ops[op].get(f"onednn_{mode}", 0) > 0 and ops[op].get("stock", 0) == 0, ops
        shim_logits = torch.load(workdir / f"{mode}.epoch{epoch}.pt")["logits"]
        stock_logits = torch.load(workdir / f"{mode}.epoch{epoch}.reeval.pt")
        err = (shim_logits - stock_logits).abs().max().item()
        scale = stock_logits.abs().max().item()
        if mode == "fp32":
            assert err <= 1e-4 * max(1.0, scale), (epoch, err)
        else:
            assert cosine(shim_logits, stock_logits) >= 0.999, epoch
            agree = (shim_logits.argmax(1) == stock_logits.argmax(1)).double().mean().item()
            assert agree >= 0.99, (epoch, agree)
        if previous is not None:
            # The check can see staleness: last epoch's weights give clearly other logits.
            stale_err = (shim_logits - previous).abs().max().item()
            assert stale_err > 5 * err, (epoch, err, stale_err)
        previous = stock_logits
    assert reports["reeval"]["ops"] is None
    assert reports["reeval"]["reeval"][mode][-1] == pytest.approx(got["final_acc"], abs=0.5)
