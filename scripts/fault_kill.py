#!/usr/bin/python3
"""SIGKILL at random moments of calibration and of the torchrun merge, and what it leaves.

usage: scripts/fault_kill.py [--kills N] [--only calibration|merge] [--window run|exit]
                             [--build DIR] [--seed S] [--json FILE]

calibration: tests/e2e/programs/int8cfg_model.py (model "a", --passes 20) runs with
    IPEX_MODE=calibration and IPEX_CONFIG=<dir>/config.json, where a previous config lies.
merge: the last rank of a two-rank job (WORLD_SIZE=2 RANK=1, int8cfg_ranks.py) runs beside
    rank 0's saved observations (<config>.part.run.0, made once by an uninterrupted rank 0),
    so at its exit it merges both into the config (shim/int8_calibration.cpp write_as_rank).

Each kill comes at a moment drawn uniformly over the run's duration (--window run; the
duration is the median of three uninterrupted runs, measured first), or uniformly over the
part after the program's last line, where Python exits and the shim writes (--window exit),
or uniformly over twice the time from the last line to the moment the config was replaced
in the measured runs (--window write: the shim's own writing, tens of milliseconds, and as
long again after it).
After each kill the directory is judged:
    previous   the config is the previous file, byte for byte;
    new        the config is complete: valid JSON, every entry of model "a" with the
               fields inference reads, and (merge) the ranges of both ranks;
    torn       anything else: a must-not-happen, counted, and the script exits 1.
Beside it, only what no later run reads may remain: the killed process's temporary files
(<name>.tmp.<pid>.<random>), the merge's lock file, and (merge, while the config is the
previous one) the ranks' parts, which the next run of the last rank merges. Parts beside a
merged config would be merged again by a later job: counted as stale, a must-not-happen.

A run that ends before its drawn moment is judged too but not counted as a kill: its
duration joins the estimate (the machine's load changes) and the moment is drawn again, so
N kills are N processes that SIGKILL ended. Prints one line per run with --verbose, and a
summary per case; exits 0 when nothing was torn or stale. The build is IPEX_SHIM_BUILD_DIR, else <repo>/build.
"""
import argparse
import json
import math
import os
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PROGRAMS = REPO / "tests" / "e2e" / "programs"
PYTHON = "/usr/bin/python3"
OLD_BYTES = b'[{"id": 0, "note": "the previous config, which no kill may damage"}]\n'
MODEL_A_NAMES = sorted(["Convolution", "BatchNorm", "Relu", "MaxPooling", "Convolution", "Relu",
                        "AdaptivePooling", "Linear"])
CALIBRATION_PASSES = 20
RANK_PASSES = 2  # int8cfg_ranks.py's PASSES
ENTRY_FIELDS = {"id": int, "name": str, "key": str, "algorithm": str, "weight_granularity": str,
                "inputs_scale": list, "outputs_scale": list, "inputs_uint8_used": list,
                "outputs_uint8_used": list, "quantized": bool, "calls": int}


def shim_env(build, extra):
    env = {k: v for k, v in os.environ.items()
           if k != "LD_PRELOAD" and not k.startswith("IPEX_") and k != "OMP_NUM_THREADS"
           and not k.startswith("TORCHELASTIC_")}
    env.update({"LD_PRELOAD": str(build / "libipex_shim.so"), "IPEX_MODE": "calibration"})
    env.update(extra)
    return env


class Case:
    """One kind of run: how to prepare its directory, its argv and environment, and what a
    complete config from it is."""

    def __init__(self, name, build):
        self.name = name
        self.build = build
        self.rank0_part = None

    def prepare(self, trial):
        """trial/config/config.json holds the previous bytes (and for the merge, rank 0's
        part); returns the config path."""
        directory = trial / "config"
        directory.mkdir(parents=True)
        config = directory / "config.json"
        config.write_bytes(OLD_BYTES)
        if self.name == "merge":
            shutil.copyfile(self.rank0_part, directory / "config.json.part.run.0")
        return config

    def command(self, trial, config, rank=1):
        if self.name == "calibration":
            argv = [PYTHON, str(PROGRAMS / "int8cfg_model.py"), str(trial / "out.pt"),
                    "--passes", str(CALIBRATION_PASSES), "--progress"]
            env = shim_env(self.build, {"IPEX_CONFIG": str(config)})
        else:
            reports = trial / "reports"
            reports.mkdir(exist_ok=True)
            argv = [PYTHON, str(PROGRAMS / "int8cfg_ranks.py"), str(reports)]
            env = shim_env(self.build, {"IPEX_CONFIG": str(config), "WORLD_SIZE": "2",
                                        "RANK": str(rank)})
        return argv, env

    def expected_calls(self):
        return CALIBRATION_PASSES if self.name == "calibration" else 2 * RANK_PASSES

    def setup(self, work):
        """For the merge: rank 0's observations, from one uninterrupted run."""
        if self.name != "merge":
            return
        trial = work / "rank0"
        directory = trial / "config"
        directory.mkdir(parents=True)
        config = directory / "config.json"
        argv, env = self.command(trial, config, rank=0)
        proc = subprocess.run(argv, env=env, cwd=trial, stdin=subprocess.DEVNULL,
                              capture_output=True, text=True, timeout=300)
        self.rank0_part = directory / "config.json.part.run.0"
        if proc.returncode != 0 or not self.rank0_part.is_file():
            sys.exit(f"rank 0 did not save its part: exit {proc.returncode}\n{proc.stderr}")


