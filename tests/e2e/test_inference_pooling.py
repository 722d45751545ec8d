"""Inference pooling of the program's own fp32 tensors on oneDNN (no gradient): max
pooling bit for bit like stock, averages within 4 ulps of the largest input, stock's
strides (channels-last stays channels-last), in fp32, bf16 and int8 mode alike (pooling
values is exact in every mode; int8 mode quantises only what a convolution reads).
What the kernel does not take runs stock, counted: an NCHW input whose channels do not
fill oneDNN's channel blocks, ceil_mode averages, and max pooling of an input holding a
NaN or a -inf (oneDNN's max skips a NaN; stock returns it); so does a global average of an
NCHW input, where stock's mean is the faster (the kernel would reorder it into blocks first).
programs/inference_pooling.py runs the same seeded cases without the shim and under each
mode (int8 without a config: its pools run all the same)."""
import pytest
import torch

from conftest import describe, parse_report

MODES = ("fp32", "bf16", "int8")
ON_ONEDNN = ("squeezenet_max_ceil", "max_channels_last", "inception_avg_pad",
             "avg_pad_not_counted_cl", "global_average_cl", "global_average_not_global")
STOCK = {"max_three_channels_nchw": "unsupported shape or arguments",
         "global_average_nchw": "stock is faster here",
         "avg_ceil_mode": "unsupported shape or arguments",
         "max_nan": "NaN or -inf in the input", "max_minus_inf": "NaN or -inf in the input"}
GRAD_MODES = ("no_grad", "inference_mode")


@pytest.fixture(scope="module")
def results(run_py, shim, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("inference_pooling")
    program = shim.program("inference_pooling.py")
    out = {}
    for tag, mode, preload in (("stock", None, False),) + tuple((m, m, True) for m in MODES):
        path = workdir / f"{tag}.pt"
        env = {"IPEX_CONFIG": str(workdir / "absent.json")} if mode == "int8" else None
        proc = run_py(program, mode=mode, preload=preload, env=env, args=(path,))
        assert proc.returncode == 0, describe(proc)
        facts = parse_report(proc.stdout)
        assert facts["stock"] == (tag == "stock"), facts
        assert "kernel failed" not in proc.stderr, proc.stderr
        out[tag] = (facts, torch.load(path))
    return out


@pytest.mark.parametrize("grad_mode", GRAD_MODES)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("case", ON_ONEDNN)
def test_pools_on_onednn_match_stock(results, mode, case, grad_mode):
    facts, got = results[mode]
    key = f"{case}/{grad_mode}"
    assert facts["ops"][key] == {"onednn_fp32": 1}, facts["ops"][key]
    ref = results["stock"][1][key]
    assert got[key]["stride"] == ref["stride"]
    if "max" in case:
        assert torch.equal(got[key]["y"], ref["y"])
    else:
        allowed = 4 * torch.finfo(torch.float32).eps * 5.0  # inputs are N(0, 1): |x| < 5
        assert (got[key]["y"] - ref["y"]).abs().max().item() <= allowed


@pytest.mark.parametrize("grad_mode", GRAD_MODES)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("case", STOCK)
def test_what_the_kernel_does_not_take_runs_stock(results, mode, case, grad_mode):
    facts, got = results[mode]
    key = f"{case}/{grad_mode}"
    assert facts["ops"][key] == {"stock": 1, "fallback_reasons": {STOCK[case]: 1}}, facts["ops"][key]
    ref = results["stock"][1][key]
    assert got[key]["stride"] == ref["stride"]
    torch.testing.assert_close(got[key]["y"], ref["y"], rtol=0, atol=0, equal_nan=True)


def test_the_special_values_reach_the_output(results):
    # The stock cases would catch a kernel that skipped NaN or clipped -inf only if the
    # reference holds them.
    ref = results["stock"][1]
    assert torch.isnan(ref["max_nan/no_grad"]["y"]).sum() == 1
    assert torch.isneginf(ref["max_minus_inf/no_grad"]["y"]).any()
