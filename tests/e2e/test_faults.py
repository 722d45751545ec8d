"""Faults: kills, a full disk and hostile targets never tear or lose a config, never make the
shim follow a link when it writes, never hang it, and never stop the program unless
IPEX_STRICT=1 (then one clear message and exit code 2).

- Kills: a few SIGKILLs around the moment the shim writes (the 100-kill figures come from
  scripts/fault_kill.py, whose judge these tests share), and every state
  a kill can leave, taken in one run by programs/fault_snapshot.c before each call that
  changes the config's directory.
- A full disk: a 64 KiB tmpfs, filled.
- Targets: a read-only directory (a read-only bind mount: root ignores permission bits), a
  config replaced while the program runs, IPEX_CONFIG naming a directory, a FIFO, /dev/zero or
  a 1 GB sparse file, symbolic links planted at the target, at the temporary name (by
  fault_snapshot.c, the moment before the shim opens it) and at the merge's lock.
- A planted core: libipex_shim_core.so in the working directory and on LD_LIBRARY_PATH.

Mounting needs root (CAP_SYS_ADMIN); those tests skip with the reason when it is refused.
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import REPO_ROOT, describe, parse_report, shim_lines

sys.path.insert(0, str(REPO_ROOT / "scripts"))
import fault_kill  # noqa: E402

MARKER = "INT8CFG-PROGRAM-STARTS"
OLD_BYTES = fault_kill.OLD_BYTES
STATUS = ("import json, torch; s = json.loads(torch.ops.ipex_shim.status()); "
          "io = dict(l.split(': ') for l in open('/proc/self/io').read().splitlines()); "
          "print('E2E-REPORT:' + json.dumps({'config_state': s['config_state'], "
          "'int8': s.get('int8'), 'read_bytes': int(io['rchar'])}))")


def _cc(source, output):
    if shutil.which("cc") is None:
        pytest.skip("no C compiler (cc)")
    subprocess.run(["cc", "-shared", "-fPIC", "-O1", "-o", str(output), str(source), "-ldl"],
                   check=True, capture_output=True)
    return output


@pytest.fixture(scope="module")
def fault_lib(shim, tmp_path_factory):
    return _cc(shim.program("fault_snapshot.c"), tmp_path_factory.mktemp("fault") / "fault.so")


@pytest.fixture(scope="module")
def rank0_part(shim, torch_available, tmp_path_factory):
    """Rank 0's saved observations, from one uninterrupted run (WORLD_SIZE=2 RANK=0)."""
    case = fault_kill.Case("merge", shim.build_dir)
    case.setup(tmp_path_factory.mktemp("rank0"))
    return case.rank0_part


def _case(shim, name, rank0_part):
    case = fault_kill.Case(name, shim.build_dir)
    case.rank0_part = rank0_part
    return case


def _mount(*args):
    """Runs mount(8); skips the test, saying why, when it is refused."""
    proc = subprocess.run(["mount", *map(str, args)], capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"mount {' '.join(map(str, args))} refused: {proc.stderr.strip()}")


def _umount(path):
    subprocess.run(["umount", "-l", str(path)], capture_output=True)


