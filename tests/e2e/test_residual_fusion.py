"""Residual blocks: `out = bn(conv(...)); out += identity; relu_(out)` computed by one
convolution with the identity added inside it (a oneDNN sum post-op), block outputs handed
from block to block in oneDNN's layout, and the stem's max pool run on the handed-over bytes
(shim/fusion.h). In INT8 mode the bytes are INT8; in fp32 and bf16 modes they are the
mode's own precision.

The scenarios of programs/residual.py change, on their last pass, what the program does with
the addends after the convolution that would add them: the identity of a plain block changed
in place, read, kept by the program and read after later blocks ran (its bytes were summed
over, in the modes that sum in place, so its value is computed again through the blocks
before it), or replaced by another addend; in the downsample block (whose add moves the
fused result into `out`), `out` changed in place or viewed before the add; the stem's max
pool's result or the last block's (which the head's adaptive average pool also pools as
handed over) read by the program. Each runs under torch.no_grad() and under torch.inference_mode()
(whose tensors have no version counters: an in-place change is seen by the observer
instead). The results must still be those of the program as written
(against stock PyTorch on the same weights and inputs, to the mode's accuracy), which a stale
or skipped fused add would break by far more than that accuracy (the scenarios' results
differ from each other by more than 20%).
"""
import pytest
import torch

from conftest import skip_without_kernels, cosine, describe



def rel(a, b):
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-12)).item()


MODES = ["int8", "bf16", "fp32"]
GRAD_MODES = ["no_grad", "inference_mode"]
# Per mode: least cosine to stock, largest max-abs error relative to stock's largest value.
TOLERANCE = {"int8": (0.995, 0.1), "bf16": (0.9995, 0.03), "fp32": (0.999999, 1e-4)}
POOL_PATH = {"int8": "onednn_int8", "bf16": "onednn_bf16", "fp32": "onednn_fp32"}


@pytest.fixture(scope="module")
def runs(tmp_path_factory, shim, torch_available):
    tmp = tmp_path_factory.mktemp("residual")
    program = shim.program("residual.py")
    conf = tmp / "conf.json"
    out = {}
    proc = shim.run_py(program, preload=False, args=(str(tmp / "stock.pt"),))
    assert proc.returncode == 0, describe(proc)
    out["stock"] = torch.load(tmp / "stock.pt")
    # min_max: TOLERANCE's bound on the largest error holds for ranges that keep every value;
    # mse, the default, clips the largest (a better cosine, a larger error at those values)
    proc = shim.run_py(program, mode="calibration",
                       env={"IPEX_CONFIG": str(conf), "IPEX_INT8_ALGORITHM": "min_max"},
                       args=(str(tmp / "calibration.pt"),))
    assert proc.returncode == 0 and conf.exists(), describe(proc)
    for mode in MODES:
        for grad_mode in GRAD_MODES:
            for tag, extra in [("fused", {}), ("unfused", {"IPEX_FUSION": "0"})]:
                env = dict(extra, IPEX_CONFIG=str(conf)) if mode == "int8" else extra
                path = tmp / f"{mode}_{grad_mode}_{tag}.pt"
                proc = shim.run_py(program, mode=mode, env=env, args=(str(path), grad_mode))
                assert proc.returncode == 0, describe(proc)
                out[(mode, grad_mode, tag)] = torch.load(path)
    return out


SCENARIOS = ["plain", "identity_changed", "identity_read", "identity_kept", "other_addend",
             "out_changed",
             "out_viewed", "pooled_read", "features_read"]
# mobilenet-style blocks, `x + bn(conv(...))` out of place: as learned, an identity changed in
# place after the convolution, the operands swapped, the batch norm's result read after the add.
OUT_OF_PLACE = ["oop_plain", "oop_identity_changed", "oop_swapped", "oop_out_read"]
# regnet-style blocks, `relu(proj(x) + f(x))`: as learned, the projection's result changed in
# place or read before the add, the operands swapped.
PROJECTION = ["proj_plain", "proj_changed", "proj_read", "proj_swapped"]


