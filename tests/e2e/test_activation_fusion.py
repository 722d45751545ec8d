"""silu and hardswish fused into the convolution before them, with EfficientNet's and
MobileNetV3's squeeze-excitation blocks (programs/activations.py), in every mode.

From pass 2 each conv -> batch_norm -> silu/hardswish chain (and the squeeze-excitation's
conv -> activation) runs as one convolution; the result goes on in oneDNN's layout where
the next op is a convolution. A depthwise chain's result is read twice by its
squeeze-excitation block: pooled, then multiplied by its gate, both from the bytes as the
convolution left them, and the product goes on in oneDNN's layout to the projection (INT8:
in its input scale, from pass 3), so no pass mispredicts anything. On pass 3 some scenarios
read or change the tensors the fusion skipped: the batch norm's result read before the
activation (the site is switched off and its value recomputed), the activation's result
read or changed in place before the next convolution (repaired), the batch norm's result
multiplied before the activation (mul's own kernel repairs it), the squeeze-excitation's
product read or changed before the projection, or its gate made a factor per element (the
product or the depthwise result repaired; the depthwise chain stops handing its result
over). Results must be the program's as written (stock PyTorch on the same weights and
inputs, to the mode's accuracy).
"""
import pytest
import torch

from conftest import cosine, describe, skip_without_kernels

MODES = ["int8", "bf16", "fp32"]
ACTIVATIONS = ["silu", "hardswish"]
SCENARIOS = ["plain", "bn_read", "bn_scaled", "act_read", "act_changed", "se_read",
             "se_changed", "se_gate_wide"]
# Per mode: least cosine to stock, largest max-abs error relative to stock's largest value.
TOLERANCE = {"int8": (0.995, 0.05), "bf16": (0.9995, 0.03), "fp32": (0.999999, 1e-4)}


def rel(a, b):
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-12)).item()


@pytest.fixture(scope="module")
def runs(tmp_path_factory, shim, torch_available):
    tmp = tmp_path_factory.mktemp("activations")
    program = shim.program("activations.py")
    out = {}
    for activation in ACTIVATIONS:
        conf = tmp / f"{activation}.json"
        stock = tmp / f"{activation}_stock.pt"
        proc = shim.run_py(program, preload=False, args=(str(stock), activation))
        assert proc.returncode == 0, describe(proc)
        out[(activation, "stock")] = torch.load(stock)
        proc = shim.run_py(program, mode="calibration", env={"IPEX_CONFIG": str(conf)},
                           args=(str(tmp / f"{activation}_calibration.pt"), activation))
        assert proc.returncode == 0 and conf.exists(), describe(proc)
        for mode in MODES:
            for tag, extra in [("fused", {}), ("unfused", {"IPEX_FUSION": "0"})]:
                if tag == "unfused" and mode != "int8":
                    continue  # the float modes' unfused paths are other tests' subject
                env = dict(extra, IPEX_CONFIG=str(conf)) if mode == "int8" else extra
                path = tmp / f"{activation}_{mode}_{tag}.pt"
                proc = shim.run_py(program, mode=mode, env=env, args=(str(path), activation))
                assert proc.returncode == 0, describe(proc)
                assert "kernel failed" not in proc.stderr, proc.stderr
                out[(activation, mode, tag)] = torch.load(path)
    return out


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("scenario", SCENARIOS)
def test_results_follow_the_program(runs, activation, mode, scenario):
    least_cosine, most_rel = TOLERANCE[mode]
    stock = runs[(activation, "stock")]["results"][scenario]
    got = runs[(activation, mode, "fused")]["results"][scenario]
    assert got.shape == stock.shape and got.dtype == torch.float32, (got.shape, got.dtype)
    assert cosine(got, stock) >= least_cosine, (scenario, cosine(got, stock))
    assert rel(got, stock) <= most_rel, (scenario, rel(got, stock))
    if scenario in ("bn_read", "act_read", "se_read"):  # the value read, not stale bytes
        assert abs(got[-1] - stock[-1]) <= most_rel * abs(stock[-1]), (got[-1], stock[-1])


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_int8_fused_is_as_close_to_stock_as_unfused(runs, activation):
    # The fused activation must not cost accuracy: INT8 with the fusion against INT8 without,
    # each against stock, on the plain scenario.
    stock = runs[(activation, "stock")]["results"]["plain"]
    fused = runs[(activation, "int8", "fused")]["results"]["plain"]
    unfused = runs[(activation, "int8", "unfused")]["results"]["plain"]
    assert cosine(fused, stock) >= cosine(unfused, stock) - 1e-3, (
        cosine(fused, stock), cosine(unfused, stock))


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_the_changed_scenario_differs_enough_to_catch_a_stale_value(runs, activation):
    stock = runs[(activation, "stock")]["results"]
    assert rel(stock["act_changed"], stock["plain"]) > 2 * TOLERANCE["int8"][1]
    assert rel(stock["se_changed"], stock["plain"]) > 2 * TOLERANCE["int8"][1]


