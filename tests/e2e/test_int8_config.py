"""IPEX_CONFIG in int8 mode: what calibration writes, and how inference applies, matches,
refuses and validates it.

Every program is programs/int8cfg_model.py: a small seeded model (int8cfg_common.py; model
"a" is conv -> bn -> relu -> maxpool -> conv -> relu -> adaptive pool -> linear on 3x16x16
images) run under no_grad. Calibration runs it under IPEX_MODE=calibration; inference runs the
same program under IPEX_MODE=int8 with the config; results are compared with the same program
run without the shim (stock PyTorch).
"""
import json
import re

import pytest
import torch

from conftest import cosine, describe, parse_report, shim_lines


MARKER = "INT8CFG-PROGRAM-STARTS"
SEED_FIELDS = [  # in the seed's order, with their types
    ("id", int), ("name", str), ("algorithm", str), ("weight_granularity", str),
    ("inputs_scale", list), ("outputs_scale", list), ("inputs_uint8_used", list),
    ("outputs_uint8_used", list), ("quantized", bool),
]
OP_NAMES = {"Convolution", "Linear", "Matmul", "BatchNorm", "Relu", "MaxPooling", "AvgPooling",
            "AdaptivePooling", "Add"}
# Model "a": its conv, bn, relu, maxpool, conv, relu, adaptive pool and linear.
MODEL_A_NAMES = sorted(["Convolution", "BatchNorm", "Relu", "MaxPooling", "Convolution", "Relu",
                        "AdaptivePooling", "Linear"])
MODEL_A_WEIGHTED = 3  # two convs and a linear: the ops that look up their entry
# From the second pass on (fusion), the max pool after the first conv and the adaptive pool
# after the second also use their entries: each conv writes its INT8 result in the pool's
# input scale and the pool reads it as it is.
MODEL_A_FUSED_LOOKUPS = MODEL_A_WEIGHTED + 2
NO_ENTRY = re.compile(
    r"^ipex_shim: warning: IPEX_CONFIG=(?P<path>\S+): no entry for op (?P<op>\d+), "
    r"(?P<kind>Convolution|Linear) (?P<key>\S+) \(calibrated on another model, other weights, "
    r"or an op calibration never saw\); this op runs in fp32$")
SEED_README_CONFIG = (
    '[{"id":0,"name":"Convolution","algorithm":"min_max","weight_granularity":"per_channel",'
    '"inputs_scale":[25.05583953857422],"outputs_scale":[43.98969650268555],'
    '"inputs_uint8_used":[false],"outputs_uint8_used":[false],"quantized":true},'
    '{"id":1,"name":"Relu","algorithm":"min_max","weight_granularity":"per_channel",'
    '"inputs_scale":[43.98969650268555],"outputs_scale":[43.98969650268555],'
    '"inputs_uint8_used":[false],"outputs_uint8_used":[false],"quantized":true}]')
# conv -> relu on inputs of magnitude up to 5, the range the README config's input scale
# (25.06 = 127 / 5.07) was calibrated for.
SEED_PROGRAM_ARGS = ("--arch", "conv_relu", "--clamp", "2.5", "--scale", "2.0")


class Run:
    """One run of int8cfg_model.py: the process, its report and its saved output."""

    def __init__(self, proc, out_path):
        self.proc = proc
        self.report = parse_report(proc.stdout)
        self.status = self.report["status"]
        self.out = torch.load(out_path)["out"]
        self.lines = shim_lines(proc.stderr)

    @property
    def int8(self):
        return self.status["int8"]

    def op(self, name):
        return self.status["ops"].get(name, {})


def run_model(run_py, shim, workdir, tag, mode=None, config=None, args=(), env=None,
              preload=True):
    """Runs int8cfg_model.py (must exit 0) and returns its Run."""
    out = workdir / f"{tag}.pt"
    extra = dict(env or {})
    if config is not None:
        extra["IPEX_CONFIG"] = str(config)
    proc = run_py(shim.program("int8cfg_model.py"), mode=mode, env=extra, preload=preload,
                  args=(out, *args))
    assert proc.returncode == 0, describe(proc)
    return Run(proc, out)


