"""The Python packages: the seed's API (intel_pytorch_extension), IPEX 2.x's entry points
(intel_extension_for_pytorch) and ipex_shim's own mode functions, activated by import
without the preload and attached to the preload when it runs.

Each result is compared with stock fp32 on the same inputs in the same process (a scope of
mode "off" runs stock PyTorch): cosine at least 0.999 in bf16, at least 0.98 in int8, and
0.99999 in fp32. Which kernels ran is read from status(); on a CPU without native BF16 or
without VNNI the modes run the fp32 kernels, and the tests expect that path there.
"""
import json
import subprocess

import pytest

from conftest import bf16_path, describe, parse_report

# How a program gets the packages: without the preload (PYTHONPATH to the build's python/
# folder, as an installed package would be found) or through ipex-run.
LAUNCHERS = ("plain", "ipex-run")


@pytest.fixture(scope="module")
def python_dir(shim):
    path = shim.build_dir / "python"
    assert (path / "ipex_shim" / "_location.py").is_file(), f"{path} lacks the packages"
    return path


@pytest.fixture(scope="module")
def run_api(shim, python_dir, torch_available):
    """run_api(launcher, program, *args, mode=None, env=None) -> CompletedProcess."""

    def run(launcher, program, *args, mode=None, env=None, timeout=300):
        env = dict(env or {})
        if mode is not None:
            env["IPEX_MODE"] = mode
        if launcher == "plain":
            env["PYTHONPATH"] = str(python_dir)
            argv = [shim.python, program, *args]
        else:
            argv = [shim.launcher, shim.python, program, *args]
        return shim.run(argv, env=env, preload=False, timeout=timeout)

    return run


def report_of(proc):
    assert proc.returncode == 0, describe(proc)
    return parse_report(proc.stdout)


def assert_int8_applied(data, cpu_plan, entries):
    """The config was loaded whole and its entries matched the ops."""
    assert data["int8"]["entries"] == entries and data["int8"]["mismatched"] == 0, data
    assert data["int8"]["matched"] >= 1, data


def heavy_path(cpu_plan, mode):
    if mode == "bf16":
        return bf16_path(cpu_plan)
    if mode == "int8":
        return "onednn_int8"
    return "onednn_fp32"


# -- the seed's three README examples ----------------------------------------------------------

@pytest.mark.parametrize("launcher", LAUNCHERS)
def test_seed_device_example_runs_fp32_on_the_shim(run_api, shim, launcher):
    data = report_of(run_api(launcher, shim.program("seed_readme.py"), "device"))
    assert data["on_cpu"]
    assert data["cosines"][0] >= 0.99999, data
    # The README calls the model with autograd on: fp32 mode gives such calls to stock, counted
    # "gradient needed" (in mode off they would be counted "mode off"; the reference is one).
    assert data["ops"]["linear"]["fallback_reasons"] == {"gradient needed": 1, "mode off": 1}
    # Importing the package turned the shim's fp32 mode on (the environment set none).
    assert (data["process_mode"], data["mode_source"]) == ("fp32", "api")
    assert data["attached"] == ("import" if launcher == "plain" else "import")


@pytest.mark.parametrize("launcher", LAUNCHERS)
def test_seed_bf16_example(run_api, shim, cpu_plan, launcher):
    data = report_of(run_api(launcher, shim.program("seed_readme.py"), "bf16"))
    assert data["cosines"][0] >= 0.999, data
    assert data["dtypes"] == ["torch.float32"]
    assert data["process_mode"] == "bf16"
    # Called with autograd on, as the README does: the shim's BF16 forward and backward where
    # BF16 is native, else stock fp32 ("gradient needed").
    if cpu_plan["native_bf16"]:
        assert data["ops"]["linear"].get("autograd_shim", 0) == 1, data
    else:
        assert data["ops"]["linear"]["fallback_reasons"] == {"gradient needed": 1,
                                                             "mode off": 1}, data