@pytest.mark.parametrize("grad_mode", GRAD_MODES)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("scenario", SCENARIOS + OUT_OF_PLACE + PROJECTION)
def test_results_follow_the_program_in_every_scenario(runs, mode, grad_mode, scenario):
    least_cosine, most_rel = TOLERANCE[mode]
    stock = runs["stock"]["results"][scenario]
    fused = runs[(mode, grad_mode, "fused")]["results"][scenario]
    unfused = runs[(mode, grad_mode, "unfused")]["results"][scenario]
    assert cosine(fused, stock) >= least_cosine, (scenario, cosine(fused, stock))
    assert rel(fused, stock) <= most_rel, (scenario, rel(fused, stock))
    # Fusion changes where the roundings happen, not what is computed.
    assert cosine(fused, unfused) >= least_cosine, (scenario, cosine(fused, unfused))


def test_the_scenarios_differ_enough_to_catch_a_stale_sum(runs):
    stock = runs["stock"]["results"]
    for scenario in ["identity_changed", "other_addend", "out_changed"]:
        assert rel(stock[scenario], stock["plain"]) > 0.2, scenario
    assert rel(stock["oop_identity_changed"], stock["oop_plain"]) > 0.2
    assert rel(stock["proj_changed"], stock["proj_plain"]) > 0.2


@pytest.mark.parametrize("grad_mode", GRAD_MODES)
@pytest.mark.parametrize("mode", MODES)
def test_the_pools_run_on_handed_over_bytes(runs, mode, grad_mode, cpu_plan):
    skip_without_kernels(cpu_plan, mode)
    # Pass 1 learns (oneDNN pools the fp32 values the program holds); passes 2 and 3 pool
    # the stem's result as the convolution left it, in the mode's precision. (In fp32 mode
    # both count as onednn_fp32; bf16 and int8 tell the two apart.)
    def expect_handed_over_twice(paths):
        if mode == "fp32":
            assert paths == {"onednn_fp32": 3}, paths
        else:
            assert paths == {POOL_PATH[mode]: 2, "onednn_fp32": 1}, paths

    expect_handed_over_twice(runs[(mode, grad_mode, "fused")]["counters"]["plain"]["max_pool2d"])
    unfused = runs[(mode, grad_mode, "unfused")]["counters"]["plain"]["max_pool2d"]
    assert unfused == {"onednn_fp32": 3}, unfused
    # The head's adaptive average pool, likewise, on the last block's handed-over result; on
    # the learning pass it averages the program's NCHW tensor, which stock's mean does
    # faster (a global average: the kernel would reorder the input into blocks first).
    head = dict(runs[(mode, grad_mode, "fused")]["counters"]["plain"]["adaptive_avg_pool2d"])
    assert head.pop("stock") == 1 and head.pop("fallback_reasons") == {
        "stock is faster here": 1}, head
    assert head == {POOL_PATH[mode]: 2}, head


@pytest.mark.parametrize("grad_mode", GRAD_MODES)
@pytest.mark.parametrize("mode", MODES)
def test_the_plain_blocks_are_fused_without_mispredictions(runs, mode, grad_mode):
    counters = runs[(mode, grad_mode, "fused")]["counters"]["plain"]
    # Passes 2 and 3 answer each of the three blocks' `out += identity` in a convolution.
    assert counters["add_"].get("fused") == 6, counters
    assert counters["fused_convolutions"] > 0, counters
    assert counters["handoffs"] > 0, counters
    assert counters["mispredictions"] == 0, counters


