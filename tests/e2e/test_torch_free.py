"""Processes that never load torch must run exactly as without the shim.

The bootstrap is preloaded into everything a shell or launcher starts, so `true`, `sh`,
torch-free Python programs and their children must run normally under IPEX_MODE=bf16: exit
0, same stdout (and stderr) as a control run without the preload, and neither libtorch nor
libipex_shim_core.so mapped (libipex_shim.so is, which proves the preload was in effect).
"""
import re

import pytest

from conftest import REPORT_PREFIX, describe, parse_report

MODE = "bf16"


def _payload(stdout):
    return [l for l in stdout.splitlines() if not l.startswith(REPORT_PREFIX)]


def _assert_only_bootstrap(mapped, shim, where):
    assert str(shim.lib) in mapped, f"{where}: libipex_shim.so not mapped: {mapped}"
    assert str(shim.core) not in mapped, f"{where}: core mapped: {mapped}"
    torch_libs = [p for p in mapped if "libtorch" in p]
    assert not torch_libs, f"{where}: libtorch mapped: {torch_libs}"


def _loaded_objects(ld_debug_stderr):
    """Files the dynamic loader mapped, from LD_DEBUG=files output."""
    return set(re.findall(r"file=(\S+) \[\d+\];\s+generating link map", ld_debug_stderr))


def test_bin_true_runs_and_only_bootstrap_is_loaded(run_cmd, shim):
    """/bin/true exits 0 under the preload; the loader maps libipex_shim.so and neither the
    core nor libtorch (checked with LD_DEBUG=files)."""
    control = run_cmd(["/bin/true"], preload=False)
    proc = run_cmd(["/bin/true"], mode=MODE)
    assert proc.returncode == 0 == control.returncode, describe(proc)
    assert (proc.stdout, proc.stderr) == (control.stdout, control.stderr) == ("", "")

    traced = run_cmd(["/bin/true"], mode=MODE, env={"LD_DEBUG": "files"})
    assert traced.returncode == 0, describe(traced)
    loaded = _loaded_objects(traced.stderr)
    assert str(shim.lib) in loaded, traced.stderr
    assert not any("ipex_shim_core" in p or "libtorch" in p for p in loaded), loaded


def test_sh_echo_same_output_as_control(run_cmd):
    """`sh -c 'echo hi'` under the preload prints the same as without it, exit 0."""
    control = run_cmd(["sh", "-c", "echo hi"], preload=False)
    proc = run_cmd(["sh", "-c", "echo hi"], mode=MODE)
    assert proc.returncode == 0, describe(proc)
    assert (proc.stdout, proc.stderr) == (control.stdout, control.stderr) == ("hi\n", "")


def test_sh_maps_only_bootstrap(run_cmd, shim):
    """Inside sh (its own /proc/$$/maps) the bootstrap is mapped, the core and libtorch not."""
    proc = run_cmd(["sh", "-c", "cat /proc/$$/maps"], mode=MODE)
    assert proc.returncode == 0, describe(proc)
    mapped = {l.split(None, 5)[5] for l in proc.stdout.splitlines() if len(l.split()) == 6}
    _assert_only_bootstrap(mapped, shim, "sh")


def test_torch_free_python_same_output_and_no_torch(run_py, shim):
    """A torch-free Python program (with threads) gives the same stdout/stderr as the control
    and maps only the bootstrap."""
    control = run_py(shim.program("torch_free.py"), preload=False)
    proc = run_py(shim.program("torch_free.py"), mode=MODE)
    assert proc.returncode == 0 == control.returncode, describe(proc)
    assert _payload(proc.stdout) == _payload(control.stdout)
    assert len(_payload(proc.stdout)) == 3
    assert proc.stderr == control.stderr == ""
    assert parse_report(control.stdout)["mapped"] == []
    _assert_only_bootstrap(parse_report(proc.stdout)["mapped"], shim, "python")


@pytest.fixture(scope="module")
def spawner_runs(run_py, shim):
    return (run_py(shim.program("spawner.py"), preload=False),
            run_py(shim.program("spawner.py"), mode=MODE))


def test_python_starting_subprocesses_same_output(spawner_runs):
    """A Python program that runs sh, cat and a Python child prints the same under the
    preload as without it, exit 0, nothing on stderr."""
    control, proc = spawner_runs
    assert proc.returncode == 0 == control.returncode, describe(proc)
    assert _payload(proc.stdout) == _payload(control.stdout)
    assert _payload(proc.stdout)[0] == "parent starts"
    assert _payload(proc.stdout)[-1] == "parent ends"
    assert proc.stderr == control.stderr == ""
    assert parse_report(proc.stdout)["child_stderr"] == ""


@pytest.mark.parametrize("process", ["parent", "sh", "cat", "python_child"])
def test_subprocesses_inherit_preload_without_torch(spawner_runs, shim, process):
    """Every process in the tree has libipex_shim.so mapped (the preload is inherited) and
    neither libtorch nor the core; in the control none of them has any shim library."""
    control, proc = spawner_runs
    _assert_only_bootstrap(parse_report(proc.stdout)[process], shim, process)
    assert parse_report(control.stdout)[process] == []
