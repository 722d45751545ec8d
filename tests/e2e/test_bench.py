"""scripts/bench.py's rows for torch 2.x's own alternatives and its time to first result.

One quick run (resnet18 on 64x64 images, batch 1) of stock_fp32, compile_fp32, pt2e_int8 and
shim_fp32. On torch 2.x the torch.compile and PT2E rows run and agree with stock; on an older
torch they are reported skipped with the reason, never failed. Every row that ran has a time
to first result that contains the worker's own preparation and first call, and the table
prints it. Every row is also paired with stock_fp32 round by round (`--paired`). And
`--calibration-cost`'s rows: one per range algorithm against the same script run stock."""
import json
import os
import statistics
import subprocess
import sys

import torch

from conftest import REPO_ROOT, clean_env

TORCH2 = int(torch.__version__.split(".")[0]) >= 2
VARIANTS = ["stock_fp32", "compile_fp32", "pt2e_int8", "shim_fp32"]


def test_bench_torch2_rows_and_first_result(shim, tmp_path):
    out = tmp_path / "bench.json"
    argv = [sys.executable, str(REPO_ROOT / "scripts" / "bench.py"), "--quick",
            "--model", "resnet18", "--image-size", "64", "--batch", "1",
            "--variants", ",".join(VARIANTS), "--lib", str(shim.lib),
            "--python", sys.executable, "--json", str(out), "--png", str(tmp_path / "bench.png"),
            "--paired", "stock_fp32"]
    proc = subprocess.run(argv, env=clean_env(), capture_output=True, text=True, timeout=1500)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    rows = {r["variant"]: r for r in json.loads(out.read_text())["results"][0]["rows"]}
    assert list(rows) == VARIANTS

    for v in ("compile_fp32", "pt2e_int8"):
        if TORCH2:
            assert rows[v]["state"] == "ok", rows[v]
        else:
            assert rows[v]["state"] == "skipped", rows[v]
            assert "needs torch 2.x: torch.compile/PT2E" in rows[v]["error"], rows[v]
            assert "SKIPPED: needs torch 2.x" in [l for l in proc.stdout.splitlines()
                                                   if l.startswith(v)][0]
    if TORCH2:
        assert rows["compile_fp32"]["cosine"] > 0.9999, rows["compile_fp32"]
        assert rows["pt2e_int8"]["cosine"] > 0.95, rows["pt2e_int8"]
        assert any("X86InductorQuantizer" in n for n in rows["pt2e_int8"]["notes"])

    header = next(l for l in proc.stdout.splitlines() if l.startswith("variant "))
    assert header.split()[-2:] == ["first", "s"], header
    for v, r in rows.items():
        if r["state"] != "ok":
            continue
        # Spawn to the end of the first call contains the worker's own load, preparation and
        # first call (measured inside it), plus interpreter start and import torch.
        assert r["first_s"] > r["prep_s"] + r["first_call_s"] > 0, r
        line = next(l for l in proc.stdout.splitlines() if l.startswith(v + " "))
        assert line.split()[-1] == format(r["first_s"], ".1f"), line

    # --paired: per round, stock's median over the row's (>1: the row was faster that round).
    stock_rounds = rows["stock_fp32"]["lat_ms"]
    assert "paired" not in rows["stock_fp32"]
    for v, r in rows.items():
        if v == "stock_fp32" or r["state"] != "ok":
            continue
        expected = [statistics.median(a) / statistics.median(b)
                    for a, b in zip(stock_rounds, r["lat_ms"])]
        paired = r["paired"]
        assert paired["anchor"] == "stock_fp32"
        assert paired["rounds"] == len(paired["round_ratios"]) == len(expected) == 2, paired
        assert all(abs(x - y) < 1e-9 * y for x, y in zip(paired["round_ratios"], expected)), paired
        assert paired["faster_rounds"] == sum(x > 1.0 for x in expected)
        line = next(l for l in proc.stdout.splitlines()
                    if l.startswith(v + " ") and l.rstrip().endswith("of 2"))
        assert line.split()[1] == format(statistics.median(expected), ".3f") + "x", line


