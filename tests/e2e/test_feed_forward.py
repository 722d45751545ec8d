"""Feed-forward blocks: a linear's result (after its gelu or relu, and through an eval dropout) handed
straight to the next linear, INT8 in that linear's input scale in int8 mode, BF16 in bf16 mode
(shim/fusion.h). The scenarios of programs/feed_forward.py change, on their last pass, what
the program does with the hidden result: read it after the second linear ran, give it to a
third linear too (which reads the same bytes, or settles them), or change it in place before the second linear reads it. Each runs under
torch.no_grad() and torch.inference_mode(). The results must be the program's as written,
against stock PyTorch on the same weights and inputs, to the mode's accuracy; a hidden result
read as its kept bytes (8 or 16 bits where 32 are expected) would be off by far more.
"""
import pytest

from conftest import cosine, run_in_modes

MODES = ["int8", "bf16"]
GRAD_MODES = ["no_grad", "inference_mode"]
# Per mode: least cosine to stock, largest max-abs error relative to stock's largest value.
TOLERANCE = {"int8": (0.995, 0.1), "bf16": (0.9995, 0.03)}
HANDED = ["vit", "bert", "plain", "tanh", "relu", "relu_"]
TWISTED = ["read", "second", "changed", "relu_read", "relu_changed"]


def rel(a, b):
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-12)).item()


@pytest.fixture(scope="module")
def runs(tmp_path_factory, shim, torch_available):
    tmp = tmp_path_factory.mktemp("feed_forward")
    return run_in_modes(shim, tmp, shim.program("feed_forward.py"), MODES, GRAD_MODES,
                        unfused=True)


def deltas(counters, key):
    """Per scenario, how much status()["fusion"][key] grew during it."""
    previous, out = 0, {}
    for name, fusion in counters.items():
        out[name] = fusion[key] - previous
        previous = fusion[key]
    return out


@pytest.mark.parametrize("grad_mode", GRAD_MODES)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("scenario", HANDED + TWISTED)
def test_results_follow_the_program(runs, mode, grad_mode, scenario):
    least_cosine, most_rel = TOLERANCE[mode]
    stock_y, stock_seen = runs["stock"]["results"][scenario]
    for tag in ((), ("unfused",)):
        y, seen = runs[(mode, grad_mode) + tag]["results"][scenario]
        assert y.shape == stock_y.shape and y.dtype == stock_y.dtype
        assert cosine(y, stock_y) >= least_cosine, (tag, cosine(y, stock_y))
        assert rel(y, stock_y) <= most_rel, (tag, rel(y, stock_y))
        if scenario in ("read", "second", "relu_read"):
            assert cosine(seen, stock_seen) >= least_cosine, (tag, cosine(seen, stock_seen))
            assert rel(seen, stock_seen) <= most_rel, (tag, rel(seen, stock_seen))


@pytest.mark.parametrize("grad_mode", GRAD_MODES)
@pytest.mark.parametrize("mode", MODES)
def test_hidden_results_are_handed_over_and_a_changed_use_is_caught(runs, mode, grad_mode):
    counters = runs[(mode, grad_mode)]["counters"]
    handoffs = deltas(counters, "handoffs")
    mispredictions = deltas(counters, "mispredictions")
    # Passes 2 to 4 of every block that keeps its shape hand the hidden result over.
    for name in HANDED:
        assert handoffs[name] >= 3, (name, handoffs)
        assert mispredictions[name] == 0, (name, mispredictions)
    # The last pass reads the handed-over result some other way: caught, repaired.
    for name in ("read", "changed", "relu_read", "relu_changed"):
        assert mispredictions[name] >= 1, (name, mispredictions)
    # A third linear reading it too is a linear: it reads the bytes as they are where they are
    # what it reads (bf16 mode), else settles them first (int8 mode here: calibration saw
    # that tensor reach it on one pass only, so its input scale is not the second linear's,
    # which saw every scenario's); neither is a failed prediction.
    assert handoffs["second"] >= 3 and mispredictions["second"] == 0, (handoffs, mispredictions)
    unfused = runs[(mode, grad_mode, "unfused")]["counters"]
    assert all(value == 0 for value in deltas(unfused, "handoffs").values())
