"""Several threads in the shim at the same moment: inference and calibration.

What other tests already hold, and is not repeated here: one thread at a time in bf16 and
forked DataLoader workers (test_float_parallel.py), two threads of the residual network in
int8 mode on INT8 kernels (test_int8_threads.py, skipped where int8 mode runs fp32 kernels),
DataLoader workers that must not write a config and torchrun ranks merging one
(test_int8_calibration.py), DDP ranks agreeing under bf16 and against stock
(test_float_parallel.py).

Here (programs/concurrency.py, programs/concurrent_calibration.py):
  - four threads running one model at once, in fp32, bf16 and int8 mode (int8 with a config
    calibrated by the same program), for a CNN and the reduced encoder: every output of
    every thread equals the main thread's single-thread output bit for bit, every call ran on
    the shim's kernels, and the single-thread output is within the mode's tolerance of stock
    fp32 (fp32: relative L2 <= 1e-5; bf16: cosine >= 0.999; int8: cosine >= 0.99);
  - the two models in two threads at once, the same;
  - calibration from three threads fed by a DataLoader with two workers: the config equals a
    single-thread calibration over the same batches (keys, names, calls, ranges and scales;
    ranges within 1e-6 relative).
"""
import json
import math

import pytest
import torch

from conftest import cosine, describe, parse_report, rel_l2, shim_lines

MODES = ("fp32", "bf16", "int8")
# Heavy-op calls of one pass (residual.py's network; the 2-layer encoder).
PER_PASS = {"cnn": {"conv2d": 8, "linear": 1}, "encoder": {"linear": 12, "matmul": 4}}


@pytest.fixture(scope="module")
def runs(run_py, shim, tmp_path_factory):
    """concurrency.py without the shim, in fp32 and bf16 mode, and in int8 mode with a config
    that a calibration run of the same program wrote."""
    workdir = tmp_path_factory.mktemp("concurrency")
    program = shim.program("concurrency.py")
    conf = workdir / "conf.json"
    out = {}
    for tag, mode, preload, env in (("stock", None, False, {}), ("fp32", "fp32", True, {}),
                                    ("bf16", "bf16", True, {}),
                                    ("calibration", "calibration", True, {"IPEX_CONFIG": conf}),
                                    ("int8", "int8", True, {"IPEX_CONFIG": conf})):
        path = workdir / f"{tag}.pt"
        proc = run_py(program, mode=mode, preload=preload, env=env, args=(path,))
        assert proc.returncode == 0, describe(proc)
        if tag == "calibration":
            assert conf.exists(), describe(proc)
        out[tag] = {"facts": parse_report(proc.stdout), "saved": torch.load(path),
                    "shim_lines": shim_lines(proc.stderr)}
    return out


def within_mode_tolerance(mode, got, stock):
    if mode == "fp32":
        return rel_l2(got, stock) <= 1e-5, f"relative L2 {rel_l2(got, stock):.3g}"
    floor = 0.999 if mode == "bf16" else 0.99
    return cosine(got, stock) >= floor, f"cosine {cosine(got, stock):.6f}"


def check_scenario(run, scenario, mode):
    saved, facts = run["saved"], run["facts"][scenario]
    result = saved["scenarios"][scenario]
    assert result["errors"] == [], result["errors"]
    expected = facts["passes"]
    assert len(result["outputs"]) == sum(expected.values())
    for model, output in result["outputs"]:
        single = saved["single"][model]
        assert torch.equal(output, single), (
            f"{mode}, {scenario}: a thread's {model} output differs from the single-thread "
            f"one by up to {(output - single).abs().max().item():.3g}")
    # Every call of every thread ran on the shim's kernels and was counted once.
    calls = {}
    for model, passes in expected.items():
        if not passes:
            continue
        for op, per_pass in PER_PASS[model].items():
            calls[op] = calls.get(op, 0) + passes * per_pass
    for op, want in calls.items():
        counts = facts["ops"][op]
        kernels = sum(n for path, n in counts.items() if path.startswith("onednn_"))
        assert kernels == want and counts.get("stock", 0) == 0, (mode, scenario, op, counts)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("scenario", ["cnn_x4", "encoder_x4"])