@pytest.mark.parametrize("launcher", LAUNCHERS)
def test_seed_int8_examples_calibrate_save_and_infer(run_api, shim, cpu_plan, tmp_path, launcher):
    conf = tmp_path / "configure.json"
    data = report_of(run_api(launcher, shim.program("seed_readme.py"), "calibrate", str(conf)))
    # Calibration returns stock's own results and observes the ops.
    assert all(data["exact"]), data
    assert data["ops"]["conv2d"].get("observed", 0) == 4, data
    entries = json.loads(conf.read_text())
    names = [entry["name"] for entry in entries]
    assert names[:2] == ["Convolution", "Relu"], names
    for entry in entries:  # the seed's fields, as its README lists them
        for field in ("id", "name", "algorithm", "weight_granularity", "inputs_scale",
                      "outputs_scale", "inputs_uint8_used", "outputs_uint8_used", "quantized"):
            assert field in entry, (field, entry)
    assert not list(tmp_path.glob(".*")), "a temporary file was left beside the config"

    data = report_of(run_api(launcher, shim.program("seed_readme.py"), "infer", str(conf)))
    assert min(data["cosines"]) >= 0.98, data
    assert data["outside_cosine"] >= 0.99999, data
    path = heavy_path(cpu_plan, "int8")
    assert data["ops"]["conv2d"].get(path, 0) >= 4, data
    assert_int8_applied(data, cpu_plan, entries=len(entries))


def test_api_config_and_calibration_mode_config_are_interchangeable(run_api, shim, cpu_plan,
                                                                   tmp_path):
    program = shim.program("seed_readme.py")
    api_conf, env_conf = tmp_path / "api.json", tmp_path / "env.json"
    report_of(run_api("plain", program, "calibrate", str(api_conf)))
    proc = run_api("ipex-run", program, "plain", mode="calibration",
                   env={"IPEX_CONFIG": str(env_conf)})
    # The package attached to the shim the preload started, in the environment's mode.
    data = report_of(proc)
    assert (data["attached"], data["mode_source"], data["process_mode"]) == \
        ("preload", "environment", "calibration"), data
    api_entries, env_entries = json.loads(api_conf.read_text()), json.loads(env_conf.read_text())
    assert [e["key"] for e in api_entries] == [e["key"] for e in env_entries]
    for a, b in zip(api_entries, env_entries):
        assert a["inputs_scale"] == pytest.approx(b["inputs_scale"], rel=1e-6), (a, b)
        assert a["outputs_scale"] == pytest.approx(b["outputs_scale"], rel=1e-6), (a, b)
    # Each file drives the other's inference.
    data = report_of(run_api("plain", program, "infer", str(env_conf)))
    assert min(data["cosines"]) >= 0.98, data
    assert_int8_applied(data, cpu_plan, entries=len(api_entries))
    data = report_of(run_api("ipex-run", program, "plain", mode="int8",
                             env={"IPEX_CONFIG": str(api_conf)}))
    assert min(data["cosines"]) >= 0.98, data
    assert_int8_applied(data, cpu_plan, entries=len(api_entries))


# -- IPEX 2.x ------------------------------------------------------------------------------------

@pytest.mark.parametrize("launcher", LAUNCHERS)
@pytest.mark.parametrize("part,mode,floor", [("infer_bf16", "bf16", 0.999),
                                             ("infer_fp32", "fp32", 0.99999)])
def test_ipex2_optimize_for_inference(run_api, shim, cpu_plan, launcher, part, mode, floor):
    data = report_of(run_api(launcher, shim.program("ipex2_api.py"), part))
    assert data["cosine"] >= floor and data["copy_cosine"] >= floor, data
    assert data["dtype"] == "torch.float32"
    # The weights are the model's own, unchanged and still fp32.
    assert data["same_weight_object"] and data["weight_unchanged"], data
    assert data["weight_dtype"] == "torch.float32"
    assert data["ops"]["conv2d"].get(heavy_path(cpu_plan, mode), 0) >= 2, data
    # The optimized model ran in its mode; the rest of the program is left as it was.
    assert data["process_mode"] == "off" and data["mode"] == "off", data


def test_ipex2_training_step_matches_bf16_mode(run_api, shim, tmp_path):
    import torch
    from conftest import cosine
    program = shim.program("ipex2_api.py")
    optimized, bf16, stock = tmp_path / "ipex.pt", tmp_path / "bf16.pt", tmp_path / "stock.pt"
    data = report_of(run_api("plain", program, "train_bf16", str(optimized)))
    assert data["optimizer_follows_copy"], data
    report_of(run_api("ipex-run", program, "train_plain", str(bf16), mode="bf16"))
    report_of(shim.run_py(program, args=("train_plain", str(stock)), preload=False))
    got, want, ref = (torch.load(p) for p in (optimized, bf16, stock))
    # Gradients as in bf16 mode, and close to stock fp32's.
    for g, w, r in zip(got["grads"], want["grads"], ref["grads"]):
        assert torch.allclose(g, w, rtol=1e-3, atol=1e-5), (g - w).abs().max()
        assert cosine(g, r) >= 0.99, cosine(g, r)
    assert abs(got["loss"].item() - ref["loss"].item()) <= 1e-2 * abs(ref["loss"].item())
    for g, r in zip(got["weights"], ref["weights"]):
        assert cosine(g, r) >= 0.999


