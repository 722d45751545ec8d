"""Fusion of conv -> batch_norm -> relu and linear -> gelu/relu from the learned graph
(shim/fusion.h).

Each scenario learns the chain on pass 1 and runs passes 2 and 3 with the chain fused; in
the scenarios whose program uses the tensors differently after learning, the prediction
fails, and the values must still be those of stock PyTorch (the failure is detected, the
tensor recomputed, and the site's fusion switched off). Control: the same program without
the preload.
"""
import pytest
import torch

from conftest import describe

TOLERANCE = {"fp32": 1e-5, "bf16": 2e-2}


def rel(a, b):
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-12)).item()


@pytest.fixture(scope="module")
def runs(tmp_path_factory, shim, torch_available):
    out = {}
    tmp = tmp_path_factory.mktemp("fusion")
    for tag, mode, extra in [("control", None, {}), ("fp32", "fp32", {}), ("bf16", "bf16", {}),
                             ("fp32_off", "fp32", {"IPEX_FUSION": "0"})]:
        path = tmp / f"{tag}.pt"
        proc = shim.run_py(shim.program("float_fusion.py"), mode=mode, env=extra,
                           preload=mode is not None, args=(str(path),))
        assert proc.returncode == 0, describe(proc)
        out[tag] = (torch.load(path), proc)
    return out


@pytest.mark.parametrize("mode", ["fp32", "bf16"])
def test_fused_values_match_stock_in_every_scenario(runs, mode):
    control = runs["control"][0]["results"]
    got = runs[mode][0]["results"]
    for scenario, reference in control.items():
        for i, (a, b) in enumerate(zip(got[scenario], reference)):
            assert a.dtype == b.dtype and a.shape == b.shape, (scenario, i)
            assert rel(a, b) <= TOLERANCE[mode], (scenario, i, rel(a, b))


@pytest.mark.parametrize("mode", ["fp32", "bf16"])
def test_the_plain_chain_is_fused_without_mispredictions(runs, mode):
    counters = runs[mode][0]["counters"]["plain"]
    assert counters["enabled"] is True
    assert counters["fused_convolutions"] == 2, counters  # passes 2 and 3
    assert counters["mispredictions"] == 0 and counters["repairs"] == 0, counters


@pytest.mark.parametrize("mode", ["fp32", "bf16"])
def test_each_changed_program_is_detected_and_switched_off(runs, mode):
    counters = runs[mode][0]["counters"]
    previous = counters["plain"]
    for scenario in ["conv_output_used_twice", "no_batch_norm", "bn_output_used_before_relu",
                     "input_changed_then_conv_output_read"]:
        now = counters[scenario]
        # One new site; its prediction fails once on pass 2, then it is never fused again.
        assert now["sites"] == previous["sites"] + 1, (scenario, previous, now)
        assert now["fused_convolutions"] == previous["fused_convolutions"] + 1, (scenario, now)
        assert now["sites_off"] == previous["sites_off"] + 1, (scenario, previous, now)
        assert now["repairs"] > previous["repairs"], (scenario, previous, now)
        previous = now


def test_fusion_off_fuses_nothing_and_matches(runs):
    counters = runs["fp32_off"][0]["counters"]["plain"]
    assert counters["enabled"] is False and counters["fused_convolutions"] == 0, counters
    control = runs["control"][0]["results"]
    for scenario, reference in control.items():
        for a, b in zip(runs["fp32_off"][0]["results"][scenario], reference):
            assert rel(a, b) <= 1e-5, scenario


