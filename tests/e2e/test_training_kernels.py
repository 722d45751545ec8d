"""The shim's own kernels for calls autograd records (shim/autograd_kernels.cpp):
max_pool2d's forward and backward on oneDNN, batch_norm's training forward with stock's
backward (both modes), and in bf16 mode convolutions and linear layers in BF16 forward and
backward on oneDNN. programs/training_kernels.py runs the same seeded parts without the shim
(also under torch.autocast, the reference for BF16) and under IPEX_MODE=fp32 and bf16.

Tolerances (against stock fp32 on the same inputs):
  Max pooling is exact: outputs bit-equal, strides equal. Its input gradient sums the
    gradients of the windows an element wins; oneDNN may add them in another order, so
    rtol 1e-6 / atol 1e-7, and the set of nonzero positions (which element won each window,
    ties to the first) must be equal.
  Batch norm's batch statistics are summed in another order than stock's: outputs, gradients
    and running statistics rtol 1e-5 / atol 1e-6 (an unbiased/biased variance mix-up moves
    the running variance by 1/(n-1), 0.6% here).
  The stem's parameter gradients and losses: in fp32 mode relative L2 <= 1e-5 (its
    convolutions are stock's when a gradient is needed); in bf16 mode its convolutions run
    in BF16, so cosine >= 0.99 to stock fp32 per parameter and losses within 1%.
  BF16 convolutions and linear layers against stock autocast's (the same BF16 operands and
    fp32 accumulation; autocast also rounds its result to BF16, the shim returns fp32):
    outputs and gradients relative L2 <= 0.01 (observed about 0.002; a gradient from the
    wrong layout or a transposed weight is off by order 1). In fp32 mode they run stock
    (with the shim's thread count, so sums split differently): relative L2 <= 1e-5.
  A gradient penalty (double backward) through a BF16 convolution and linear: its first
    gradients come from stock's fp32 backward, so cosine >= 0.999 to stock fp32.
"""
import pytest
import torch

from conftest import cosine, describe, parse_report, rel_l2

MODES = ("fp32", "bf16")


