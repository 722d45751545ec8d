"""INT8 residual blocks: `out = bn(conv(...)); out += identity; relu_(out)` computed by one
INT8 convolution with the identity added inside it, and block outputs handed from block to
block in oneDNN's INT8 layout (shim/fusion.h).

The scenarios of programs/int8_residual.py change, on their last pass, what the program does
with the addends after the convolution that would add them: the identity of a plain block
changed in place, read, or replaced by another addend; in the downsample block (whose add
moves the fused result into `out`), `out` changed in place or viewed before the add; the
stem's max pool (which pools the INT8 bytes and hands them on) read by the program. The results must still be those of the program as written (against
stock PyTorch on the same weights and inputs, to INT8 accuracy), which a stale or skipped
fused add would break by far more than INT8's error.
"""
import pytest
import torch

from conftest import describe


def cosine(a, b):
    return torch.nn.functional.cosine_similarity(a.flatten(), b.flatten(), dim=0).item()


def rel(a, b):
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-12)).item()


@pytest.fixture(scope="module")
def runs(tmp_path_factory, shim, torch_available):
    tmp = tmp_path_factory.mktemp("int8_residual")
    program = shim.program("int8_residual.py")
    conf = tmp / "conf.json"
    out = {}
    proc = shim.run_py(program, preload=False, args=(str(tmp / "stock.pt"),))
    assert proc.returncode == 0, describe(proc)
    out["stock"] = torch.load(tmp / "stock.pt")
    proc = shim.run_py(program, mode="calibration", env={"IPEX_CONFIG": str(conf)},
                       args=(str(tmp / "calibration.pt"),))
    assert proc.returncode == 0 and conf.exists(), describe(proc)
    for tag, extra in [("fused", {}), ("unfused", {"IPEX_FUSION": "0"})]:
        env = dict(extra, IPEX_CONFIG=str(conf))
        proc = shim.run_py(program, mode="int8", env=env, args=(str(tmp / f"{tag}.pt"),))
        assert proc.returncode == 0, describe(proc)
        out[tag] = torch.load(tmp / f"{tag}.pt")
    return out


SCENARIOS = ["plain", "identity_changed", "identity_read", "other_addend", "out_changed",
             "out_viewed", "pooled_read"]


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_int8_results_follow_the_program_in_every_scenario(runs, scenario):
    stock = runs["stock"]["results"][scenario]
    fused = runs["fused"]["results"][scenario]
    unfused = runs["unfused"]["results"][scenario]
    assert cosine(fused, stock) >= 0.995, (scenario, cosine(fused, stock))
    assert rel(fused, stock) <= 0.1, (scenario, rel(fused, stock))
    # Fusion changes where the INT8 roundings happen, not what is computed.
    assert cosine(fused, unfused) >= 0.995, (scenario, cosine(fused, unfused))


def test_the_scenarios_differ_enough_to_catch_a_stale_sum(runs):
    stock = runs["stock"]["results"]
    for scenario in ["identity_changed", "other_addend", "out_changed"]:
        assert rel(stock[scenario], stock["plain"]) > 0.2, scenario


def test_the_max_pool_runs_on_int8_bytes(runs):
    # Pass 1 learns; passes 2 and 3 pool the stem's INT8 result as it is.
    paths = runs["fused"]["counters"]["plain"]["max_pool2d"]
    assert paths.get("onednn_int8") == 2 and paths.get("stock") == 1, paths
    unfused = runs["unfused"]["counters"]["plain"]["max_pool2d"]
    assert "onednn_int8" not in unfused, unfused


def test_the_plain_blocks_are_fused_without_mispredictions(runs):
    counters = runs["fused"]["counters"]["plain"]
    assert counters["fused_convolutions"] > 0, counters
    assert counters["handoffs"] > 0, counters
    assert counters["mispredictions"] == 0, counters


def test_changed_programs_are_detected(runs):
    # Counters are cumulative; each scenario runs on a network of its own.
    counters = runs["fused"]["counters"]
    for before, scenario in zip(SCENARIOS, SCENARIOS[1:]):
        assert counters[scenario]["repairs"] > counters[before]["repairs"], (scenario, counters)
        assert counters[scenario]["mispredictions"] > counters[before]["mispredictions"], (
            scenario, counters)
