"""torch.cat of convolution chains' results joined as handed over (shim/fusion.h): the
fire modules of programs/joined.py (two expand chains joined, then max-pooled or read by the
next squeeze convolution). From pass 2 the cat joins the chains' bytes in oneDNN's layout
(INT8, BF16 or fp32 by mode) and the next op reads the joined bytes; on pass 3 some
scenarios read the joined tensor or one chain's result, change a chain's result before the
cat, or swap the cat's inputs. Results must be the program's as written (against stock
PyTorch on the same weights and inputs, to the mode's accuracy); what was read must be the
value the program would see.
"""
import pytest

from conftest import assert_scenario_like_stock, rel_max, run_in_modes, skip_without_kernels

MODES = ["int8", "bf16", "fp32"]
GRAD_MODES = ["no_grad", "inference_mode"]
SCENARIOS = ["plain", "joined_read", "part_read", "part_changed", "swapped"]
# Per mode: least cosine to stock, largest max-abs error relative to stock's largest value.
TOLERANCE = {"int8": (0.99, 0.1), "bf16": (0.9995, 0.03), "fp32": (0.999999, 1e-4)}
CAT_PATH = {"int8": "onednn_int8", "bf16": "onednn_bf16", "fp32": "onednn_fp32"}


@pytest.fixture(scope="module")
def runs(tmp_path_factory, shim, torch_available):
    tmp = tmp_path_factory.mktemp("joined")
    return run_in_modes(shim, tmp, shim.program("joined.py"), MODES, GRAD_MODES)


@pytest.mark.parametrize("grad_mode", GRAD_MODES)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("scenario", SCENARIOS)
def test_results_follow_the_program(runs, mode, grad_mode, scenario):
    # In the two read scenarios the last element is the value read, not the bytes.
    reads = scenario in ("joined_read", "part_read")
    assert_scenario_like_stock(runs, mode, grad_mode, scenario, TOLERANCE[mode],
                               read_rel=TOLERANCE[mode][1] if reads else None)


def test_the_scenarios_differ_enough_to_catch_a_stale_join(runs):
    stock = runs["stock"]["results"]
    assert rel_max(stock["part_changed"], stock["plain"]) > 0.05
    assert rel_max(stock["swapped"], stock["plain"]) > 0.05


@pytest.mark.parametrize("grad_mode", GRAD_MODES)
@pytest.mark.parametrize("mode", MODES)
def test_cats_join_handed_over_bytes_and_changed_programs_are_repaired(runs, mode, grad_mode,
                                                                       cpu_plan):
    skip_without_kernels(cpu_plan, mode)
    counters = runs[(mode, grad_mode)]["counters"]
    plain = counters["plain"]
    # Three fire modules: pass 1 runs stock and learns, passes 2 and 3 join as handed over.
    assert plain["cat"].get(CAT_PATH[mode]) == 6 and plain["cat"].get("stock") == 3, plain
    assert plain["mispredictions"] == 0, plain
    # Counters are cumulative. A read of the joined tensor or of a joined chain's result is
    # repaired; a chain's result changed before the cat is repaired and joined by stock.
    for before, scenario in zip(SCENARIOS, SCENARIOS[1:4]):
        assert counters[scenario]["repairs"] > counters[before]["repairs"], (scenario, counters)
    # Every failed prediction here is a handoff's (the values were right): sites stop handing
    # their results over, and none is switched off. (A chain's result changed before the cat
    # leaves its sibling's bytes unjoinable; the sibling used to be switched off for it.)
    assert counters["swapped"]["sites_off"] == 0, counters
    # Swapped inputs are joined as handed over all the same (each keeps its own bytes).
    joined = counters["swapped"]["cat"][CAT_PATH[mode]] - counters["part_changed"]["cat"][
        CAT_PATH[mode]]
    assert joined == 6, counters
