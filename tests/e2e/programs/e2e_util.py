"""Helpers shared by the e2e helper programs (importable because a script's directory is
first on sys.path). Torch-free on purpose."""
import json
import os
import sys

REPORT_PREFIX = "E2E-REPORT:"


def mapped_paths(pid="self"):
    """Every file path mapped into process `pid`, from /proc/<pid>/maps."""
    paths = set()
    with open(f"/proc/{pid}/maps") as maps:
        for line in maps:
            fields = line.split(None, 5)
            if len(fields) == 6 and fields[5].startswith("/"):
                paths.add(fields[5].strip())
    return paths


def interesting(paths):
    """The mapped paths a test cares about: the shim's libraries and libtorch's."""
    return sorted(p for p in paths if "ipex_shim" in p or "libtorch" in p)


def report(data):
    """Print the machine-readable report line the tests parse."""
    sys.stdout.write(REPORT_PREFIX + json.dumps(data, sort_keys=True) + "\n")
    sys.stdout.flush()


def shim_status():
    """The shim's status as a dict, or None when torch.ops.ipex_shim.status does not exist."""
    import torch

    try:
        status_op = torch.ops.ipex_shim.status
    except (AttributeError, RuntimeError):
        return None
    return json.loads(status_op())
