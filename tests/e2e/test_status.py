"""torch.ops.ipex_shim.status(): what it reports and where the shim is active.

With IPEX_MODE=bf16 (accepted even while no mode is implemented) the core must load once
torch is imported, register the status op, count intercepted calls and be active in every
thread and worker process the program starts.
"""
import os

import pytest

from conftest import describe, parse_report

MODE = "bf16"

STATUS_KEYS = {
    "version", "running", "refused", "mode", "mode_available", "implemented_modes", "active", "dispatch_key",
    "num_threads", "num_threads_setting", "num_threads_from", "isa", "onednn", "config",
    "fusion", "strict", "verbose", "pid", "ops", "policy",
}
INTERCEPTED = {
    "conv2d", "linear", "matmul", "bmm", "addmm", "batch_norm", "relu", "relu_", "add.Tensor",
    "add_.Tensor", "max_pool2d", "adaptive_avg_pool2d", "softmax.int", "layer_norm", "gelu",
}


def total_calls(op_entry):
    """Calls counted for one op, over every path (fallback reasons are a breakdown)."""
    return sum(v for k, v in op_entry.items() if k != "fallback_reasons")


def _probe(run_py, shim, env=None, **kwargs):
    proc = run_py(shim.program("status_probe.py"), mode=MODE, env=env, **kwargs)
    assert proc.returncode == 0, describe(proc)
    return proc, parse_report(proc.stdout)


@pytest.fixture(scope="module")
def probe(run_py, shim):
    """status_probe.py under IPEX_MODE=bf16, OMP_NUM_THREADS unset."""
    return _probe(run_py, shim)


def test_status_json_has_every_documented_key(probe, shim):
    """status() is a JSON object with every documented key, with sensible types/values."""
    _, report = probe
    status = report["status"]
    assert STATUS_KEYS <= status.keys(), STATUS_KEYS - status.keys()
    assert status["mode"] == MODE
    assert status["running"] is True and status["refused"] is None
    assert isinstance(status["version"], str) and status["version"].count(".") == 2
    assert isinstance(status["implemented_modes"], list)
    assert status["mode_available"] == (MODE in status["implemented_modes"])
    assert set(status["implemented_modes"]) <= {"fp32", "bf16", "calibration", "int8"}
    assert isinstance(status["dispatch_key"], str) and status["dispatch_key"]
    assert status["config"] is None
    assert status["fusion"]["enabled"] is True and status["strict"] is False
    assert status["verbose"] == 0
    assert {"fused_convolutions", "mispredictions", "repairs", "sites"} <= status["fusion"].keys()
    assert isinstance(status["isa"], dict) and status["isa"]
    assert all(isinstance(v, bool) for v in status["isa"].values())
    assert {"version", "isa"} <= status["onednn"].keys()
    assert isinstance(status["pid"], int) and status["pid"] > 0
    assert INTERCEPTED <= status["ops"].keys(), INTERCEPTED - status["ops"].keys()
    assert INTERCEPTED <= status["policy"].keys(), INTERCEPTED - status["policy"].keys()
    assert all(isinstance(p, str) and p for p in status["policy"].values())


def test_status_core_is_mapped_from_build_dir(probe, shim):
    """The core the bootstrap loaded is the one beside libipex_shim.so."""
    _, report = probe
    assert str(shim.lib) in report["mapped"]
    assert str(shim.core) in report["mapped"]
    other_cores = [p for p in report["mapped"] if "libipex_shim_core" in p and p != str(shim.core)]
    assert not other_cores


def test_status_active_in_main_thread(probe):
    """The shim's key is enabled in the thread that imported torch."""
    assert probe[1]["status"]["active"] is True
    assert probe[1]["active_main"] is True


def test_status_active_in_threading_thread(probe):
    """A threading.Thread started after import torch has the shim active."""
    assert probe[1]["active_thread"] is True


def test_status_active_in_thread_pool_worker(probe):
    """concurrent.futures.ThreadPoolExecutor workers have the shim active."""
    assert probe[1]["active_pool"] == [True] * 4


def test_conv2d_three_calls_counted_then_reset(probe):
    """3 calls of F.conv2d are counted as 3 (over all paths); reset_stats zeroes every op."""
    ops = probe[1]["ops_after_3_conv2d"]
    assert total_calls(ops["conv2d"]) == 3, ops["conv2d"]
    # Only conv2d was called between the reset and the read-out.
    others = {k: v for k, v in ops.items() if k != "conv2d" and total_calls(v) != 0}
    assert not others, others
    reasons = ops["conv2d"].get("fallback_reasons", {})
    assert sum(reasons.values()) <= 3
    after = probe[1]["ops_after_reset"]
    assert after.keys() == ops.keys()
    assert all(total_calls(v) == 0 and not v.get("fallback_reasons") for v in after.values()), after