@pytest.mark.parametrize("grad_mode", GRAD_MODES)
@pytest.mark.parametrize("mode", MODES)
def test_the_adds_sum_over_their_addends_own_memory(runs, mode, grad_mode, cpu_plan):
    skip_without_kernels(cpu_plan, mode)
    # Passes 2 and 3 sum over each addend's bytes where they lie (no copy): the downsample
    # convolution over out's (kept as s8 in the scale the sum reads, in INT8 mode), and each
    # plain block's last convolution over its input's (the block before it's result, whose
    # value can be computed again). The plain blocks' INT8 inputs are read by the sum as they
    # are only where status()["on_this_cpu"]["int8_residual_addends"] says so (avx512_core_bf16
    # or AMX); elsewhere they are requantised into the destination.
    downsample = 1
    as_they_are = cpu_plan["int8_residual_addends"].startswith("read by the convolution's sum")
    plain = 0 if mode == "int8" and not as_they_are else 2
    counters = runs[(mode, grad_mode, "fused")]["counters"]
    assert counters["plain"]["sums_in_place"] == 2 * (downsample + plain), (
        cpu_plan, counters["plain"])
    # A program that keeps a block's input (the same tensor, no view) changes nothing until
    # it reads it, after the network ran.
    kept = counters["identity_kept"]["sums_in_place"] - counters["identity_read"]["sums_in_place"]
    assert kept == 2 * (downsample + plain), (counters["identity_kept"], counters["identity_read"])
    # In the scenarios that change or view `out` after the downsample ran, its value was
    # recomputed (the bytes held the sum by then), and the results above matched stock's; pass
    # 3's plain blocks then add what the stock add made, a tensor they copy.
    for scenario in ("out_changed", "out_viewed"):
        before = counters[SCENARIOS[SCENARIOS.index(scenario) - 1]]
        assert counters[scenario]["sums_in_place"] - before["sums_in_place"] == (
            2 * downsample + plain), (scenario, counters[scenario], before)


@pytest.mark.parametrize("grad_mode", GRAD_MODES)
@pytest.mark.parametrize("mode", MODES)
def test_changed_programs_are_detected(runs, mode, grad_mode):
    # Counters are cumulative; each scenario runs on a network of its own.
    counters = runs[(mode, grad_mode, "fused")]["counters"]
    for before, scenario in zip(SCENARIOS, SCENARIOS[1:]):
        assert counters[scenario]["repairs"] > counters[before]["repairs"], (scenario, counters)
        assert counters[scenario]["mispredictions"] > counters[before]["mispredictions"], (
            scenario, counters)


@pytest.mark.parametrize("grad_mode", GRAD_MODES)
@pytest.mark.parametrize("mode", MODES)
def test_out_of_place_adds_are_fused_and_changed_programs_detected(runs, mode, grad_mode):
    counters = runs[(mode, grad_mode, "fused")]["counters"]
    plain = counters["oop_plain"]
    # Passes 2 and 3 answer both blocks' `x + out` in a convolution, with no misprediction
    # (counters are cumulative from the scenarios before).
    assert plain["add"].get("fused") == 4, plain
    before = counters["features_read"]
    assert plain["mispredictions"] == before["mispredictions"], (before, plain)
    # The swapped operands are the same add; a changed identity or a read of the batch norm's
    # own result is detected and repaired.
    assert counters["oop_swapped"]["add"].get("fused", 0) > plain["add"]["fused"], counters
    for before, scenario in [("oop_plain", "oop_identity_changed"),
                             ("oop_swapped", "oop_out_read")]:
        assert counters[scenario]["repairs"] > counters[before]["repairs"], (scenario, counters)


@pytest.mark.parametrize("grad_mode", GRAD_MODES)
@pytest.mark.parametrize("mode", MODES)
def test_projection_adds_are_fused_and_changed_programs_detected(runs, mode, grad_mode):
    counters = runs[(mode, grad_mode, "fused")]["counters"]
    plain, before = counters["proj_plain"], counters["oop_out_read"]
    # Passes 2 and 3 answer both blocks' `proj(x) + f(x)` in f's last convolution (counters
    # are cumulative from the scenarios before), with no misprediction.
    assert plain["add"].get("fused", 0) - before["add"].get("fused", 0) == 4, (before, plain)
    assert plain["mispredictions"] == before["mispredictions"], (before, plain)
    # A changed or read projection is detected and repaired; swapped operands are the same add.
    for before, scenario in [("proj_plain", "proj_changed"), ("proj_changed", "proj_read")]:
        assert counters[scenario]["repairs"] > counters[before]["repairs"], (scenario, counters)
    assert (counters["proj_swapped"]["add"].get("fused", 0) >
            counters["proj_read"]["add"].get("fused", 0)), counters