def test_calibration_cost_times_each_algorithm(shim, tmp_path):
    """--calibration-cost: every range algorithm's run writes a config of its own algorithm,
    with as many entries as the others, and each run's whole time holds its passes and its
    write (the parts are timed inside the run, the whole from spawn to exit)."""
    out = tmp_path / "cost.json"
    argv = [sys.executable, str(REPO_ROOT / "scripts" / "bench.py"), "--calibration-cost",
            "--model", "resnet18", "--image-size", "64", "--batch", "1", "--calib-batches", "2",
            "--bn-batches", "1", "--rounds", "1", "--lib", str(shim.lib),
            "--python", sys.executable, "--json", str(out)]
    proc = subprocess.run(argv, env=clean_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    result = json.loads(out.read_text())["results"][0]
    assert result["errors"] == {}
    summary = result["summary"]
    assert list(summary) == ["stock", "min_max", "mse", "percentile"]
    assert summary["stock"]["write_s"] is None and summary["stock"]["entries"] is None
    assert summary["stock"]["whole_s"] > summary["stock"]["passes_s"] > 0
    entries = {summary[a]["entries"] for a in ("min_max", "mse", "percentile")}
    assert len(entries) == 1 and entries.pop() > 20, summary  # resnet18's convs, bn, relu, ...
    for algorithm in ("min_max", "mse", "percentile"):
        s = summary[algorithm]
        assert s["whole_s"] > s["passes_s"] + s["write_s"], s
        assert s["passes_s"] > 0 and s["write_s"] > 0, s
        if os.access("/usr/bin/time", os.X_OK):  # peak RSS from GNU time (not in the chroot)
            assert s["max_rss_mib"] > 0, s
        else:
            assert s["max_rss_mib"] is None and "peak RSS not measured" in proc.stdout, s
        line = next(l for l in proc.stdout.splitlines() if l.startswith(algorithm + " "))
        fields = line.split()
        assert fields[1] == format(s["whole_s"], ".2f"), line
        assert fields[2] == format(s["whole_s"] / summary["stock"]["whole_s"], ".2f"), line


def test_calibration_cost_without_the_library(tmp_path):
    """A library that is not there leaves the stock row, says why the others are missing, and
    is not counted as a failed run."""
    out = tmp_path / "cost.json"
    missing = tmp_path / "no" / "libipex_shim.so"
    argv = [sys.executable, str(REPO_ROOT / "scripts" / "bench.py"), "--calibration-cost",
            "--model", "resnet18", "--image-size", "64", "--batch", "1", "--calib-batches", "1",
            "--bn-batches", "1", "--rounds", "1", "--lib", str(missing),
            "--python", sys.executable, "--json", str(out)]
    proc = subprocess.run(argv, env=clean_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert "calibration rows skipped: %s does not exist" % missing in proc.stdout
    result = json.loads(out.read_text())["results"][0]
    assert list(result["summary"]) == ["stock"] and result["errors"] == {}, result


def test_calibration_cost_timeout_leaves_no_worker(shim, tmp_path):
    """A run past --timeout is killed with the GNU time wrapper around it: killing the wrapper
    alone left its child, the worker, running."""
    out = tmp_path / "cost.json"
    seed = 91731  # marks this test's workers: the seed is in their command line
    argv = [sys.executable, str(REPO_ROOT / "scripts" / "bench.py"), "--calibration-cost",
            "--model", "resnet18", "--image-size", "64", "--batch", "1", "--calib-batches", "1",
            "--bn-batches", "1", "--rounds", "1", "--timeout", "0.2", "--seed", str(seed),
            "--lib", str(shim.lib), "--python", sys.executable, "--json", str(out)]
    proc = subprocess.run(argv, env=clean_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 1, proc.stdout[-4000:] + proc.stderr[-4000:]
    errors = json.loads(out.read_text())["results"][0]["errors"]
    assert sorted(errors) == ["min_max", "mse", "percentile", "stock"], errors
    assert all("timed out after 0 s" in why for why in errors.values()), errors
    left = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open("/proc/%s/cmdline" % pid, "rb") as f:
                command = f.read().decode("utf-8", "replace")
        except OSError:
            continue
        if "--worker" in command and '"seed": %d' % seed in command:
            left.append(pid)
    assert left == [], "workers still running: %s" % left


def bench_args(argv):
    sys.path.insert(0, str(REPO_ROOT / "scripts"))
    try:
        import bench
    finally:
        sys.path.pop(0)
    return bench.parse_args(argv)


def test_quick_fills_only_the_options_not_given():
    quick = bench_args(["--quick"])
    # Four warm-up calls: the shim learns its fusions over its first four passes.
    assert (quick.rounds, quick.iters, quick.warmup, quick.round_warmup) == (2, 2, 4, 1)
    assert quick.batch == 2 and quick.setup_timeout == 120 and quick.timeout == 900
    # An option given with its default value is kept (it used to be replaced by --quick's).
    given = bench_args(["--quick", "--rounds", "5", "--warmup", "3", "--setup-timeout", "900"])
    assert (given.rounds, given.warmup, given.setup_timeout) == (5, 3, 900)
    plain = bench_args([])
    assert (plain.rounds, plain.iters, plain.warmup, plain.setup_timeout) == (5, 5, 3, 900)
    assert bench_args(["--quick", "--timeout", "100"]).setup_timeout == 100