def calibrate(run_py, shim, workdir, tag, args=()):
    """Calibrates into <workdir>/<tag>.json; returns (path, parsed list, Run)."""
    config = workdir / f"{tag}.json"
    run = run_model(run_py, shim, workdir, tag, mode="calibration", config=config, args=args)
    wrote = [l for l in run.lines if "calibration: wrote" in l]
    assert len(wrote) == 1 and f"to {config}" in wrote[0], describe(run.proc)
    return config, json.loads(config.read_text()), run


def close_to_fp32(got, want, tolerance=1e-5):
    """Within `tolerance` of the stock result, relative to its largest magnitude."""
    error = (got - want).abs().max().item()
    return error <= tolerance * max(1.0, want.abs().max().item()), error


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("int8_config")


@pytest.fixture(scope="module")
def stock(run_py, shim, workdir):
    """stock(*args) -> the output of int8cfg_model.py run without the shim (memoised)."""
    cache = {}

    def get(*args):
        if args not in cache:
            tag = "stock_" + "_".join(str(a).strip("-") for a in args)
            run = run_model(run_py, shim, workdir, tag, preload=False, args=args)
            assert run.status is None and run.lines == []
            cache[args] = run.out
        return cache[args]

    return get


@pytest.fixture(scope="module")
def config_a(run_py, shim, workdir, stock):
    """Model "a" calibrated on a batch of 4 (one pass); its results equal stock's."""
    path, entries, run = calibrate(run_py, shim, workdir, "model_a")
    assert torch.equal(run.out, stock()), "calibration must give stock results"
    return path, entries


@pytest.fixture(scope="module")
def int8_a(run_py, shim, workdir, config_a):
    """Model "a" in int8 mode with its own config (batch 4, 2 passes)."""
    return run_model(run_py, shim, workdir, "int8_a", mode="int8", config=config_a[0],
                     args=("--passes", "2"))


def edited(workdir, config_a, tag, edit):
    """A copy of config_a's list passed through edit(entries) and written to a new file."""
    entries = json.loads(json.dumps(config_a[1]))
    edit(entries)
    path = workdir / f"{tag}.json"
    path.write_text(json.dumps(entries, indent=4))
    return path


def first(entries, name, nth=0):
    return [e for e in entries if e["name"] == name][nth]


# --- 1. what calibration writes, and its round trip ------------------------------------------

def test_written_config_has_seed_fields_then_shim_fields(config_a):
    path, entries = config_a
    assert isinstance(entries, list)
    assert sorted(e["name"] for e in entries) == MODEL_A_NAMES
    assert [e["id"] for e in entries] == list(range(len(entries)))
    for entry in entries:
        where = f"{path}: {entry}"
        # The seed's fields come first, in the seed's order, with the seed's types.
        assert list(entry)[:len(SEED_FIELDS)] == [f for f, _ in SEED_FIELDS], where
        for field, kind in SEED_FIELDS:
            assert type(entry[field]) is kind, (field, where)
        assert entry["name"] in OP_NAMES, where
        assert entry["algorithm"] == "mse", where  # the default (the seed knew min_max only)
        assert entry["weight_granularity"] in ("per_channel", "per_tensor"), where
        if entry["name"] in ("Convolution", "Linear"):
            assert entry["weight_granularity"] == "per_channel", where
        for side in ("inputs", "outputs"):
            scales, flags = entry[f"{side}_scale"], entry[f"{side}_uint8_used"]
            assert scales and all(type(s) is float and s > 0 for s in scales), where
            assert len(flags) == len(scales) and all(type(f) is bool for f in flags), where
            low, high = entry[f"{side}_min"], entry[f"{side}_max"]
            assert len(low) == len(high) == len(scales), where
            assert all(type(v) is float and v <= w for v, w in zip(low, high)), where
        assert entry["quantized"] is True, where
        # The shim's fields.
        assert type(entry["key"]) is str and entry["key"], where
        assert entry["calls"] == 1, where
        if entry["name"] in ("Convolution", "Linear"):
            assert entry["key"].startswith(entry["name"] + "(w="), where
            assert type(entry["sqnr_db"]) is float and entry["sqnr_db"] > 20, where
        else:
            assert entry["key"].startswith(entry["name"] + "@"), where
    assert len({e["key"] for e in entries}) == len(entries)


