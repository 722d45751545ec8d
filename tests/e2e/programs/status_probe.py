"""Imports torch and reports the shim's status as seen from several places.

usage: status_probe.py [--chdir DIR]   (changes directory before `import torch`)

Report keys: status (main thread, right after import), active_main, active_thread,
active_pool, ops_after_3_conv2d, ops_after_reset, torch_num_threads, affinity_cpus, mapped,
cwd.
"""
import concurrent.futures
import json
import os
import sys
import threading

from e2e_util import interesting, mapped_paths, report

if len(sys.argv) == 3 and sys.argv[1] == "--chdir":
    os.chdir(sys.argv[2])

import torch  # noqa: E402  (after the optional chdir on purpose)
import torch.nn.functional as F  # noqa: E402


def status():
    return json.loads(torch.ops.ipex_shim.status())


def active():
    return status()["active"]


def main():
    first = status()

    box = {}
    thread = threading.Thread(target=lambda: box.setdefault("active", active()))
    thread.start()
    thread.join()

    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        pool_active = [f.result() for f in [pool.submit(active) for _ in range(4)]]

    torch.ops.ipex_shim.reset_stats()
    x = torch.randn(1, 3, 8, 8)
    w = torch.randn(4, 3, 3, 3)
    for _ in range(3):
        F.conv2d(x, w)
    after_calls = status()["ops"]
    torch.ops.ipex_shim.reset_stats()
    after_reset = status()["ops"]

    report({
        "status": first,
        "active_main": active(),
        "active_thread": box.get("active"),
        "active_pool": pool_active,
        "ops_after_3_conv2d": after_calls,
        "ops_after_reset": after_reset,
        "torch_num_threads": torch.get_num_threads(),
        "affinity_cpus": len(os.sched_getaffinity(0)),
        "mapped": interesting(mapped_paths()),
        "cwd": os.getcwd(),
    })


if __name__ == "__main__":
    main()