def test_num_threads_defaults_to_affinity_mask(probe):
    """OMP_NUM_THREADS unset: torch threads = CPUs in the affinity mask, from 'affinity mask'."""
    report = probe[1]
    cpus = report["affinity_cpus"]
    assert cpus == len(os.sched_getaffinity(0))
    assert report["status"]["num_threads"] == cpus
    assert report["status"]["num_threads_setting"] == cpus
    assert report["status"]["num_threads_from"] == "affinity mask"
    assert report["torch_num_threads"] == cpus


def test_num_threads_follows_restricted_affinity_mask(run_py, shim):
    """Started with a one-CPU affinity mask (not the machine's CPU count), the shim uses 1."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        pytest.skip("needs at least 2 CPUs in the affinity mask to restrict it")
    first = cpus[0]
    _, report = _probe(run_py, shim, preexec_fn=lambda: os.sched_setaffinity(0, {first}))
    assert report["affinity_cpus"] == 1
    assert report["status"]["num_threads"] == 1
    assert report["status"]["num_threads_from"] == "affinity mask"


def test_num_threads_from_omp_num_threads(run_py, shim):
    """OMP_NUM_THREADS=1: torch threads = 1, reported as coming from OMP_NUM_THREADS."""
    _, report = _probe(run_py, shim, env={"OMP_NUM_THREADS": "1"})
    assert report["status"]["num_threads"] == 1
    assert report["status"]["num_threads_setting"] == 1
    assert report["status"]["num_threads_from"] == "OMP_NUM_THREADS"
    assert report["torch_num_threads"] == 1


@pytest.mark.parametrize("start_method", ["fork", "spawn"])
def test_status_active_in_dataloader_workers(run_py, shim, start_method):
    """DataLoader(num_workers=2) workers (fork, the default, and spawn) are separate
    processes in which the shim is active, in the mode asked, and intercepts ops."""
    proc = run_py(shim.program("dataloader_status.py"), mode=MODE, args=[start_method])
    assert proc.returncode == 0, describe(proc)
    report = parse_report(proc.stdout)
    items = report["items"]
    assert len(items) == 8
    assert report["parent_active"] is True
    assert all(active is True for active, _, _, _ in items), items
    assert all(mode == MODE for _, _, mode, _ in items), items
    assert all(delta == 1 for _, _, _, delta in items), items
    pids = {pid for _, pid, _, _ in items}
    assert report["parent_pid"] not in pids
    assert len(pids) == 2, pids


def test_relative_ld_preload_then_chdir_still_loads_core(run_py, shim):
    """LD_PRELOAD as a relative path (resolved against the starting directory) keeps working
    when the program changes directory to / before `import torch`: the core loads from the
    build directory and status() works."""
    cwd = shim.build_dir.parent
    relative = os.path.join(shim.build_dir.name, shim.lib.name)
    assert not os.path.isabs(relative) and "/" in relative
    proc = run_py(shim.program("status_probe.py"), mode=MODE, preload=False,
                  env={"LD_PRELOAD": relative}, args=["--chdir", "/"], cwd=str(cwd))
    assert proc.returncode == 0, describe(proc)
    report = parse_report(proc.stdout)
    assert report["cwd"] == "/"
    assert report["status"]["mode"] == MODE and report["active_main"] is True
    assert str(shim.core) in report["mapped"]


@pytest.mark.parametrize("mode,shown", [("fp32", "fp32"), ("bf16", "bf16"),
                                        ("calibration", "calibration"), ("int8", "int8"),
                                        ("inference", "int8")])
def test_every_mode_loads_core_and_is_active(run_py, shim, mode, shown):
    """Every mode other than off loads the core and is active; `inference` is an alias that
    status() reports as int8; mode_available agrees with implemented_modes."""
    code = ("import json, torch; s = json.loads(torch.ops.ipex_shim.status()); "
            "print('E2E-REPORT:' + json.dumps({k: s[k] for k in "
            "('mode', 'active', 'mode_available', 'implemented_modes')}))")
    proc = run_py(code, mode=mode)
    assert proc.returncode == 0, describe(proc)
    report = parse_report(proc.stdout)
    assert report["mode"] == shown and report["active"] is True
    assert report["mode_available"] == (shown in report["implemented_modes"])


def test_preload_through_symlink_loads_core_beside_real_file(run_py, shim, tmp_path):
    """LD_PRELOAD naming a symlink to libipex_shim.so (an installed link): the core is loaded
    from the directory of the real file."""
    link = tmp_path / "libipex_shim.so"
    link.symlink_to(shim.lib)
    proc = run_py(shim.program("status_probe.py"), mode=MODE, preload=False,
                  env={"LD_PRELOAD": str(link)})
    assert proc.returncode == 0, describe(proc)
    report = parse_report(proc.stdout)
    assert report["active_main"] is True
    assert str(shim.core) in report["mapped"]