def test_config_reserialised_by_python_gives_identical_results(run_py, shim, workdir, config_a,
                                                               int8_a):
    path, entries = config_a
    copies = {
        "indent4": json.dumps(entries, indent=4),
        "compact_sorted": json.dumps(entries, separators=(",", ":"), sort_keys=True),
    }
    assert int8_a.lines == [], describe(int8_a.proc)
    assert int8_a.status["config_state"] == "applied"
    assert int8_a.int8["matched"] == MODEL_A_FUSED_LOOKUPS and int8_a.int8["mismatched"] == 0
    assert int8_a.op("conv2d") == {"onednn_int8": 4}, int8_a.status
    assert int8_a.op("linear") == {"onednn_int8": 2}, int8_a.status
    for tag, text in copies.items():
        copy = workdir / f"copy_{tag}.json"
        copy.write_text(text)
        run = run_model(run_py, shim, workdir, f"copy_{tag}", mode="int8", config=copy,
                        args=("--passes", "2"))
        assert run.lines == [], describe(run.proc)
        assert run.status["config_state"] == "applied", tag
        assert run.int8 == int8_a.int8, (tag, run.int8, int8_a.int8)
        assert run.status["ops"] == int8_a.status["ops"], tag
        assert torch.equal(run.out, int8_a.out), f"{tag}: outputs differ from the original's"


# --- 2. batch size ---------------------------------------------------------------------------

@pytest.mark.parametrize("batch", [1, 7])
def test_config_from_batch_4_serves_other_batch_sizes(run_py, shim, workdir, config_a, stock,
                                                      batch):
    args = ("--batch", str(batch))
    run = run_model(run_py, shim, workdir, f"batch{batch}", mode="int8", config=config_a[0],
                    args=args)
    assert run.lines == [], describe(run.proc)  # no mismatch warning, nothing else either
    assert run.int8["mismatched"] == 0 and run.int8["matched"] == MODEL_A_WEIGHTED, run.int8
    assert run.op("conv2d") == {"onednn_int8": 2}, run.status
    assert run.op("linear") == {"onednn_int8": 1}, run.status
    want = stock(*args)
    assert run.out.shape == want.shape == (batch, 10)
    assert cosine(run.out, want) >= 0.99, cosine(run.out, want)
    assert not torch.equal(run.out, want), "int8 results equal to fp32: nothing was quantised?"


# --- 3. calibration passes and unrelated work -----------------------------------------------

def test_passes_and_unrelated_work_change_no_model_entry(run_py, shim, workdir, config_a,
                                                         int8_a):
    clean = {e["key"]: e for e in config_a[1]}
    noisy_path, noisy_entries, run = calibrate(run_py, shim, workdir, "noisy",
                                               args=("--passes", "3", "--noise"))
    noisy = {e["key"]: e for e in noisy_entries}
    assert len(noisy) == len(noisy_entries)
    missing = set(clean) - set(noisy)
    assert not missing, f"model entries lost to passes/unrelated work: {sorted(missing)}"
    extra = {k: noisy[k]["name"] for k in set(noisy) - set(clean)}
    # Only the unrelated conv (5x3x3x3), its relu and the unrelated linear (9x7) may add
    # entries; the matmuls of random tensors come from no known op and have none.
    unrelated = ("Convolution(w=5x3x3x3,", "Linear(w=9x7,")
    for key, name in extra.items():
        assert name in ("Convolution", "Relu", "Linear"), (key, name)
        assert any(u in key for u in unrelated), f"extra entry not from unrelated work: {key}"
    assert extra, "the unrelated convs/linears should have entries of their own"
    # The same input each pass: every model entry has the same ranges, 3 times the calls.
    for key, want in clean.items():
        got = noisy[key]
        for field in ("name", "inputs_scale", "outputs_scale", "inputs_min", "inputs_max",
                      "outputs_min", "outputs_max", "inputs_uint8_used",
                      "outputs_uint8_used", "quantized", "weight_granularity"):
            assert got[field] == want[field], (key, field, got[field], want[field])
        assert got["calls"] == 3 * want["calls"], (key, got["calls"])
    # The noisy script's config serves the clean inference script exactly as the clean one.
    served = run_model(run_py, shim, workdir, "noisy_served", mode="int8", config=noisy_path,
                       args=("--passes", "2"))
    assert served.lines == [], describe(served.proc)
    assert served.int8["mismatched"] == 0, served.int8
    assert served.int8["matched"] == MODEL_A_FUSED_LOOKUPS, served.int8
    assert served.int8["entries"] == len(noisy_entries)
    assert served.op("conv2d") == {"onednn_int8": 4}, served.status
    assert torch.equal(served.out, int8_a.out)


