"""Bad settings are reported once and never stop the program; IPEX_VERBOSE=1 talks on stderr.

An invalid IPEX_MODE gives exactly one warning line (naming the variable, the value and the
allowed values) and the program then runs as without the shim: same stdout as a control run.
Invalid IPEX_VERBOSE / IPEX_FUSION / IPEX_STRICT values are reported the same way and the
default is used. IPEX_VERBOSE=1 prints a banner at load and a per-op summary at exit, on
stderr only, every line prefixed `ipex_shim: `.
"""
import re
import subprocess

import pytest

from conftest import DEFAULT_TIMEOUT, REPORT_PREFIX, describe, parse_report, shim_lines

ALLOWED_MODES = ["off", "fp32", "bf16", "calibration", "int8", "inference"]
MARKERS = ["before import torch", "after import torch", "end of program"]


@pytest.fixture(scope="module")
def control(run_py, shim):
    proc = run_py(shim.program("torch_payload.py"), preload=False)
    assert proc.returncode == 0, describe(proc)
    assert parse_report(proc.stdout)["mode"] is None
    return proc


@pytest.mark.parametrize("value", ["bogus", "BF16", "bf16 "])
def test_invalid_ipex_mode_warns_once_and_runs_like_control(run_py, shim, control, value):
    """IPEX_MODE=<invalid>: exactly one warning line naming IPEX_MODE, the value and every
    allowed value; no core loaded; stdout identical to the control; exit 0."""
    proc = run_py(shim.program("torch_payload.py"), mode=value)
    assert proc.returncode == 0, describe(proc)
    assert proc.stdout == control.stdout
    assert control.stderr == ""
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    line = lines[0]
    assert line.startswith("ipex_shim: warning: "), line
    assert "IPEX_MODE" in line and f"'{value}'" in line, line
    allowed = re.search(r"allowed: ([^)]*)\)", line)
    assert allowed, line
    assert [m.strip() for m in allowed.group(1).split(",")] == ALLOWED_MODES, line
    assert "'off'" in line, line  # says what it falls back to
    report = parse_report(proc.stdout)
    assert report["mode"] is None and report["core_mapped"] is False


@pytest.mark.parametrize(
    "name,value,allowed,field,default",
    [
        ("IPEX_VERBOSE", "bogus", "0, 1, 2", "verbose", 0),
        ("IPEX_VERBOSE", "3", "0, 1, 2", "verbose", 0),
        ("IPEX_VERBOSE", "1x", "0, 1, 2", "verbose", 0),
        ("IPEX_FUSION", "2", "0, 1", "fusion", True),
        ("IPEX_FUSION", "yes", "0, 1", "fusion", True),
        ("IPEX_STRICT", "true", "0, 1", "strict", False),
    ],
)
def test_invalid_setting_warns_once_and_uses_default(run_py, shim, name, value, allowed,
                                                     field, default):
    """An invalid IPEX_VERBOSE/IPEX_FUSION/IPEX_STRICT gives exactly one warning line naming
    the variable, the value and the allowed values; the program runs with the default."""
    proc = run_py(shim.program("torch_payload.py"), mode="bf16", env={name: value})
    assert proc.returncode == 0, describe(proc)
    mentions = [l for l in proc.stderr.splitlines() if name in l]
    assert len(mentions) == 1, proc.stderr
    line = mentions[0]
    assert line.startswith("ipex_shim: warning: "), line
    assert f"'{value}'" in line and f"allowed: {allowed}" in line, line
    assert sum("is not valid" in l for l in proc.stderr.splitlines()) == 1, proc.stderr
    report = parse_report(proc.stdout)
    assert report["mode"] == "bf16" and report["core_mapped"] is True
    assert report[field] == default
    assert [l for l in proc.stdout.splitlines() if l in MARKERS] == MARKERS


def _popen(shim, env, merge):
    process = subprocess.Popen(
        [shim.python, str(shim.program("torch_payload.py"))],
        env=shim.env(mode="bf16", env=env),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT if merge else subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        cwd="/tmp",
    )
    out, err = process.communicate(timeout=DEFAULT_TIMEOUT)
    return process, out, err


# A summary row: the op's name, one count per path column (how many columns there are
# depends on the paths this version has), then the fallback reasons (text, may be empty).
SUMMARY_ROW = re.compile(r"^ipex_shim:   (\S+)((?:\s+\d+)+)(?:\s+(\D.*))?$")


def _summary_totals(lines):
    """op -> total calls from the summary rows (the sum of the numeric path columns)."""
    totals = {}
    for line in lines:
        match = SUMMARY_ROW.match(line)
        if match:
            totals[match.group(1)] = sum(int(n) for n in match.group(2).split())
    return totals


