"""Inception's joins (programs/inception_blocks.py, shim/fusion.h): a max pool's result
joined with chains written in another INT8 scale, inner joins inside an outer one, and an
average pool whose result a convolution reads. Results must be stock's (to the mode's
accuracy) in every scenario, what the program reads must be the value it would see, and
once learned (passes 3 and 4) every cat joins the handed-over bytes without a failed
prediction.
"""
import pytest

from conftest import assert_scenario_like_stock, run_in_modes, skip_without_kernels

MODES = ["int8", "bf16", "fp32"]
GRAD_MODES = ["no_grad", "inference_mode"]
SCENARIOS = ["plain", "pool_read", "inner_read"]
# Per mode: least cosine to stock, largest max-abs error relative to stock's largest value.
TOLERANCE = {"int8": (0.99, 0.1), "bf16": (0.9995, 0.03), "fp32": (0.999999, 1e-4)}
PATH = {"int8": "onednn_int8", "bf16": "onednn_bf16", "fp32": "onednn_fp32"}
CATS_A_PASS = 5  # block A, block B, block E's two inner joins and its outer one


@pytest.fixture(scope="module")
def runs(tmp_path_factory, shim, torch_available):
    tmp = tmp_path_factory.mktemp("inception")
    return run_in_modes(shim, tmp, shim.program("inception_blocks.py"), MODES, GRAD_MODES)


@pytest.mark.parametrize("grad_mode", GRAD_MODES)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("scenario", SCENARIOS)
def test_results_follow_the_program(runs, mode, grad_mode, scenario):
    # Past "plain", the last element is the value the program read (a sum over the tensor).
    assert_scenario_like_stock(runs, mode, grad_mode, scenario, TOLERANCE[mode],
                               read_rel=None if scenario == "plain" else 0.02)


def test_the_reads_see_what_they_name(runs):
    stock = runs["stock"]["results"]
    # The two reads are sums of different tensors: a repair that gave the wrong tensor's
    # value (or the joined one's) would not match.
    pool_sum, inner_sum = stock["pool_read"][-1], stock["inner_read"][-1]
    assert abs(pool_sum - inner_sum) > 0.1 * abs(inner_sum)


def delta(counters, key, path):
    before, after = counters
    return after[key].get(path, 0) - before[key].get(path, 0)


@pytest.mark.parametrize("grad_mode", GRAD_MODES)
@pytest.mark.parametrize("mode", MODES)
def test_every_join_reads_handed_over_bytes_once_learned(runs, mode, grad_mode, cpu_plan):
    skip_without_kernels(cpu_plan, mode)
    plain = runs[(mode, grad_mode)]["counters"]["plain"]
    # Passes 3 and 4: the max pool's result (its input's INT8 scale) joins the chains'
    # (the next op's scale); the inner joins hand their results to the outer one.
    assert delta(plain, "cat", PATH[mode]) == 2 * CATS_A_PASS, plain
    assert delta(plain, "cat", "stock") == 0, plain
    assert plain[1]["mispredictions"] == plain[0]["mispredictions"] == 0, plain
    # The pools read the joined bytes as they are.
    assert delta(plain, "avg_pool2d", PATH[mode]) == 2, plain
    assert delta(plain, "max_pool2d", PATH[mode]) == 2, plain


@pytest.mark.parametrize("grad_mode", GRAD_MODES)
@pytest.mark.parametrize("mode", MODES)
def test_a_read_of_a_joined_part_is_repaired_not_misjoined(runs, mode, grad_mode, cpu_plan):
    skip_without_kernels(cpu_plan, mode)
    counters = runs[(mode, grad_mode)]["counters"]
    for scenario in ("pool_read", "inner_read"):
        before, after = counters[scenario]
        assert after["repairs"] > before["repairs"], (scenario, counters)
        # A handoff's failed prediction stops handing over; no site is switched off.
        assert after["sites_off"] == 0, (scenario, counters)