# --- 4. another model's config ---------------------------------------------------------------

@pytest.mark.parametrize("other", ["other_architecture", "other_weights"])
def test_config_of_another_model_is_refused_op_by_op(run_py, shim, workdir, config_a, stock,
                                                     other):
    args = ("--arch", "b") if other == "other_architecture" else ("--seed", "1")
    path = config_a[0]
    run = run_model(run_py, shim, workdir, f"refused_{other}", mode="int8", config=path,
                    args=args)
    warnings = [NO_ENTRY.match(l) for l in run.lines]
    assert all(warnings), describe(run.proc)
    assert len(warnings) == 3, describe(run.proc)  # one per conv/linear, once each
    known = {e["key"] for e in config_a[1]}
    signatures = run.report["signatures"]
    for match, signature in zip(warnings, signatures):
        assert match["path"] == str(path)
        assert match["key"].startswith(signature + "#"), (match["key"], signature)
        assert match["kind"] == signature.split("(")[0]
        assert match["key"] not in known
    assert run.int8["mismatched"] == 3 and run.int8["matched"] == 0, run.int8
    assert run.op("conv2d") == {"onednn_fp32": 2,
                                "fallback_reasons": {"config does not match": 2}}, run.status
    assert run.op("linear") == {"onednn_fp32": 1,
                                "fallback_reasons": {"config does not match": 1}}, run.status
    fp32 = run_model(run_py, shim, workdir, f"refused_{other}_fp32", mode="fp32", args=args)
    ok, error = close_to_fp32(run.out, stock(*args))
    assert ok, f"max error vs stock fp32: {error}"
    ok, error = close_to_fp32(run.out, fp32.out)
    assert ok, f"max error vs IPEX_MODE=fp32: {error}"


# --- 5. the seed's README example ------------------------------------------------------------

def test_seed_readme_config_loads_unchanged(run_py, shim, workdir, stock):
    path = workdir / "seed_readme.json"
    path.write_text(SEED_README_CONFIG)
    run = run_model(run_py, shim, workdir, "seed_readme", mode="int8", config=path,
                    args=SEED_PROGRAM_ARGS)
    assert run.lines == [], describe(run.proc)
    assert run.status["config_state"] == "applied"
    assert run.int8["entries"] == 2 and run.int8["matched"] == 1, run.int8
    assert run.int8["mismatched"] == 0, run.int8
    assert run.op("conv2d") == {"onednn_int8": 1}, run.status
    want = stock(*SEED_PROGRAM_ARGS)
    assert want.abs().max() > 0
    assert cosine(run.out, want) >= 0.99, cosine(run.out, want)


def test_seed_entry_of_another_kind_is_a_mismatch(run_py, shim, workdir, stock):
    path = workdir / "seed_linear.json"
    path.write_text(SEED_README_CONFIG.replace('"name":"Convolution"', '"name":"Linear"'))
    run = run_model(run_py, shim, workdir, "seed_linear", mode="int8", config=path,
                    args=SEED_PROGRAM_ARGS)
    assert len(run.lines) == 1, describe(run.proc)
    line = run.lines[0]
    assert line.startswith(f"ipex_shim: warning: IPEX_CONFIG={path}: "), line
    assert ('entry 0 (id 0, "Linear") is a Linear but the program\'s op 0 is Convolution '
            "Convolution(w=8x3x3x3,") in line, line
    assert line.endswith("; this op runs in fp32"), line
    assert run.int8["mismatched"] == 1 and run.int8["matched"] == 0, run.int8
    assert run.op("conv2d") == {"onednn_fp32": 1,
                                "fallback_reasons": {"config does not match": 1}}, run.status
    ok, error = close_to_fp32(run.out, stock(*SEED_PROGRAM_ARGS))
    assert ok, error


