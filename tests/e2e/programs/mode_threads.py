"""Modes switched back and forth from two threads at once, while a third thread follows the
process mode that the main thread keeps changing.

usage: mode_threads.py ROUNDS
Each worker alternates scopes every round (A: off, fp32, calibration, ...; B shifted by one)
and runs one conv2d per round; the follower runs one conv2d per round with no scope. Modes
are told apart by where conv2d is counted: off -> stock ("mode off"), fp32 -> onednn_fp32,
calibration -> observed. Each thread also records the mode status() reports inside its scope.
Prints one E2E-REPORT line: per-path counts, expected counts, and mismatches seen by status().
"""
import json
import sys
import threading

import torch

import ipex_shim
from e2e_util import report

rounds = int(sys.argv[1])
cycle = ["off", "fp32", "calibration"]
conv = torch.nn.Conv2d(3, 8, 3).eval()
x = torch.randn(1, 3, 12, 12)
expected = {"off": 0, "fp32": 0, "calibration": 0}
lock = threading.Lock()
mismatches = []
start = threading.Barrier(3)


def worker(shift):
    start.wait()
    for i in range(rounds):
        mode = cycle[(i + shift) % len(cycle)]
        with ipex_shim.mode(mode), torch.no_grad():
            seen = json.loads(torch.ops.ipex_shim.status())["mode"]
            conv(x)
        if seen != mode:
            mismatches.append((shift, i, mode, seen))
        with lock:
            expected[mode] += 1


def follower():
    start.wait()
    for i in range(rounds):
        with lock:  # the process mode cannot change between reading it and the call
            mode = json.loads(torch.ops.ipex_shim.status())["process_mode"]
            with torch.no_grad():
                conv(x)
            expected[mode] += 1


ipex_shim.set_mode("fp32")
torch.ops.ipex_shim.reset_stats()
threads = [threading.Thread(target=worker, args=(0,)), threading.Thread(target=worker, args=(1,)),
           threading.Thread(target=follower)]
for t in threads:
    t.start()
for i in range(rounds):
    with lock:
        ipex_shim.set_mode(["off", "fp32"][i % 2])
for t in threads:
    t.join()
ops = json.loads(torch.ops.ipex_shim.status())["ops"]["conv2d"]
report({"ops": ops, "expected": expected, "mismatches": mismatches,
        "main_scopes": json.loads(torch.ops.ipex_shim.status())["thread_scopes"]})