@pytest.fixture(scope="module")
def results(run_py, shim, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("training_kernels")
    program = shim.program("training_kernels.py")
    out = {}
    for tag, mode, preload in (("stock", None, False), ("fp32", "fp32", True),
                               ("bf16", "bf16", True)):
        path = workdir / f"{tag}.pt"
        proc = run_py(program, mode=mode, preload=preload, args=(path,))
        assert proc.returncode == 0, describe(proc)
        facts = parse_report(proc.stdout)
        assert facts["stock"] == (tag == "stock"), facts
        assert "kernel failed" not in proc.stderr, proc.stderr
        out[tag] = (facts, torch.load(path))
    return out


def close(got, ref, rtol, atol):
    torch.testing.assert_close(got, ref, rtol=rtol, atol=atol, equal_nan=True)


@pytest.mark.parametrize("mode", MODES)
def test_stem_trains_like_stock_on_the_shims_kernels(results, mode):
    facts, got = results[mode]
    ref = results["stock"][1]["stem"]
    ops = facts["ops"]["stem"]
    # Two steps: one max pool and two batch norms each, all on the shim's autograd kernels.
    assert ops["max_pool2d"].get("autograd_shim") == 2, ops
    assert ops["batch_norm"].get("autograd_shim") == 4, ops
    lines = []
    for step, (g, r) in enumerate(zip(got["stem"]["steps"], ref["steps"])):
        loss_err = abs(g["loss"].item() - r["loss"].item()) / abs(r["loss"].item())
        lines.append(f"step {step} loss rel err {loss_err:.2e}")
        assert loss_err <= (1e-6 if mode == "fp32" else 1e-2), lines[-1]
        for name, grad in list(g["grads"].items()) + [("input", g["input_grad"])]:
            want = r["grads"][name] if name != "input" else r["input_grad"]
            if mode == "fp32":
                err = rel_l2(grad, want)
                lines.append(f"{name} relL2 {err:.1e}")
                assert err <= 1e-5, lines[-1]
            else:
                cos = cosine(grad, want)
                lines.append(f"{name} cos {cos:.5f}")
                assert cos >= 0.99, lines[-1]
    for name, buffer in got["stem"]["buffers"].items():
        want = ref["buffers"][name]
        if name.endswith("num_batches_tracked"):
            assert buffer.item() == want.item() == 2, name
        elif mode == "fp32":
            close(buffer, want, 1e-5, 1e-6)
        else:
            close(buffer, want, 1e-2, 1e-3)
    print(f"stem {mode}: " + "; ".join(lines))


@pytest.mark.parametrize("mode", MODES)
def test_channels_last_max_pool_is_exact_and_keeps_its_format(results, mode):
    facts, got = results[mode]
    ref = results["stock"][1]["cl"]
    assert facts["ops"]["cl"]["max_pool2d"].get("autograd_shim") == 1, facts["ops"]["cl"]
    assert torch.equal(got["cl"]["y"], ref["y"])
    assert got["cl"]["stride"] == ref["stride"] and got["cl"]["grad_stride"] == ref["grad_stride"]
    assert torch.equal(got["cl"]["grad"] != 0, ref["grad"] != 0), "a window's winner differs"
    close(got["cl"]["grad"], ref["grad"], 1e-6, 1e-7)


@pytest.mark.parametrize("mode", MODES)
def test_a_nan_input_runs_stock_and_keeps_its_nan(results, mode):
    facts, got = results[mode]
    ref = results["stock"][1]["nan"]
    ops = facts["ops"]["nan"]["max_pool2d"]
    assert ops.get("autograd_shim", 0) == 0 and ops.get("stock") == 1, ops
    assert torch.isnan(ref["y"]).sum() == 1
    assert torch.equal(torch.isnan(got["nan"]["y"]), torch.isnan(ref["y"]))
    close(got["nan"]["y"], ref["y"], 0, 0)
    close(got["nan"]["grad"], ref["grad"], 0, 0)


@pytest.mark.parametrize("mode", MODES)
def test_double_backward_through_the_shims_kernels(results, mode):
    facts, got = results[mode]
    ref = results["stock"][1]["double"]
    ops = facts["ops"]["double"]
    assert ops["max_pool2d"].get("autograd_shim") == 1, ops
    assert ops["batch_norm"].get("autograd_shim") == 1, ops
    for key in ("gx", "weight", "bias"):
        err = rel_l2(got["double"][key], ref[key])
        assert err <= 1e-5, (key, err)


@pytest.mark.parametrize("mode", MODES)
def test_batch_norm_without_affine_or_gradient_runs_stock(results, mode):
    facts, got = results[mode]
    stock = results["stock"][1]
    for part in ("no_affine", "no_grad"):
        ops = facts["ops"][part]["batch_norm"]
        assert ops.get("autograd_shim", 0) == 0 and ops.get("stock") == 1, (part, ops)
        for key, want in stock[part].items():
            assert torch.equal(got[part][key], want), (part, key)


def test_bf16_convolutions_and_linears_run_the_shims_training_kernels(results, native_bf16):
    facts, got = results["bf16"]
    ops = facts["ops"]["heavy"]
    # Every case on the shim's kernels (the channels-last one too, in its own format).
    assert ops["conv2d"].get("autograd_shim") == 4 and ops["conv2d"].get("autograd_bf16", 0) == 0, ops
    for op in ("conv1d", "conv3d"):
        assert ops[op].get("autograd_shim") == 1, ops
    assert ops["linear"].get("autograd_shim") == 2, ops
    ref = results["stock"][1]["heavy_autocast"]
    lines = []
    for name, case in got["heavy"].items():
        want = ref[name]
        assert case["stride"] == want["stride"], name
        for key in ("y", "x", "w", "b"):
            if want[key] is None:
                assert case[key] is None, (name, key)
                continue
            assert case[key].dtype == torch.float32 and case[key].shape == want[key].shape
            err = rel_l2(case[key], want[key])
            lines.append(f"{name}.{key} {err:.4f}")
            assert err <= 0.01, lines[-1]
        assert case["x"].stride() == want["x"].stride(), name
    print("bf16 heavy vs autocast relL2: " + "; ".join(lines))


def test_fp32_mode_convolutions_and_linears_with_a_gradient_are_stocks(results):
    facts, got = results["fp32"]
    ops = facts["ops"]["heavy"]
    for op in ("conv1d", "conv2d", "conv3d", "linear"):
        assert ops[op].get("autograd_shim", 0) == 0 and ops[op].get("stock", 0) > 0, ops
    ref = results["stock"][1]["heavy"]
    for name, case in got["heavy"].items():
        for key, value in case.items():
            if isinstance(value, torch.Tensor):
                assert rel_l2(value, ref[name][key]) <= 1e-5, (name, key)


def test_double_backward_through_bf16_convolution_and_linear(results, native_bf16):
    facts, got = results["bf16"]
    ref = results["stock"][1]["heavy2"]
    ops = facts["ops"]["heavy2"]
    assert ops["conv2d"].get("autograd_shim") == 1 and ops["linear"].get("autograd_shim") == 1
    for key in ("gx", "w", "lw"):
        assert cosine(got["heavy2"][key], ref[key]) >= 0.999, key