def test_verbose_1_banner_and_summary_on_stderr_only(shim, torch_available, control):
    """IPEX_VERBOSE=1: stdout carries only the program's output; stderr has the banner
    (version, mode, config, threads) and the exit summary for this pid with a row per called
    op; every stderr line starts with `ipex_shim: `."""
    process, out, err = _popen(shim, {"IPEX_VERBOSE": "1"}, merge=False)
    assert process.returncode == 0, out + err
    assert "ipex_shim" not in out
    assert [l for l in out.splitlines() if l in MARKERS] == MARKERS
    assert [l for l in out.splitlines() if not l.startswith(REPORT_PREFIX)][0] == MARKERS[0]
    assert parse_report(out)["verbose"] == 1

    lines = err.splitlines()
    assert lines, "nothing on stderr"
    unprefixed = [l for l in lines if not l.startswith("ipex_shim: ")]
    assert not unprefixed, unprefixed
    banner = [l for l in lines if re.match(r"ipex_shim: ipex-shim \d+\.\d+\.\d+: mode bf16\b", l)]
    assert len(banner) == 1, err
    assert "config none" in banner[0], banner[0]
    assert re.search(r"threads \d+ \(affinity mask\)", banner[0]), banner[0]
    header = f"ipex_shim: summary for pid {process.pid}, mode bf16: calls per op and path"
    assert lines.count(header) == 1, err
    assert lines.index(banner[0]) < lines.index(header)
    totals = _summary_totals(lines[lines.index(header):])
    # The program calls conv2d once, linear once and relu twice; nothing else intercepted
    # may be missing from the table (ops with zero calls are left out).
    assert totals.get("conv2d") == 1 and totals.get("linear") == 1, err
    assert totals.get("relu") == 2, err
    assert all(n > 0 for n in totals.values()), err


def test_verbose_1_banner_at_load_and_summary_at_exit(shim, torch_available):
    """With stdout and stderr in one pipe: the banner comes while `import torch` runs
    (between the program's markers) and the summary after the program's last line."""
    process, out, _ = _popen(shim, {"IPEX_VERBOSE": "1"}, merge=True)
    assert process.returncode == 0, out
    lines = out.splitlines()
    banner = next(i for i, l in enumerate(lines) if l.startswith("ipex_shim: ipex-shim "))
    summary = next(i for i, l in enumerate(lines) if l.startswith("ipex_shim: summary for pid"))
    assert lines.index(MARKERS[0]) < banner < lines.index(MARKERS[1]), out
    assert lines.index(MARKERS[2]) < summary, out
    assert all(l.startswith("ipex_shim: ") for l in lines[summary:]), out


def test_verbose_0_no_banner_no_summary(run_py, shim):
    """IPEX_VERBOSE unset: no banner and no summary (at most warnings) on stderr."""
    proc = run_py(shim.program("torch_payload.py"), mode="bf16")
    assert proc.returncode == 0, describe(proc)
    assert parse_report(proc.stdout)["core_mapped"] is True
    assert all(l.startswith("ipex_shim: warning: ") for l in shim_lines(proc.stderr)), proc.stderr
    assert "summary for pid" not in proc.stderr and "ipex-shim " not in proc.stderr


def test_empty_ipex_config_warns_once(run_py, shim):
    """IPEX_CONFIG set but empty: one warning naming IPEX_CONFIG; no config is used."""
    code = ("import json, torch; s = json.loads(torch.ops.ipex_shim.status()); "
            "print('E2E-REPORT:' + json.dumps({'config': s['config'], 'mode': s['mode']}))")
    proc = run_py(code, mode="bf16", env={"IPEX_CONFIG": ""})
    assert proc.returncode == 0, describe(proc)
    mentions = [l for l in proc.stderr.splitlines() if "IPEX_CONFIG" in l]
    assert len(mentions) == 1 and mentions[0].startswith("ipex_shim: warning: "), proc.stderr
    assert parse_report(proc.stdout) == {"config": None, "mode": "bf16"}


def test_invalid_omp_num_threads_warns_once_and_uses_affinity(run_py, shim):
    """OMP_NUM_THREADS=abc: the shim says so once (libgomp/torch may add their own lines) and
    uses the CPUs of the affinity mask."""
    code = ("import json, os, torch; s = json.loads(torch.ops.ipex_shim.status()); "
            "print('E2E-REPORT:' + json.dumps({'n': s['num_threads'], "
            "'from': s['num_threads_from'], 'cpus': len(os.sched_getaffinity(0))}))")
    proc = run_py(code, mode="bf16", env={"OMP_NUM_THREADS": "abc"})
    assert proc.returncode == 0, describe(proc)
    mentions = [l for l in shim_lines(proc.stderr) if "OMP_NUM_THREADS" in l]
    assert len(mentions) == 1, proc.stderr
    assert "'abc'" in mentions[0] and "not valid" in mentions[0], mentions[0]
    report = parse_report(proc.stdout)
    assert report["n"] == report["cpus"] and report["from"] == "affinity mask"


def test_missing_core_reports_error_and_runs_stock(run_py, shim, control, tmp_path):
    """The bootstrap copied alone into a directory without libipex_shim_core.so: one error
    line naming the missing core, then the program runs stock (same stdout as the control)."""
    alone = tmp_path / "libipex_shim.so"
    alone.write_bytes(shim.lib.read_bytes())
    proc = run_py(shim.program("torch_payload.py"), mode="bf16", preload=False,
                  env={"LD_PRELOAD": str(alone)})
    assert proc.returncode == 0, describe(proc)
    assert proc.stdout == control.stdout
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("ipex_shim: error: "), lines[0]
    assert str(tmp_path / "libipex_shim_core.so") in lines[0], lines[0]
