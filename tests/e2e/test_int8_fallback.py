"""int8 mode's precision for the ops its config leaves out of INT8 (`quantized: false`,
IPEX_INT8_FALLBACK; shim/mode_policy.h inference_precision): BF16 where bf16 mode runs BF16
on this CPU, fp32 otherwise or when asked. Such ops then sit between INT8 ones, so results
cross from INT8 to BF16 and back through every consumer that takes handed-over bytes
(convolutions, joins, pools, residual adds, squeeze-excitation gates, attention's products):
each program runs with every other convolution or product left out, and with all of them
left out, and must give stock's result to the accuracy of the precisions it mixes.
"""
import json

import pytest

from conftest import assert_like_stock, describe, parse_report

# name: (program, arguments after OUT.pt for inference, for calibration)
PROGRAMS = {
    "inception": ("inception_blocks.py", (), ()),
    "residual": ("residual.py", (), ()),
    "activations": ("activations.py", ("silu",), ("silu",)),
    "attention": ("attention.py", ("infer",), ("calibrate",)),
}
# The entries a program's "left out" configs set to quantized: false.
WEIGHTED = ("Convolution", "Linear", "Matmul")
# Least cosine to stock and largest max-abs error relative to stock's largest value: INT8's
# (as the programs' own tests allow), and BF16's where nothing runs in INT8.
TOLERANCE = {"mixed": (0.99, 0.1), "none": (0.9995, 0.03)}
# Cases a program runs on stock's kernels whatever the mode (attention.py's doc).
STOCK_CASES = {"mha_cross", "mha_grad", "empty"}
NOT_QUANTIZED = "quantized: false in the INT8 config"

# Runs the program as its own __main__ (its folder first on sys.path, as `python program.py`
# would have it, so its shared helpers import), then reports the shim's op counters.
DRIVER = """
import json, os, runpy, sys
import torch
sys.argv = sys.argv[1:]
sys.path.insert(0, os.path.dirname(os.path.abspath(sys.argv[0])))
runpy.run_path(sys.argv[0], run_name="__main__")
status = json.loads(torch.ops.ipex_shim.status())
print("E2E-REPORT:" + json.dumps({"ops": status["ops"], "plan": status["on_this_cpu"]}))
"""


def results_of(saved):
    """{case: tensor}: the programs save {"results": {...}} or the cases themselves."""
    return saved["results"] if "results" in saved else saved


def left_out(entries, every_other):
    """A copy of the config with the weighted ops' entries (every other one, or all of them)
    set to quantized: false; returns it and how many were."""
    entries = [dict(e) for e in entries]
    weighted = [e for e in entries if e["name"] in WEIGHTED and e["quantized"]]
    chosen = weighted[1::2] if every_other else weighted
    for entry in chosen:
        entry["quantized"] = False
    return entries, len(chosen)


@pytest.fixture(scope="module", params=list(PROGRAMS))
def program(request, tmp_path_factory, shim, run_py):
    """Stock's results, the calibrated config and the runs with ops left out:
    {"stock": {...}, (config, fallback): {"results", "ops", "plan", "left_out"}}."""
    import torch
    name = request.param
    path, infer_args, calibrate_args = PROGRAMS[name]
    path = shim.program(path)
    tmp = tmp_path_factory.mktemp(f"fallback_{name}")
    proc = run_py(path, preload=False, args=(tmp / "stock.pt", *infer_args))
    assert proc.returncode == 0, describe(proc)
    out = {"stock": results_of(torch.load(tmp / "stock.pt"))}
    conf = tmp / "conf.json"
    # min_max: TOLERANCE's bound on the largest error holds for ranges that keep every value;
    # mse, the default, clips the largest (a better cosine, a larger error at those values)
    proc = run_py(path, mode="calibration",
                  env={"IPEX_CONFIG": str(conf), "IPEX_INT8_ALGORITHM": "min_max"},
                  args=(tmp / "calibration.pt", *calibrate_args))
    assert proc.returncode == 0 and conf.exists(), describe(proc)
    entries = json.loads(conf.read_text())
    for config in ("mixed", "none"):
        edited, count = left_out(entries, every_other=config == "mixed")
        assert count > 0, (name, config)
        edited_path = tmp / f"{config}.json"
        edited_path.write_text(json.dumps(edited))
        for fallback in ("bf16", "fp32"):
            saved = tmp / f"{config}_{fallback}.pt"
            proc = run_py(DRIVER, mode="int8",
                          env={"IPEX_CONFIG": str(edited_path), "IPEX_INT8_FALLBACK": fallback},
                          args=(path, saved, *infer_args))
            assert proc.returncode == 0, describe(proc)
            assert "kernel failed" not in proc.stderr, describe(proc)
            report = parse_report(proc.stdout)
            out[(config, fallback)] = {"results": results_of(torch.load(saved)),
                                       "ops": report["ops"], "plan": report["plan"],
                                       "left_out": count}
    return name, out