def complete_config(text, expected_calls):
    """None when `text` is a complete config of model "a" with every entry's calls equal to
    `expected_calls`, else what is wrong with it."""
    try:
        entries = json.loads(text)
    except ValueError as error:
        return f"not JSON: {error}"
    if not isinstance(entries, list):
        return "not a list"
    for entry in entries:
        if not isinstance(entry, dict):
            return "an entry is not an object"
        for field, kind in ENTRY_FIELDS.items():
            if not isinstance(entry.get(field), kind):
                return f"entry {entry.get('id')}: {field} missing or not {kind.__name__}"
        for field in ("inputs_scale", "outputs_scale"):
            if not all(isinstance(v, (int, float)) and math.isfinite(v) and v > 0
                       for v in entry[field]):
                return f"entry {entry['id']}: {field} {entry[field]}"
        if entry["calls"] != expected_calls:
            return f"entry {entry['id']}: calls {entry['calls']}, expected {expected_calls}"
    names = sorted(e["name"] for e in entries)
    if names != MODEL_A_NAMES:
        return f"entries {names}"
    return None


TEMPORARY = re.compile(r"^config\.json(\.part\.run\.\d)?\.tmp\.(\d+)\.[0-9a-f]{16}$")
PART = re.compile(r"^config\.json\.part\.run\.(\d)$")


def judge(case, config, pid):
    """(outcome, temporaries left, parts left, problem or None) of the config's directory."""
    directory = config.parent
    try:
        text = config.read_bytes()
    except FileNotFoundError:
        return "torn", 0, 0, "the config is gone"
    if text == OLD_BYTES:
        outcome, problem = "previous", None
    else:
        problem = complete_config(text, case.expected_calls())
        outcome = "torn" if problem else "new"
    temporaries = parts = 0
    for name in sorted(os.listdir(directory)):
        if name == "config.json":
            continue
        temporary = TEMPORARY.match(name)
        if temporary and int(temporary.group(2)) == pid:
            temporaries += 1
        elif case.name == "merge" and name == "config.json.lock":
            pass
        elif case.name == "merge" and PART.match(name):
            parts += 1
            part = complete_config((directory / name).read_bytes(), RANK_PASSES)
            if part:
                problem = problem or f"part {name} is not a complete config: {part}"
        else:
            problem = problem or f"unexpected file {name}"
    if outcome == "new" and parts:
        problem = f"{parts} parts left beside the merged config: a later job would merge them"
        outcome = "stale"
    if problem and outcome not in ("torn", "stale"):
        outcome = "torn"
    return outcome, temporaries, parts, problem


class Run:
    """A run whose stdout is read as it comes; `ended_at` is when its last line came."""

    def __init__(self, argv, env, cwd):
        self.started = time.monotonic()
        self.end_line_at = None
        self.process = subprocess.Popen(argv, env=env, cwd=cwd, stdin=subprocess.DEVNULL,
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                        text=True)
        self.end = threading.Event()
        self.stderr = []
        threading.Thread(target=self._read, daemon=True).start()
        threading.Thread(target=lambda: self.stderr.extend(self.process.stderr),
                         daemon=True).start()

    def _read(self):
        for line in self.process.stdout:
            if line.strip() == "END":
                self.end_line_at = time.monotonic()
                self.end.set()
        self.end.set()

    def finish(self, timeout=300):
        code = self.process.wait(timeout=timeout)
        return code, time.monotonic() - self.started


def measure(case, work, runs=3, until_written=False):
    """Median duration of uninterrupted runs, and of their part after the last line (with
    `until_written`, twice that part up to the moment the config was replaced)."""
    durations, tails = [], []
    for index in range(runs):
        trial = work / f"measure{index}"
        config = case.prepare(trial)
        argv, env = case.command(trial, config)
        before = config.stat().st_ino
        run = Run(argv, env, trial)
        replaced = []

        def watch():
            while run.process.poll() is None and not replaced:
                try:
                    if config.stat().st_ino != before:
                        replaced.append(time.monotonic())
                except FileNotFoundError:
                    pass
                time.sleep(0.001)

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        code, duration = run.finish()
        watcher.join()
        outcome, _, _, problem = judge(case, config, run.process.pid)
        if code != 0 or outcome != "new":
            sys.exit(f"an uninterrupted {case.name} run failed: exit {code}, {outcome} "
                     f"({problem})\n{''.join(run.stderr)}")
        durations.append(duration)
        if until_written and replaced:
            tails.append(2 * (replaced[0] - run.end_line_at))
        else:
            tails.append(duration - (run.end_line_at - run.started))
        shutil.rmtree(trial)
    return statistics.median(durations), statistics.median(tails)