def _calibrate(shim, config, tmp_path, env=None, strict=False, wait_marker=None):
    """A calibration run of model "a" writing `config`; `wait_marker(process)` runs once the
    program has printed MARKER (the shim has started). Returns (process, stdout, stderr)."""
    extra = {"IPEX_CONFIG": str(config), **(env or {})}
    if strict:
        extra["IPEX_STRICT"] = "1"
    process = subprocess.Popen(
        shim.python_argv(shim.program("int8cfg_model.py"), (tmp_path / "out.pt", "--progress")),
        env=shim.env(mode="calibration", env=extra), cwd=tmp_path, stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines = []
    if wait_marker:
        for line in process.stdout:
            lines.append(line)
            if line.strip() == MARKER:
                wait_marker(process)
                break
    out, err = process.communicate(timeout=120)
    return process, "".join(lines) + out, err


def _errors(stderr):
    return [l for l in shim_lines(stderr) if l.startswith(("ipex_shim: error", "ipex_shim: warn"))]


# --- kills -------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["calibration", "merge"])
def test_sigkill_while_the_config_is_written(shim, rank0_part, tmp_path, name):
    """Four kills at moments drawn uniformly from the program's last line over twice the time
    the shim took to replace the config in a measured run: each leaves the previous config
    byte for byte or a complete new one, and nothing a later run would read."""
    summary, results = fault_kill.kill_many(_case(shim, name, rank0_part), kills=4, seed=13,
                                            window="write", work=tmp_path, measure_runs=1)
    assert not summary["problems"], json.dumps(summary["problems"])
    assert summary["previous"] + summary["new"] == 4, results


@pytest.mark.parametrize("name", ["calibration", "merge"])
def test_every_state_a_kill_can_leave(shim, rank0_part, fault_lib, tmp_path, name):
    """The config's directory before each call that changes it: the previous config (with at
    most a temporary file, the lock and the pending parts beside it) until one rename puts
    the complete config in place, with the merged parts already gone."""
    case = _case(shim, name, rank0_part)
    config = case.prepare(tmp_path)
    snapshots = tmp_path / "snapshots"
    snapshots.mkdir()
    argv, env = case.command(tmp_path, config)
    env.update(LD_PRELOAD=f"{fault_lib} {env['LD_PRELOAD']}", FAULT_DIR=str(config.parent),
               FAULT_SNAPSHOTS=str(snapshots))
    proc = subprocess.run(argv, env=env, cwd=tmp_path, capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, timeout=120)
    assert proc.returncode == 0, describe(proc)
    outcomes = []
    for snapshot in sorted(snapshots.iterdir(), key=lambda p: int(p.name.split(".")[1])):
        pid = int(snapshot.name.split(".")[0])
        outcome, _, parts, problem = fault_kill.judge(case, snapshot / "config.json", pid)
        assert outcome in ("previous", "new"), (snapshot.name, outcome, problem,
                                                sorted(os.listdir(snapshot)))
        outcomes.append(outcome)
    final = fault_kill.judge(case, config, pid=0)  # no temporary file may remain
    assert final[0] == "new" and final[2] == 0, final
    assert sorted(os.listdir(config.parent)) == ["config.json"], os.listdir(config.parent)
    # The writer's steps (create, write, rename, and for the merge the parts' removal) were
    # all seen, in order: the config changed once, at the end.
    assert len(outcomes) >= (3 if name == "calibration" else 7), outcomes
    assert outcomes[0] == "previous" and outcomes.count("new") <= 1, outcomes


def test_restarted_job_does_not_merge_the_failed_attempts_parts(shim, rank0_part, tmp_path):
    """A part left by attempt 0 of a torchrun job (its last rank was killed) is not merged by
    the restarted attempt's ranks (TORCHELASTIC_RESTART_COUNT=1): they keep their own names."""
    case = _case(shim, "merge", rank0_part)
    config = case.prepare(tmp_path)  # config.json.part.run.0: attempt 0's rank 0
    argv, env = case.command(tmp_path, config)
    env["TORCHELASTIC_RESTART_COUNT"] = "1"
    proc = subprocess.run(argv, env=env, cwd=tmp_path, capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, timeout=120)
    assert proc.returncode == 0, describe(proc)
    assert config.read_bytes() == OLD_BYTES
    assert sorted(os.listdir(config.parent)) == [
        "config.json", "config.json.lock", "config.json.part.run.0",
        "config.json.part.run.restart1.1"], os.listdir(config.parent)
    assert shim_lines(proc.stderr) == [
        "ipex_shim: calibration: rank 1 of 2: observations saved; the last rank to finish "
        f"writes {config}"], proc.stderr


# --- a full disk -------------------------------------------------------------------------------

@pytest.fixture
def full_disk(tmp_path):
    """A 64 KiB tmpfs holding the previous config and filled to the last byte."""
    directory = tmp_path / "disk"
    directory.mkdir()
    _mount("-t", "tmpfs", "-o", "size=64k", "tmpfs", directory)
    try:
        config = directory / "config.json"
        config.write_bytes(OLD_BYTES)
        filler = os.open(directory / "filler", os.O_WRONLY | os.O_CREAT, 0o644)
        try:
            while True:
                os.write(filler, b"\0" * 512)
        except OSError:
            pass
        finally:
            os.close(filler)
        yield config
    finally:
        _umount(directory)


@pytest.mark.parametrize("strict", [False, True], ids=["default", "strict"])
def test_full_disk_keeps_the_previous_config(shim, torch_available, full_disk, tmp_path, strict):
    config = full_disk
    process, out, err = _calibrate(shim, config, tmp_path, strict=strict)
    assert config.read_bytes() == OLD_BYTES
    assert process.returncode == (2 if strict else 0), (out, err)
    assert "END" in out.splitlines(), (out, err)  # the program ran to its end
    errors = _errors(err)
    assert len(errors) == (2 if strict else 1), err
    assert errors[0].startswith("ipex_shim: error: calibration: the config was not written: "
                                f"cannot write {config}.tmp."), errors[0]
    assert errors[0].endswith(": No space left on device (a previous file at that path is "
                              "unchanged)"), errors[0]
    if strict:
        assert errors[1] == "ipex_shim: error: IPEX_STRICT=1: the config was not written; " \
                            "exit code 2", err
    assert config.read_bytes() == OLD_BYTES
    assert sorted(os.listdir(config.parent)) == ["config.json", "filler"]


# --- targets -----------------------------------------------------------------------------------

@pytest.fixture
def read_only_directory(tmp_path):
    """A directory holding the previous config, bind-mounted read-only onto itself."""
    directory = tmp_path / "ro"
    directory.mkdir()
    (directory / "config.json").write_bytes(OLD_BYTES)
    _mount("--bind", directory, directory)
    try:
        yield directory
    finally:
        _umount(directory)


def _remount_read_only(directory):
    subprocess.run(["mount", "-o", "remount,ro,bind", str(directory)], check=True,
                   capture_output=True)


def test_read_only_directory_at_start(shim, torch_available, read_only_directory, tmp_path):
    """Read-only before the run: calibration says so at start and the program runs stock."""
    _remount_read_only(read_only_directory)
    config = read_only_directory / "config.json"
    process, out, err = _calibrate(shim, config, tmp_path)
    assert process.returncode == 0, (out, err)
    assert _errors(err) == [
        f"ipex_shim: warning: calibration does not start: cannot write {config}: cannot create "
        f"temporary file in {read_only_directory}: Read-only file system; the program runs on "
        "stock PyTorch"], err
    assert config.read_bytes() == OLD_BYTES


@pytest.mark.parametrize("strict", [False, True], ids=["default", "strict"])
def test_read_only_directory_by_the_end(shim, torch_available, read_only_directory, tmp_path,
                                        strict):
    """Made read-only while the program runs: the write at exit fails with one message naming
    the path and the cause, the previous config stays; exit 0, or 2 with IPEX_STRICT=1."""
    config = read_only_directory / "config.json"
    process, out, err = _calibrate(shim, config, tmp_path, strict=strict,
                                   wait_marker=lambda _: _remount_read_only(read_only_directory))
    assert process.returncode == (2 if strict else 0), (out, err)
    assert "END" in out.splitlines(), (out, err)
    errors = _errors(err)
    assert errors[0] == (
        "ipex_shim: error: calibration: the config was not written: cannot create temporary "
        f"file in {read_only_directory}: Read-only file system (a previous file at that path "
        "is unchanged)"), err
    assert len(errors) == (2 if strict else 1), err
    assert config.read_bytes() == OLD_BYTES
    assert os.listdir(read_only_directory) == ["config.json"]


@pytest.fixture(scope="module")
def int8_config(shim, torch_available, tmp_path_factory):
    """A config calibration wrote for model "a"."""
    directory = tmp_path_factory.mktemp("int8_config")
    config = directory / "config.json"
    process, out, err = _calibrate(shim, config, directory)
    assert process.returncode == 0 and config.is_file(), (out, err)
    return config


def test_int8_config_replaced_while_running_is_not_read_again(shim, int8_config, tmp_path):
    """int8 mode reads its config once, at start: the same file replaced by garbage while the
    program runs changes nothing in this run (same output as an undisturbed run)."""
    def run(tag, disturb):
        config = tmp_path / f"{tag}.json"
        shutil.copyfile(int8_config, config)
        process = subprocess.Popen(
            shim.python_argv(shim.program("int8cfg_model.py"), (tmp_path / f"{tag}.pt",)),
            env=shim.env(mode="int8", env={"IPEX_CONFIG": str(config)}), cwd=tmp_path,
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        first = process.stdout.readline()
        assert first.strip() == MARKER, first
        if disturb:
            replacement = tmp_path / "replacement"
            replacement.write_bytes(b"\x00{[not a config")
            os.replace(replacement, config)
        out, err = process.communicate(timeout=120)
        assert process.returncode == 0, (out, err)
        return parse_report(out)["status"], err

    import torch
    undisturbed, _ = run("undisturbed", False)
    disturbed, err = run("disturbed", True)
    assert undisturbed["config_state"] == "applied", undisturbed
    assert undisturbed["int8"]["entries"] == 8, undisturbed
    assert disturbed == undisturbed
    assert _errors(err) == [], err
    assert torch.equal(torch.load(tmp_path / "disturbed.pt")["out"],
                       torch.load(tmp_path / "undisturbed.pt")["out"])


@pytest.mark.parametrize("replacement", ["symlink", "directory"])
def test_calibration_target_replaced_while_running(shim, torch_available, tmp_path,
                                                   replacement):
    """The config path replaced after the shim started: by a link to another file (the shim
    replaces the link with its config and leaves that file alone), or by a directory (the
    write fails with one message and the directory is left as it is)."""
    directory = tmp_path / "config"
    directory.mkdir()
    config = directory / "config.json"
    config.write_bytes(OLD_BYTES)
    victim = tmp_path / "victim"
    victim.write_bytes(b"a file the link points at\n")

    def replace(_):
        config.unlink()
        if replacement == "symlink":
            config.symlink_to(victim)
        else:
            config.mkdir()
            (config / "inside").write_bytes(b"x")

    process, out, err = _calibrate(shim, config, tmp_path, wait_marker=replace)
    assert process.returncode == 0, (out, err)
    assert victim.read_bytes() == b"a file the link points at\n"
    if replacement == "symlink":
        assert not config.is_symlink()
        assert fault_kill.complete_config(config.read_bytes(), 1) is None
        assert _errors(err) == [], err
    else:
        assert os.listdir(config) == ["inside"]
        assert _errors(err) == [
            "ipex_shim: error: calibration: the config was not written: cannot replace "
            f"{config} with {config}.tmp.{process.pid}." + _errors(err)[0].split(
                f"{config}.tmp.{process.pid}.")[1][:16] + ": Is a directory (a previous file at "
            "that path is unchanged)"], err
    assert sorted(os.listdir(directory)) == ["config.json"]


def _special_target(kind, tmp_path):
    if kind == "directory":
        path = tmp_path / "a_directory"
        path.mkdir()
        return path, "not a regular file (a directory)"
    if kind == "fifo":
        path = tmp_path / "a_fifo"
        os.mkfifo(path)
        return path, "not a regular file (a FIFO)"
    if kind == "dev_zero":
        return Path("/dev/zero"), "not a regular file (a character device)"
    path = tmp_path / "sparse"
    with open(path, "wb") as sparse:
        sparse.truncate(1 << 30)
    return path, f"larger than 64 MiB ({1 << 30} bytes); not read"


@pytest.mark.parametrize("kind", ["directory", "fifo", "dev_zero", "sparse_1gb"])
def test_config_that_is_not_a_readable_file(shim, torch_available, tmp_path, kind):
    """int8 mode with IPEX_CONFIG naming a directory, a FIFO (no writer: an open that waits
    would hang), /dev/zero (never ends) or a 1 GB sparse file: refused before reading, one
    warning naming the path and why, the program runs (a timeout guards against a hang)."""
    path, problem = _special_target(kind, tmp_path)
    proc = shim.run_py(STATUS, mode="int8", env={"IPEX_CONFIG": str(path)}, timeout=60)
    assert proc.returncode == 0, describe(proc)
    assert _errors(proc.stderr) == [
        f"ipex_shim: warning: IPEX_CONFIG={path}: {problem}; every op runs in fp32"], proc.stderr
    report = parse_report(proc.stdout)
    assert report["config_state"].startswith("not used: "), report
    # Nothing near the 64 MiB bound was read (Python's own reads here are a few MiB).
    assert report["read_bytes"] < 32 << 20, report


def test_config_fifo_with_strict_stops(shim, torch_available, tmp_path):
    path, problem = _special_target("fifo", tmp_path)
    proc = shim.run_py(STATUS, mode="int8", env={"IPEX_CONFIG": str(path), "IPEX_STRICT": "1"},
                       timeout=60)
    assert proc.returncode == 2, describe(proc)
    lines = _errors(proc.stderr)
    assert len(lines) == 2 and lines[0].startswith("ipex_shim: error: ") and problem in lines[0], \
        proc.stderr
    assert lines[1] == "ipex_shim: error: IPEX_STRICT=1: stopping (exit code 2)", proc.stderr


def test_calibration_target_symlink_is_replaced_not_followed(shim, torch_available, tmp_path):
    directory = tmp_path / "config"
    directory.mkdir()
    victim = tmp_path / "victim"
    victim.write_bytes(OLD_BYTES)
    config = directory / "config.json"
    config.symlink_to(victim)
    process, out, err = _calibrate(shim, config, tmp_path)
    assert process.returncode == 0, (out, err)
    assert victim.read_bytes() == OLD_BYTES
    assert not config.is_symlink() and fault_kill.complete_config(config.read_bytes(), 1) is None
    assert os.listdir(directory) == ["config.json"]


@pytest.mark.parametrize("times,strict", [(1, False), (1000, False), (1000, True)],
                         ids=["once", "every_name", "every_name_strict"])
def test_link_planted_at_the_temporary_name(shim, torch_available, fault_lib, tmp_path, times,
                                            strict):
    """A link to another file planted at the temporary name the moment before the shim opens
    it (once, or at every name it tries): the shim never opens through it; it tries another
    name, or gives up with one message (exit 0, or 2 with IPEX_STRICT=1)."""
    directory = tmp_path / "config"
    directory.mkdir()
    config = directory / "config.json"
    config.write_bytes(OLD_BYTES)
    victim = tmp_path / "victim"
    victim.write_bytes(b"a file the link points at\n")
    env = {"LD_PRELOAD": f"{fault_lib} {shim.lib}", "FAULT_DIR": str(directory),
           "FAULT_PLANT_LINK": str(victim), "FAULT_PLANT_TIMES": str(times),
           "FAULT_PLANT_AFTER": "1"}  # the first is the start's check; the next, the write
    process, out, err = _calibrate(shim, config, tmp_path, env=env, strict=strict)
    assert victim.read_bytes() == b"a file the link points at\n"
    links = sorted(n for n in os.listdir(directory) if (directory / n).is_symlink())
    assert len(links) == min(times, 100), links  # the planted links, left as they are
    assert all(n.startswith(f"config.json.tmp.{process.pid}.") for n in links), links
    assert "END" in out.splitlines(), (out, err)
    if times == 1:
        assert process.returncode == 0, (out, err)
        assert fault_kill.complete_config(config.read_bytes(), 1) is None
        assert _errors(err) == [], err
    else:
        assert process.returncode == (2 if strict else 0), (out, err)
        assert config.read_bytes() == OLD_BYTES
        errors = _errors(err)
        assert errors[0] == (
            "ipex_shim: error: calibration: the config was not written: cannot create temporary "
            f"file in {directory}: every name tried already exists (a previous file at that "
            "path is unchanged)"), err
        assert len(errors) == (2 if strict else 1), err
    assert sorted(os.listdir(directory)) == sorted(["config.json", *links])


def test_links_planted_at_the_merge_lock_and_part(shim, rank0_part, tmp_path):
    """The last rank finds links at its part's name and at the lock's: the part replaces its
    link, the lock's link is not followed (nothing is created where it points), the merge is
    left for a later run with one message, and the program exits 0."""
    case = _case(shim, "merge", rank0_part)
    config = case.prepare(tmp_path)
    victims = {name: tmp_path / f"victim_{name}" for name in ("lock", "part")}
    victims["part"].write_bytes(b"a file the part's link points at\n")
    (config.parent / "config.json.lock").symlink_to(victims["lock"])
    (config.parent / "config.json.part.run.1").symlink_to(victims["part"])
    argv, env = case.command(tmp_path, config)
    proc = subprocess.run(argv, env=env, cwd=tmp_path, capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, timeout=120)
    assert proc.returncode == 0, describe(proc)
    assert not victims["lock"].exists()
    assert victims["part"].read_bytes() == b"a file the part's link points at\n"
    part = config.parent / "config.json.part.run.1"
    assert not part.is_symlink() and fault_kill.complete_config(part.read_bytes(), 2) is None
    assert config.read_bytes() == OLD_BYTES
    assert _errors(proc.stderr) == [
        f"ipex_shim: error: calibration: the config was not written: rank 1: observations "
        f"saved, but cannot lock {config}.lock to merge them: it is a symbolic link, not "
        "followed (a previous file at that path is unchanged)"], proc.stderr


# --- a planted core ----------------------------------------------------------------------------

PLANTED_CORE = r"""
#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>
__attribute__((constructor)) static void planted(void) {
  const char* marker = getenv("PLANTED_MARKER");
  if (marker) close(open(marker, O_WRONLY | O_CREAT, 0644));
}
"""


def test_planted_core_is_never_loaded(shim, torch_available, tmp_path):
    """A libipex_shim_core.so in the working directory and another on LD_LIBRARY_PATH, each
    writing a marker file when loaded: neither is, and the real core runs."""
    source = tmp_path / "planted.c"
    source.write_text(PLANTED_CORE)
    cwd, library_path = tmp_path / "cwd", tmp_path / "lib"
    for directory in (cwd, library_path):
        directory.mkdir()
        _cc(source, directory / "libipex_shim_core.so")
    marker = tmp_path / "planted_core_was_loaded"
    code = ("import json, torch; s = json.loads(torch.ops.ipex_shim.status()); "
            "maps = [l.split()[-1] for l in open('/proc/self/maps') if 'ipex_shim_core' in l]; "
            "print('E2E-REPORT:' + json.dumps({'mode': s['mode'], 'active': s['active'], "
            "'cores': sorted(set(maps))}))")
    proc = shim.run_py(code, mode="fp32", cwd=cwd,
                       env={"LD_LIBRARY_PATH": f".:{library_path}", "PLANTED_MARKER": marker})
    assert not marker.exists(), "a planted libipex_shim_core.so was loaded:\n" + describe(proc)
    assert proc.returncode == 0, describe(proc)
    report = parse_report(proc.stdout)
    assert report == {"mode": "fp32", "active": True, "cores": [str(shim.core)]}, report