def test_four_threads_on_one_model_compute_what_one_thread_computes(runs, mode, scenario):
    check_scenario(runs[mode], scenario, mode)


@pytest.mark.parametrize("mode", MODES)
def test_two_models_in_two_threads_at_once(runs, mode):
    check_scenario(runs[mode], "mixed", mode)


@pytest.mark.parametrize("mode", MODES)
def test_single_thread_output_within_the_modes_tolerance_of_stock(runs, mode):
    stock = runs["stock"]["saved"]["single"]
    assert runs["stock"]["facts"]["cnn_x4"]["ops"] is None  # stock really was stock
    for model, got in runs[mode]["saved"]["single"].items():
        ok, figure = within_mode_tolerance(mode, got, stock[model])
        print(f"{mode} {model} against stock fp32: {figure}")
        assert ok, f"{mode} {model}: {figure}"


def test_int8_threads_found_the_calibrated_config(runs):
    """The int8 run matched every op to the config calibration wrote with the same threads:
    the shim says nothing (an op without an entry, or a config that does not fit, is
    reported)."""
    assert runs["int8"]["shim_lines"] == []


# --- calibration from threads and a DataLoader ---------------------------------------------

@pytest.fixture(scope="module")
def calibrations(run_py, shim, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("concurrent_calibration")
    program = shim.program("concurrent_calibration.py")
    out = {}
    for how in ("single", "concurrent"):
        conf = workdir / f"{how}.json"
        # min_max: extremes do not depend on the order threads observe batches in; mse's
        # pooled sample (the default) does, within its sampling noise
        proc = run_py(program, mode="calibration",
                      env={"IPEX_CONFIG": conf, "IPEX_INT8_ALGORITHM": "min_max"}, args=(how,))
        assert proc.returncode == 0, describe(proc)
        assert shim_lines(proc.stderr) == [
            f"ipex_shim: calibration: wrote 49 entries to {conf}"], describe(proc)
        out[how] = {"facts": parse_report(proc.stdout), "entries": json.loads(conf.read_text())}
    return out


def test_concurrent_calibration_ran_in_threads_fed_by_workers(calibrations):
    facts = calibrations["concurrent"]["facts"]
    assert facts["errors"] == []
    assert len(facts["made_by"]) == 2 and facts["pid"] not in facts["made_by"], facts
    assert len(set(facts["ran_by"].values())) >= 2, facts["ran_by"]  # the threads shared it
    assert sorted(map(int, facts["ran_by"])) == list(range(12))


def test_concurrent_calibration_writes_the_single_thread_config(calibrations):
    """Keys, names, call counts, u8 choices and ranges equal the single-thread run's (ranges
    and scales within 1e-6 relative: min and max do not depend on the order of batches).
    sqnr_db is estimated from an op's first input, which is whichever batch a thread ran
    first: checked to be finite and to agree with `quantized` (IPEX_INT8_MIN_SQNR, 15 dB)."""
    single = {e["key"]: e for e in calibrations["single"]["entries"]}
    concurrent = {e["key"]: e for e in calibrations["concurrent"]["entries"]}
    assert sorted(concurrent) == sorted(single)
    for key, want in single.items():
        got = concurrent[key]
        assert set(got) == set(want), key
        for field in want:
            if field in ("id", "sqnr_db", "quantized"):
                continue
            if field.endswith(("_min", "_max", "_scale")):
                assert got[field] == pytest.approx(want[field], rel=1e-6), (key, field)
            else:
                assert got[field] == want[field], (key, field, got[field], want[field])
        if "sqnr_db" in got:
            assert math.isfinite(got["sqnr_db"]), (key, got)
            assert got["quantized"] == (got["sqnr_db"] >= 15.0), (key, got)
    assert sorted(e["id"] for e in concurrent.values()) == list(range(len(single)))