@pytest.mark.parametrize("with_summary", [False, True])
def test_ipex2_static_quantization(run_api, shim, cpu_plan, tmp_path, with_summary):
    args = ["int8"] + ([str(tmp_path / "qconf.json")] if with_summary else [])
    data = report_of(run_api("plain", shim.program("ipex2_api.py"), *args))
    assert min(data["calibration_cosines"]) >= 0.99999, data
    assert min(data["cosines"]) >= 0.98, data
    assert data["model_outside_cosine"] >= 0.99999, data
    assert data["ops"]["conv2d"].get(heavy_path(cpu_plan, "int8"), 0) >= 8, data
    if with_summary:
        entries = json.loads((tmp_path / "qconf.json").read_text())
        assert [e["name"] for e in entries][:1] == ["Convolution"], entries


# -- modes at run time -----------------------------------------------------------------------------

def test_modes_switching_in_two_threads(run_api, shim):
    data = report_of(run_api("plain", shim.program("mode_threads.py"), "60"))
    ops, expected = data["ops"], data["expected"]
    assert data["mismatches"] == [], data
    assert ops.get("onednn_fp32", 0) == expected["fp32"], data
    assert ops.get("observed", 0) == expected["calibration"], data
    assert ops.get("fallback_reasons", {}).get("mode off", 0) == expected["off"], data
    assert sum(expected.values()) == 180
    assert data["main_scopes"] == []


NESTED_SCOPES = r"""
import json, torch
import ipex_shim
mode = lambda: json.loads(torch.ops.ipex_shim.status())["mode"]
seen = [mode()]
ipex_shim.set_mode("fp32")
seen.append(mode())
with ipex_shim.mode("bf16"):
    seen.append(mode())
    with ipex_shim.mode("off"):
        seen.append(mode())
        ipex_shim.set_mode("calibration")  # the process mode changes under the scopes
        seen.append(mode())
    seen.append(mode())
seen.append(mode())
try:
    with ipex_shim.mode("fp32"):
        raise KeyError("inside")
except KeyError:
    pass
seen.append(mode())
outer = torch.ops.ipex_shim.enter_mode("bf16", "")
inner = torch.ops.ipex_shim.enter_mode("fp32", "")
try:
    torch.ops.ipex_shim.exit_mode(outer)
    said = None
except RuntimeError as error:
    said = str(error)
seen.append(mode())
torch.ops.ipex_shim.exit_mode(inner)
torch.ops.ipex_shim.exit_mode(outer)
seen.append(mode())
print(json.dumps({"seen": seen, "said": said}))
"""


def test_scopes_nest_and_restore(shim, python_dir, run_py):
    proc = run_py(NESTED_SCOPES, preload=False, env={"PYTHONPATH": str(python_dir)})
    assert proc.returncode == 0, describe(proc)
    data = json.loads(proc.stdout.strip().splitlines()[-1])
    assert data["seen"] == ["off", "fp32", "bf16", "off", "off", "bf16", "calibration",
                            "calibration", "fp32", "calibration"], data
    assert "innermost" in data["said"], data


THREADS_AND_WORKERS = r"""
import json, threading, torch
import ipex_shim
from torch.utils.data import DataLoader, Dataset

ipex_shim.set_mode("fp32")
status = lambda: json.loads(torch.ops.ipex_shim.status())

class Probe(Dataset):
    def __len__(self): return 4
    def __getitem__(self, i):
        s = status()
        return torch.tensor([float(s["active"]), float(s["mode"] == "fp32")])

seen = {}
def in_thread():
    seen["thread"] = (status()["active"], status()["mode"])
t = threading.Thread(target=in_thread); t.start(); t.join()
workers = [row.tolist() for row in DataLoader(Probe(), batch_size=1, num_workers=2)]
print(json.dumps({"main": status()["active"], "thread": seen["thread"], "workers": workers,
                  "attached": ipex_shim.attached()}))
"""


def test_import_activates_threads_and_dataloader_workers(shim, python_dir, run_py):
    proc = run_py(THREADS_AND_WORKERS, preload=False, env={"PYTHONPATH": str(python_dir)})
    assert proc.returncode == 0, describe(proc)
    data = json.loads(proc.stdout.strip().splitlines()[-1])
    assert data["attached"] == "import"
    assert data["main"] is True
    assert data["thread"] == [True, "fp32"], data
    assert data["workers"] == [[[1.0, 1.0]]] * 4, data