def products_per_pass(mode):
    """Squeeze-excitation products computed on handed-over bytes in a pass: both blocks'.
    In INT8 only the first's: the second block's depthwise activation is out of place, and
    its result (new memory no INT8 op made, as in the stock calibration run) reaches a pool
    with no calibrated scale, so that chain keeps its result as values."""
    return 1 if mode == "int8" else 2


def deltas(counters, scenario):
    """What pass 3 of `scenario` added to the counters, and what the whole scenario added."""
    previous = None
    for name in SCENARIOS:
        if name == scenario:
            break
        previous = counters[name][1]
    after_two, after_three = counters[scenario]
    pass3 = {k: after_three[k] - after_two[k]
             for k in ("mispredictions", "repairs", "sites_off", "products_on_bytes",
                       "products_int8")}
    whole = {k: after_three[k] - (previous[k] if previous else 0)
             for k in ("mispredictions", "repairs", "sites_off", "sites")}
    fused = after_three["activations_fused"] - after_two["activations_fused"]
    return pass3, whole, fused


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_every_activation_is_fused_and_pass_three_runs_clean(runs, activation, mode, cpu_plan):
    skip_without_kernels(cpu_plan, mode)
    run = runs[(activation, mode, "fused")]
    counters = run["counters"]
    pass3, whole, fused = deltas(counters, "plain")
    # Every silu/hardswish module of the network (the stem, the fused block, both blocks'
    # expand and depthwise chains, the head; silu's squeeze-excitation too) computed by the
    # convolution before it.
    assert fused == run["activations_per_pass"], (fused, run["activations_per_pass"])
    # The squeeze-excitation blocks pool and multiply their depthwise chain's bytes as they
    # are: no pass mispredicts anything, and pass 3 computes the products on the bytes.
    assert whole["sites_off"] == 0 and whole["mispredictions"] == 0, whole
    # INT8: pass 2 learned which convolution reads the product, so pass 3 writes it as INT8
    # in that convolution's input scale.
    assert pass3 == {"mispredictions": 0, "repairs": 0, "sites_off": 0,
                     "products_on_bytes": products_per_pass(mode),
                     "products_int8": products_per_pass(mode) if mode == "int8" else 0}, pass3


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_changed_programs_are_detected_and_repaired(runs, activation, mode, cpu_plan):
    skip_without_kernels(cpu_plan, mode)
    counters = runs[(activation, mode, "fused")]["counters"]
    # The batch norm's result read, or multiplied (mul has a kernel of its own at the
    # observer's key, which must repair what it reads as the observer does): the stem's
    # prediction (its activation) failed; the site is switched off for good and the value
    # recomputed.
    for scenario in ("bn_read", "bn_scaled"):
        pass3, _, _ = deltas(counters, scenario)
        assert pass3["sites_off"] == 1 and pass3["repairs"] >= 1, (scenario, pass3)
    # The activation's result read or changed before the next convolution: the values are
    # right, only their handoff failed; repaired, and no site is switched off.
    for scenario in ("act_read", "act_changed"):
        pass3, _, _ = deltas(counters, scenario)
        assert pass3["mispredictions"] >= 1 and pass3["repairs"] >= 1, (scenario, pass3)
        assert pass3["sites_off"] == 0, (scenario, pass3)
    # The squeeze-excitation's product read or changed before the projection: computed on
    # the bytes, then repaired. A gate per element: the mul cannot take the bytes, so the
    # depthwise result is repaired first and stock multiplies. Either way the values are
    # right and no site is switched off.
    on_bytes = products_per_pass(mode)
    for scenario, expected in (("se_read", on_bytes), ("se_changed", on_bytes),
                               ("se_gate_wide", on_bytes - 1)):
        pass3, _, _ = deltas(counters, scenario)
        assert pass3["mispredictions"] == 1 and pass3["repairs"] == 1, (scenario, pass3)
        assert pass3["sites_off"] == 0, (scenario, pass3)
        assert pass3["products_on_bytes"] == expected, (scenario, pass3)


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_int8_ops_keep_their_calibrated_identities(runs, activation, cpu_plan):
    # Every op the INT8 run identified is one the calibration run (stock ops) wrote an entry
    # for, and no entry is missing: a fused out-of-place activation answers with its batch
    # norm's memory, where stock returns new memory that no INT8 op made, and a repaired
    # tensor gets new bytes; neither may change which op the ops reading them are known by
    # (a pooling or an add known by another anchor finds no entry, or another op's).
    skip_without_kernels(cpu_plan, "int8")
    for tag in ("fused", "unfused"):
        int8 = runs[(activation, "int8", tag)]["int8"]
        assert int8["identified_ops"] == int8["entries"] and int8["mismatched"] == 0, (tag, int8)