# --- 6. validation ---------------------------------------------------------------------------

def _set_first_conv(field, value, index=None):
    def edit(entries):
        entry = first(entries, "Convolution")
        if index is None:
            entry[field] = value
        else:
            entry[field][index] = value
    return edit


ENTRY_PROBLEMS = {
    # case: (edit of the first conv entry, the field as the message names it, the problem)
    "zero_scale": (_set_first_conv("inputs_scale", 0, 0), '"inputs_scale"[0]',
                   "0 is not a valid scale (must be finite and > 0)"),
    "negative_scale": (_set_first_conv("outputs_scale", -2.5, 0), '"outputs_scale"[0]',
                       "-2.5 is not a valid scale (must be finite and > 0)"),
    "string_scale": (_set_first_conv("inputs_scale", "25.0", 0), '"inputs_scale"[0]',
                     'expected a scale (a number), got "25.0"'),
    "quantized_not_bool": (_set_first_conv("quantized", "yes"), '"quantized"',
                           'expected true or false, got "yes"'),
}
FILE_PROBLEMS = {
    # case: (file text, what the message says)
    "not_a_list": ('{"id": 0, "name": "Convolution"}', "top level: this is an object"),
    "a_string": ('"Convolution"', 'top level: expected a JSON list of ops, got "Convolution"'),
    "malformed_json": ('[{"id": 0, "name": "Convolution",', "parse error"),
}


@pytest.fixture(scope="module")
def first_conv_fp32(run_py, shim, workdir, config_a):
    """Model "a" with its first conv's entry set to quantized: false and such ops kept in fp32
    (IPEX_INT8_FALLBACK=fp32; everything else as configured): what a bad entry must give."""
    path = edited(workdir, config_a, "first_conv_fp32",
                  _set_first_conv("quantized", False))
    run = run_model(run_py, shim, workdir, "first_conv_fp32", mode="int8", config=path,
                    env={"IPEX_INT8_FALLBACK": "fp32"})
    assert run.lines == [], describe(run.proc)
    assert run.int8["not_quantized"] == 1
    return run


@pytest.mark.parametrize("case", list(ENTRY_PROBLEMS))
def test_invalid_entry_is_reported_and_its_op_runs_fp32(run_py, shim, workdir, config_a,
                                                        first_conv_fp32, case):
    edit, field, problem = ENTRY_PROBLEMS[case]
    path = edited(workdir, config_a, case, edit)
    position = config_a[1].index(first(config_a[1], "Convolution"))
    header = f'entry {position} (id {position}, "Convolution")'
    run = run_model(run_py, shim, workdir, case, mode="int8", config=path)
    assert len(run.lines) == 2, describe(run.proc)
    assert run.lines[0] == (f"ipex_shim: warning: IPEX_CONFIG={path}: {header}: field {field}: "
                            f"{problem}; this op runs in fp32"), run.lines[0]
    assert run.lines[1] == (f"ipex_shim: warning: IPEX_CONFIG={path}: {header} failed "
                            "validation (reported at start); this op runs in fp32"), run.lines[1]
    assert run.status["config_state"] == "applied in part (1 problems reported)"
    assert run.int8["mismatched"] == 1 and run.int8["matched"] == MODEL_A_WEIGHTED - 1
    assert run.op("conv2d") == {"onednn_int8": 1, "onednn_fp32": 1,
                                "fallback_reasons": {"config does not match": 1}}, run.status
    assert run.op("linear") == {"onednn_int8": 1}, run.status
    # The bad entry's op runs in fp32 and nothing else changes.
    assert torch.equal(run.out, first_conv_fp32.out)

    strict = run_py(shim.program("int8cfg_model.py"), mode="int8",
                    env={"IPEX_CONFIG": str(path), "IPEX_STRICT": "1"},
                    args=(workdir / f"{case}_strict.pt",))
    assert strict.returncode == 2, describe(strict)
    assert MARKER not in strict.stdout, describe(strict)
    assert shim_lines(strict.stderr) == [
        f"ipex_shim: error: IPEX_CONFIG={path}: {header}: field {field}: {problem}; "
        "this op runs in fp32",
        "ipex_shim: error: IPEX_STRICT=1: stopping (exit code 2)",
    ], describe(strict)


