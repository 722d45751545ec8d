"""build/ipex-run: the launcher that preloads the shim and sets its variables.

`ipex-run [--mode M] [--config F] [--verbose N] -- CMD...` must run CMD with libipex_shim.so
in LD_PRELOAD (keeping entries already there), exit 2 with a message on misuse, and document
every mode in --help.
"""
import os

import pytest

from conftest import describe, parse_report

STATUS_CODE = (
    "import json, os, torch\n"
    "s = json.loads(torch.ops.ipex_shim.status())\n"
    "maps = open('/proc/self/maps').read()\n"
    "print('E2E-REPORT:' + json.dumps({'mode': s['mode'], 'active': s['active'],\n"
    "    'verbose': s['verbose'], 'config': s['config'],\n"
    "    'ld_preload': os.environ.get('LD_PRELOAD', ''),\n"
    "    'mapped': sorted({l.split(None, 5)[5].strip() for l in maps.splitlines()\n"
    "                      if len(l.split(None, 5)) == 6 and l.split(None, 5)[5].startswith('/')})}))\n"
)


def _launch(run_cmd, shim, args, env=None, **kwargs):
    """Run the launcher from a clean environment (no preload of our own)."""
    return run_cmd([shim.launcher, *args], preload=False, env=env, **kwargs)


def test_help_exits_0_and_mentions_every_mode(run_cmd, shim):
    """`ipex-run --help` (and -h) exits 0 and names every mode and the main options."""
    for flag in ("--help", "-h"):
        proc = _launch(run_cmd, shim, [flag])
        assert proc.returncode == 0, describe(proc)
        text = proc.stdout
        for mode in ("off", "fp32", "bf16", "calibration", "int8", "inference"):
            assert mode in text, f"--help does not mention {mode}:\n{text}"
        for option in ("--mode", "--config", "--verbose"):
            assert option in text


@pytest.mark.parametrize("mode_args", [["--mode", "bf16"], ["--mode=bf16"]])
def test_mode_bf16_runs_python_with_shim_active(run_cmd, shim, torch_available, mode_args):
    """`ipex-run --mode bf16 -- python3 -c <status>`: status says mode bf16, active true, and
    the core from the launcher's directory is mapped."""
    proc = _launch(run_cmd, shim, [*mode_args, "--", shim.python, "-c", STATUS_CODE])
    assert proc.returncode == 0, describe(proc)
    report = parse_report(proc.stdout)
    assert report["mode"] == "bf16" and report["active"] is True
    assert str(shim.lib) in report["mapped"] and str(shim.core) in report["mapped"]


def test_verbose_and_config_options_reach_the_shim(run_cmd, shim, torch_available, tmp_path):
    """--verbose 1 and --config FILE are passed on as IPEX_VERBOSE / IPEX_CONFIG."""
    config = tmp_path / "conf.json"
    config.write_text("{}")
    proc = _launch(run_cmd, shim, ["--mode", "fp32", "--verbose", "1", "--config", config,
                                   "--", shim.python, "-c", STATUS_CODE])
    assert proc.returncode == 0, describe(proc)
    report = parse_report(proc.stdout)
    assert report["mode"] == "fp32" and report["verbose"] == 1
    assert report["config"] == str(config)
    assert "ipex_shim: ipex-shim " in proc.stderr  # the verbose banner


def test_existing_ld_preload_entry_is_kept(run_cmd, shim, torch_available):
    """An LD_PRELOAD already set is kept: the child's LD_PRELOAD names both libraries, both
    are mapped, and the shim is active."""
    other = "/usr/lib/x86_64-linux-gnu/libgomp.so.1"
    if not os.path.exists(other):
        pytest.skip(f"{other} not present")
    proc = _launch(run_cmd, shim, ["--mode", "bf16", "--", shim.python, "-c", STATUS_CODE],
                   env={"LD_PRELOAD": other})
    assert proc.returncode == 0, describe(proc)
    report = parse_report(proc.stdout)
    entries = report["ld_preload"].replace(":", " ").split()
    assert str(shim.lib) in entries and other in entries, report["ld_preload"]
    assert os.path.realpath(other) in report["mapped"]
    assert str(shim.lib) in report["mapped"]
    assert report["active"] is True


def test_existing_ld_preload_kept_for_non_python_command(run_cmd, shim):
    """The same for a torch-free command: sh sees both entries in LD_PRELOAD."""
    proc = _launch(run_cmd, shim, ["--mode", "bf16", "--", "sh", "-c", 'echo "$LD_PRELOAD"'],
                   env={"LD_PRELOAD": "/usr/lib/x86_64-linux-gnu/libgomp.so.1"})
    assert proc.returncode == 0, describe(proc)
    entries = proc.stdout.split()
    assert entries[0] == str(shim.lib)
    assert "/usr/lib/x86_64-linux-gnu/libgomp.so.1" in entries


def test_command_exit_status_and_output_pass_through(run_cmd, shim):
    """The launcher execs the command: its stdout, stderr and exit status come through."""
    proc = _launch(run_cmd, shim, ["--mode", "bf16", "--", "sh", "-c",
                                   "echo out; echo err >&2; exit 7"])
    assert proc.returncode == 7
    assert proc.stdout == "out\n" and proc.stderr == "err\n"


def test_no_command_exits_2_with_message(run_cmd, shim):
    """`ipex-run` and `ipex-run --mode bf16 --` with no command: exit 2 and a message."""
    for args in ([], ["--mode", "bf16"], ["--mode", "bf16", "--"]):
        proc = _launch(run_cmd, shim, args)
        assert proc.returncode == 2, describe(proc)
        assert "no command" in proc.stderr, describe(proc)
        assert proc.stdout == ""


@pytest.mark.parametrize("args", [["--bogus", "--", "true"], ["-x", "true"]])
def test_unknown_option_exits_2(run_cmd, shim, args):
    """An unknown option: exit 2, a message naming it, the command is not run."""
    proc = _launch(run_cmd, shim, args)
    assert proc.returncode == 2, describe(proc)
    assert args[0] in proc.stderr and "unknown option" in proc.stderr
    assert proc.stdout == ""


def test_option_missing_value_exits_2(run_cmd, shim):
    """`--mode` without a value: exit 2 with a message."""
    proc = _launch(run_cmd, shim, ["--mode"])
    assert proc.returncode == 2, describe(proc)
    assert "--mode" in proc.stderr