BAD_CALLS = r"""
import json, torch
import intel_pytorch_extension as ipex
import intel_extension_for_pytorch as ipex2
said = {}
def attempt(name, call):
    try:
        call()
        said[name] = None
    except Exception as error:
        said[name] = [type(error).__name__, str(error)]
conf = ipex.AmpConf(torch.int8)
attempt("running_mode", lambda: ipex.AutoMixPrecision(conf, running_mode="training"))
attempt("unreadable", lambda: ipex.AmpConf(torch.int8, "/nonexistent/configure.json"))
attempt("directory", lambda: ipex.AmpConf(torch.int8, "/tmp"))
attempt("dtype", lambda: ipex.AmpConf(torch.float16))
attempt("mixed_dtype", lambda: ipex.enable_auto_mixed_precision(mixed_dtype=torch.float16))
attempt("optimize_dtype", lambda: ipex2.optimize(torch.nn.Linear(2, 2), dtype=torch.float16))
attempt("set_mode", lambda: __import__("ipex_shim").set_mode("fast"))
attempt("llm", lambda: ipex2.llm)
attempt("dynamic", lambda: ipex2.quantization.default_dynamic_qconfig_mapping)
attempt("convert_unprepared", lambda: ipex2.quantization.convert(torch.nn.Linear(2, 2)))
attempt("inference_without_config",
        lambda: ipex.AutoMixPrecision(conf, running_mode="inference").__enter__())
model = torch.nn.Linear(4, 3)
x = torch.randn(2, 4)
with torch.no_grad():
    still = torch.allclose(model(x), torch.nn.functional.linear(x, model.weight, model.bias))
print(json.dumps({"said": said, "still_runs": still,
                  "scopes": json.loads(torch.ops.ipex_shim.status())["thread_scopes"]}))
"""


def test_bad_calls_name_the_argument_and_leave_the_process_running(shim, python_dir, run_py):
    proc = run_py(BAD_CALLS, preload=False, env={"PYTHONPATH": str(python_dir)})
    assert proc.returncode == 0, describe(proc)
    data = json.loads(proc.stdout.strip().splitlines()[-1])
    said = data["said"]
    assert data["still_runs"] and data["scopes"] == []
    expect = {
        "running_mode": ("ValueError", ["running_mode='training'", "'calibration'", "'inference'"]),
        "unreadable": ("FileNotFoundError", ["/nonexistent/configure.json"]),
        "directory": ("", ["/tmp"]),
        "dtype": ("ValueError", ["mixed_dtype=torch.float16", "torch.int8", "torch.bfloat16"]),
        "mixed_dtype": ("ValueError", ["mixed_dtype=torch.float16", "torch.bfloat16"]),
        "optimize_dtype": ("ValueError", ["dtype=torch.float16", "torch.bfloat16"]),
        "set_mode": ("ValueError", ["'fast'", "fp32", "bf16", "int8"]),
        "llm": ("AttributeError", ["ipex.llm", "optimize"]),
        "dynamic": ("AttributeError", ["dynamic", "static"]),
        "convert_unprepared": ("ValueError", ["prepare"]),
        "inference_without_config": ("ValueError", ["configure.json"]),
    }
    for name, (kind, words) in expect.items():
        assert said[name] is not None, f"{name}: no error was raised"
        if kind:
            assert said[name][0] == kind, (name, said[name])
        for word in words:
            assert word in said[name][1], (name, word, said[name])