@pytest.mark.parametrize("fallback", ["bf16", "fp32"])
@pytest.mark.parametrize("config", ["mixed", "none"])
def test_results_are_stocks_to_the_mixed_precisions(program, config, fallback):
    name, out = program
    least_cosine, most_rel = TOLERANCE[config]
    stock = out["stock"]
    got = out[(config, fallback)]["results"]
    assert set(got) == set(stock)
    for case, reference in stock.items():
        assert got[case].shape == reference.shape, (name, case)
        if reference.numel() == 0:  # attention.py's batch of 0 sequences
            continue
        assert_like_stock(got[case], reference, least_cosine, most_rel, (name, config, case))


def left_out_calls(ops, path):
    """Calls counted on `path` with the not-quantised reason, over the weighted ops."""
    total = 0
    for op in ("conv2d", "linear", "matmul"):
        entry = ops.get(op, {})
        reasons = entry.get("fallback_reasons", {})
        total += min(entry.get(path, 0), reasons.get(NOT_QUANTIZED, 0))
    return total


@pytest.mark.parametrize("config", ["mixed", "none"])
def test_left_out_ops_run_in_the_fallback_precision(program, config):
    name, out = program
    bf16_run, fp32_run = out[(config, "bf16")], out[(config, "fp32")]
    plan = bf16_run["plan"]
    native = plan["bf16"].startswith("BF16 kernels (native")
    # Where bf16 mode runs BF16, so do the left-out ops (the default); elsewhere, and with
    # IPEX_INT8_FALLBACK=fp32, they run in fp32. status() says which.
    assert plan["int8_fallback"].startswith(
        "ops the config leaves out of INT8 (quantized: false) run in " +
        ("BF16 (IPEX_INT8_FALLBACK=bf16)" if native else "fp32, as bf16 mode runs")), plan
    assert fp32_run["plan"]["int8_fallback"].endswith("fp32 (IPEX_INT8_FALLBACK=fp32)")
    expected = "onednn_bf16" if native else "onednn_fp32"
    for run, path in ((bf16_run, expected), (fp32_run, "onednn_fp32")):
        other = "onednn_fp32" if path == "onednn_bf16" else "onednn_bf16"
        assert left_out_calls(run["ops"], path) > 0, (name, path, run["ops"])
        assert left_out_calls(run["ops"], other) == 0, (name, path, run["ops"])
        # Every call with the reason ran on that path: none went to stock or the other one.
        for op in ("conv2d", "linear", "matmul"):
            entry = run["ops"].get(op, {})
            reasons = entry.get("fallback_reasons", {})
            assert reasons.get(NOT_QUANTIZED, 0) <= entry.get(path, 0), (name, op, entry)
    # Leaving out every other op keeps the rest in INT8.
    if config == "mixed":
        assert any(bf16_run["ops"].get(op, {}).get("onednn_int8", 0) > 0
                   for op in ("conv2d", "linear", "matmul")), bf16_run["ops"]


def test_bf16_fallback_differs_from_fp32_where_it_runs(program, native_bf16):
    """The two fallbacks are different arithmetic: equal results would mean the setting was
    not followed (on a CPU with native BF16)."""
    import torch
    name, out = program
    bf16, fp32 = out[("none", "bf16")]["results"], out[("none", "fp32")]["results"]
    differ = [case for case in bf16 if case not in STOCK_CASES
              and not torch.equal(bf16[case], fp32[case])]
    assert differ, (name, "BF16 and fp32 fallbacks gave identical results")