def kill_once(case, work, index, rng, window, duration, tail):
    trial = work / f"kill{index}"
    config = case.prepare(trial)
    argv, env = case.command(trial, config)
    run = Run(argv, env, trial)
    if window == "run":
        delay = rng.uniform(0.0, duration)
        time.sleep(max(0.0, run.started + delay - time.monotonic()))
    else:
        run.end.wait(timeout=300)
        delay = rng.uniform(0.0, tail)
        time.sleep(delay)
    after_end = run.end_line_at is not None
    run.process.send_signal(signal.SIGKILL)
    code, seconds = run.finish()
    outcome, temporaries, parts, problem = judge(case, config, run.process.pid)
    shutil.rmtree(trial)
    tail_seconds = seconds - (run.end_line_at - run.started) if after_end else None
    return {"delay": round(delay, 4), "exit": code, "after_last_line": after_end,
            "outcome": outcome, "temporaries": temporaries, "parts": parts, "problem": problem,
            "seconds": seconds, "tail_seconds": tail_seconds}


def kill_many(case, kills, seed, window, work, verbose=False, measure_runs=3):
    """Kills `kills` runs of `case`; returns the summary and the list of results."""
    rng = random.Random(seed)
    if case.rank0_part is None:
        case.setup(work)
    duration, tail = measure(case, work, measure_runs, until_written=(window == "write"))
    # A run that ends before its moment comes is judged too, but not counted as a kill: its
    # duration joins the estimate (the machine's load changes), and the draw is made again.
    results, ended_first, seen, seen_tails = [], [], [duration], [tail]
    index = 0
    while len(results) < kills:
        result = kill_once(case, work, index, rng, window, duration, tail)
        index += 1
        if verbose:
            print(f"{case.name} run {index}: {json.dumps(result)}", flush=True)
        if result["exit"] == -signal.SIGKILL:
            results.append(result)
            continue
        ended_first.append(result)
        seen.append(result["seconds"])
        if result["tail_seconds"] is not None and window == "exit":
            seen_tails.append(result["tail_seconds"])
        duration, tail = statistics.median(seen[-5:]), statistics.median(seen_tails[-5:])
    count = lambda key, value: sum(r[key] == value for r in results)  # noqa: E731
    summary = {
        "case": case.name, "window": window, "kills": kills, "seed": seed,
        "run_seconds": round(duration, 3), "exit_part_seconds": round(tail, 3),
        "previous": count("outcome", "previous"), "new": count("outcome", "new"),
        "torn": count("outcome", "torn"), "stale": count("outcome", "stale"),
        "killed_after_last_line": count("after_last_line", True),
        "ended_before_the_kill": len(ended_first),
        "ended_before_the_kill_torn": sum(r["outcome"] not in ("previous", "new")
                                          for r in ended_first),
        "left_temporaries": sum(r["temporaries"] > 0 for r in results),
        "left_pending_parts": sum(r["parts"] > 0 for r in results),
        "problems": [r for r in results + ended_first if r["outcome"] in ("torn", "stale")],
    }
    return summary, results


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--kills", type=int, default=100)
    parser.add_argument("--only", choices=["calibration", "merge"])
    parser.add_argument("--window", choices=["run", "exit", "write"], default="run")
    parser.add_argument("--build", default=os.environ.get("IPEX_SHIM_BUILD_DIR") or
                        str(REPO / "build"))
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json")
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args()
    build = Path(args.build).resolve()
    if not (build / "libipex_shim.so").is_file():
        sys.exit(f"no libipex_shim.so in {build}: build it or pass --build")
    summaries = []
    with tempfile.TemporaryDirectory(prefix="ipex_fault_kill.") as work:
        for name in (args.only,) if args.only else ("calibration", "merge"):
            started = time.monotonic()
            summary, _ = kill_many(Case(name, build), args.kills, args.seed, args.window,
                                   Path(work) / name, args.verbose)
            summary["seconds"] = round(time.monotonic() - started, 1)
            summaries.append(summary)
            print(f"{name}: {summary['kills']} kills (window {args.window}, run "
                  f"{summary['run_seconds']} s, exit part {summary['exit_part_seconds']} s): "
                  f"previous {summary['previous']}, new {summary['new']}, torn "
                  f"{summary['torn']}, stale {summary['stale']}; "
                  f"{summary['killed_after_last_line']} after the program's last line; "
                  f"temporaries left by {summary['left_temporaries']}, pending parts by "
                  f"{summary['left_pending_parts']}; {summary['ended_before_the_kill']} runs "
                  f"ended before their moment (drawn again); {summary['seconds']} s", flush=True)
            for problem in summary["problems"]:
                print("  " + json.dumps(problem), flush=True)
        if args.json:
            Path(args.json).write_text(json.dumps(summaries, indent=1) + "\n")
    sys.exit(1 if any(s["problems"] for s in summaries) else 0)


if __name__ == "__main__":
    main()