def test_installed_packages_load_the_installed_core(shim, tmp_path, run_py):
    prefix = tmp_path / "prefix"
    proc = subprocess.run(["cmake", "--install", str(shim.build_dir), "--prefix", str(prefix)],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.returncode == 0, proc.stdout
    core = next(prefix.rglob("libipex_shim_core.so"))
    locations = sorted(prefix.rglob("ipex_shim/_location.py"))
    assert len(locations) == 2, locations  # beside the library, and the Python folder
    for location in locations:
        assert f'CORE_PATH = "{core}"' in location.read_text(), location.read_text()
    for package in ("ipex_shim", "intel_pytorch_extension", "intel_extension_for_pytorch"):
        assert len(list(prefix.rglob(f"{package}/__init__.py"))) == 2, package
    launcher = next(prefix.rglob("ipex_shim/ipex-run"))
    assert (launcher.parent / "python" / "intel_pytorch_extension" / "__init__.py").is_file()
    # The installed packages load the installed core, by its absolute path.
    site = next(p for p in (l.parent.parent for l in locations) if p != launcher.parent / "python")
    proc = run_py("import json, intel_pytorch_extension, ipex_shim\n"
                  "maps = open('/proc/self/maps').read()\n"
                  "print(json.dumps([ipex_shim.attached(), ipex_shim.status()['process_mode'],"
                  " [l.split()[-1] for l in maps.splitlines() if 'ipex_shim_core' in l][:1]]))",
                  preload=False, env={"PYTHONPATH": str(site)})
    assert proc.returncode == 0, describe(proc)
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == ["import", "fp32", [str(core)]]


# A program that took every dispatch key the shim could use (a kernel of its own for
# aten::conv2d at each) before importing the package: the core refuses to start.
REFUSED_CORE = r"""
import json, warnings, torch
lib = torch.library.Library("aten", "IMPL")
for key in ("AutocastXPU", "AutocastIPU", "AutocastHPU", "AutocastXLA", "AutocastPrivateUse1"):
    try:
        if not torch._C._dispatch_has_kernel_for_dispatch_key("aten::conv2d", key):
            lib.impl("conv2d", lambda *args: None, key)  # no thread enables these keys
    except (RuntimeError, ValueError, AttributeError):  # a key this torch does not have
        pass
torch.manual_seed(0)
x, w = torch.randn(4, 3, 12, 12), torch.randn(8, 3, 3, 3)
stock = torch.nn.functional.conv2d(x, w)
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    import ipex_shim
previous = ipex_shim.set_mode("fp32")
with ipex_shim.mode("bf16"):
    scoped = torch.nn.functional.conv2d(x, w)
import intel_extension_for_pytorch as ipex
net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU()).eval()
prepared = ipex.quantization.prepare(net, ipex.quantization.default_static_qconfig_mapping,
                                     example_inputs=(x,))
with torch.no_grad():
    prepared(x)
with warnings.catch_warnings(record=True) as converting:
    warnings.simplefilter("always")
    quantized = ipex.quantization.convert(prepared)
with torch.no_grad():
    converted_stock = torch.equal(quantized(x), net(x))
print(json.dumps({
    "convert_warnings": [str(w.message) for w in converting],
    "converted_stock": converted_stock,
    "warnings": [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)],
    "attached": ipex_shim.attached(), "previous": previous, "status": ipex_shim.status(),
    "op_status": json.loads(torch.ops.ipex_shim.status()),
    "stock_results": torch.equal(stock, scoped)}))
"""


def test_a_refused_core_says_why_in_status(shim, python_dir, run_py):
    """Where the core refuses to start, torch.ops.ipex_shim.status() still exists and says
    why (before, the op was missing and a program asking whether the shim runs got an
    AttributeError), the packages' status() carries the same reason, and the program runs
    stock PyTorch, an IPEX 2.x static quantization included."""
    proc = run_py(REFUSED_CORE, mode="bf16", preload=False, env={"PYTHONPATH": str(python_dir)})
    assert proc.returncode == 0, describe(proc)
    errors = [line for line in proc.stderr.splitlines() if line.startswith("ipex_shim: error")]
    assert len(errors) == 1 and "leaves none of its free keys" in errors[0] \
        and "stays off" in errors[0], proc.stderr
    data = json.loads(proc.stdout.strip().splitlines()[-1])
    reason = data["op_status"]["refused"]
    assert "leaves none of its free keys" in reason and "aten::conv2d" in reason, data
    assert data["attached"] is None and data["previous"] == "off" and data["stock_results"]
    assert len(data["warnings"]) == 1 and reason in data["warnings"][0], data["warnings"]
    # IPEX 2.x's prepare/convert goes on in stock fp32 (convert used to raise), saying why.
    assert data["converted_stock"], data
    assert len(data["convert_warnings"]) == 1 and reason in data["convert_warnings"][0] \
        and "stock fp32" in data["convert_warnings"][0], data["convert_warnings"]
    status = data["op_status"]
    assert status["running"] is False and status["active"] is False, status
    assert status["mode"] == "off" and status["environment_mode"] == "bf16", status
    assert status["ops"] == {} and status["implemented_modes"] == [], status
    for mode in ("bf16", "int8"):
        assert status["on_this_cpu"][mode].startswith("stock PyTorch") \
            and reason in status["on_this_cpu"][mode], status["on_this_cpu"]
    assert isinstance(status["isa"], dict) and status["isa"] and status["onednn"]["version"]
    assert status["torch"] and status["version"].count(".") == 2
    from_package = dict(data["status"])
    assert reason in from_package.pop("why"), data["status"]
    assert from_package == status, (from_package, status)