@pytest.mark.parametrize("mode", ["fp32", "bf16"])
def test_linear_activations_are_fused_and_failures_detected(runs, mode):
    counters = runs[mode][0]["counters"]
    previous = counters["conv_relu_output_used_twice"]
    for scenario, fails in [("linear_gelu", False), ("linear_relu_inplace", False),
                            ("linear_relu", False), ("linear_output_used_twice", True),
                            ("other_gelu", True)]:
        now = counters[scenario]
        # The first linear learns its activation on pass 1 and is fused on pass 2; a failed
        # prediction switches it off for pass 3.
        fused = now["fused_linears"] - previous["fused_linears"]
        assert fused == (1 if fails else 2), (scenario, previous, now)
        assert now["sites_off"] - previous["sites_off"] == (1 if fails else 0), (scenario, now)
        assert now["mispredictions"] - previous["mispredictions"] == (1 if fails else 0), \
            (scenario, now)
        previous = now


@pytest.mark.parametrize("mode", ["fp32", "bf16"])
def test_conv_relu_without_batch_norm_is_fused_and_failure_detected(runs, mode):
    counters = runs[mode][0]["counters"]
    before, plain, twice = (counters["handoff_other_consumer"], counters["conv_relu"],
                            counters["conv_relu_output_used_twice"])
    assert plain["fused_convolutions"] - before["fused_convolutions"] == 2, (before, plain)
    assert plain["mispredictions"] == before["mispredictions"], (before, plain)
    assert twice["fused_convolutions"] - plain["fused_convolutions"] == 1, (plain, twice)
    assert twice["sites_off"] - plain["sites_off"] == 1, (plain, twice)


THREADS_PROGRAM = r'''
import json, threading, torch, torchvision
torch.manual_seed(0)
model = torchvision.models.resnet18(weights=None).eval()
x = torch.randn(2, 3, 64, 64)
with torch.no_grad():
    reference = model(x)  # pass 1: learns the graph, nothing fused
errors = []
def work():
    with torch.no_grad():
        for _ in range(4):
            y = model(x)
            errors.append(((y - reference).abs().max() / reference.abs().max()).item())
threads = [threading.Thread(target=work) for _ in range(3)]
for t in threads: t.start()
for t in threads: t.join()
print("E2E-REPORT:" + json.dumps({"errors": errors,
                                  "fusion": json.loads(torch.ops.ipex_shim.status())["fusion"]}))
'''


@pytest.mark.parametrize("mode", ["fp32", "bf16"])
def test_fusion_in_concurrent_threads_matches_the_unfused_pass(run_py, mode):
    """Three threads run the fused model at once (open fused results are per thread): every
    output matches the unfused first pass within the mode's tolerance, no misprediction."""
    from conftest import parse_report
    proc = run_py(THREADS_PROGRAM, mode=mode)
    assert proc.returncode == 0, describe(proc)
    report = parse_report(proc.stdout)
    assert len(report["errors"]) == 12
    assert max(report["errors"]) <= TOLERANCE[mode], report
    assert report["fusion"]["fused_convolutions"] == 12 * 20, report["fusion"]
    assert report["fusion"]["mispredictions"] == 0, report["fusion"]


@pytest.mark.parametrize("mode", ["fp32", "bf16"])
def test_handoff_between_convolutions_and_its_failures(runs, mode):
    """conv->bn->relu_->conv: from pass 2 the first chain's result reaches the second conv in
    oneDNN's layout (a handoff); reading it afterwards, or giving it to another op instead,
    gets it repaired (values checked against stock in the first test)."""
    counters = runs[mode][0]["counters"]
    before = counters["hook_reads_conv_output"]
    plain = counters["handoff"]
    assert plain["handoffs"] - before["handoffs"] == 2, (before, plain)  # passes 2 and 3
    assert plain["mispredictions"] == before["mispredictions"], (before, plain)
    read_after = counters["handoff_read_after"]
    assert read_after["handoffs"] - plain["handoffs"] >= 1, (plain, read_after)
    assert read_after["repairs"] > plain["repairs"], (plain, read_after)
    other = counters["handoff_other_consumer"]
    assert other["repairs"] > read_after["repairs"], (read_after, other)
    assert other["handoffs"] == read_after["handoffs"], (read_after, other)