@pytest.mark.parametrize("case", list(FILE_PROBLEMS))
def test_unusable_file_is_reported_and_every_op_runs_fp32(run_py, shim, workdir, stock, case):
    text, problem = FILE_PROBLEMS[case]
    path = workdir / f"{case}.json"
    path.write_text(text)
    run = run_model(run_py, shim, workdir, case, mode="int8", config=path)
    assert len(run.lines) == 1, describe(run.proc)
    line = run.lines[0]
    assert line.startswith(f"ipex_shim: warning: IPEX_CONFIG={path}: "), line
    assert problem in line, line
    assert run.status["config_state"].startswith("not used: "), run.status["config_state"]
    assert run.int8["entries"] == 0 and run.int8["matched"] == 0, run.int8
    for op in ("conv2d", "linear"):
        assert "onednn_int8" not in run.op(op), run.status
    ok, error = close_to_fp32(run.out, stock())
    assert ok, f"max error vs stock fp32: {error}"

    strict = run_py(shim.program("int8cfg_model.py"), mode="int8",
                    env={"IPEX_CONFIG": str(path), "IPEX_STRICT": "1"},
                    args=(workdir / f"{case}_strict.pt",))
    assert strict.returncode == 2, describe(strict)
    assert MARKER not in strict.stdout, describe(strict)
    lines = shim_lines(strict.stderr)
    assert lines[-1] == "ipex_shim: error: IPEX_STRICT=1: stopping (exit code 2)", lines
    assert any(l.startswith(f"ipex_shim: error: IPEX_CONFIG={path}: ") and problem in l
               for l in lines), lines


# --- 7. editing the config takes effect ------------------------------------------------------

@pytest.mark.parametrize("fallback", ["fp32", "bf16"])
def test_quantized_false_takes_exactly_that_op_out_of_int8(run_py, shim, workdir, config_a,
                                                           int8_a, cpu_plan, fallback):
    path = edited(workdir, config_a, "conv2_left_out",
                  lambda entries: first(entries, "Convolution", 1).update(quantized=False))
    run = run_model(run_py, shim, workdir, f"conv2_{fallback}", mode="int8", config=path,
                    args=("--passes", "2"), env={"IPEX_INT8_FALLBACK": fallback})
    assert run.lines == [], describe(run.proc)
    assert run.int8["not_quantized"] == 1, run.int8
    # The left-out conv hands its result to the adaptive pool in its own precision, so that
    # pool's entry is not looked up; every other lookup is as before.
    assert run.int8["matched"] == MODEL_A_FUSED_LOOKUPS - 1, run.int8
    assert run.int8["mismatched"] == 0, run.int8
    conv_calls = first(config_a[1], "Convolution", 1)["calls"] * 2  # 2 passes
    # IPEX_INT8_FALLBACK=bf16 runs it in BF16 where bf16 mode does (native BF16).
    path_taken = "onednn_bf16" if fallback == "bf16" and cpu_plan["native_bf16"] else "onednn_fp32"
    assert run.op("conv2d") == {
        "onednn_int8": int8_a.op("conv2d")["onednn_int8"] - conv_calls,
        path_taken: conv_calls,
        "fallback_reasons": {"quantized: false in the INT8 config": conv_calls},
    }, run.status
    assert run.op("linear") == int8_a.op("linear")
    assert not torch.equal(run.out, int8_a.out)


@pytest.mark.parametrize("change", ["double_input_scale", "per_tensor_weights"])
def test_edited_scale_or_granularity_changes_the_result(run_py, shim, workdir, config_a, int8_a,
                                                        change):
    def edit(entries):
        entry = first(entries, "Convolution")
        if change == "double_input_scale":
            entry["inputs_scale"][0] *= 2
        else:
            entry["weight_granularity"] = "per_tensor"

    path = edited(workdir, config_a, change, edit)
    run = run_model(run_py, shim, workdir, change, mode="int8", config=path,
                    args=("--passes", "2"))
    assert run.lines == [], describe(run.proc)
    assert run.int8 == int8_a.int8
    assert run.status["ops"] == int8_a.status["ops"]
    assert not torch.equal(run.out, int8_a.out), f"{change}: result unchanged"
