"""A torch-free Python program that starts subprocesses (sh, cat, and a Python child) and
reports which shim / torch libraries are mapped in itself and in each child.

Payload lines (everything but the report line) must be the same with and without the shim."""
import json
import os
import subprocess
import sys

from e2e_util import REPORT_PREFIX, interesting, mapped_paths, report


def paths_from_maps(text):
    paths = set()
    for line in text.splitlines():
        fields = line.split(None, 5)
        if len(fields) == 6 and fields[5].startswith("/"):
            paths.add(fields[5].strip())
    return interesting(paths)


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    print("parent starts")

    # sh prints its own maps ($$ is the shell, alive while cat reads them), then cat its own.
    sh = subprocess.run(["sh", "-c", "echo from-sh; cat /proc/$$/maps"],
                        capture_output=True, text=True, check=True)
    sh_lines = sh.stdout.splitlines()
    print(sh_lines[0])
    cat = subprocess.run(["cat", "/proc/self/maps"], capture_output=True, text=True, check=True)

    child = subprocess.run([sys.executable, os.path.join(here, "torch_free.py")],
                           capture_output=True, text=True, check=True)
    child_payload = [l for l in child.stdout.splitlines() if not l.startswith(REPORT_PREFIX)]
    child_report = json.loads(
        [l for l in child.stdout.splitlines() if l.startswith(REPORT_PREFIX)][0]
        [len(REPORT_PREFIX):])
    for line in child_payload:
        print("child:", line)
    print("parent ends")
    report({
        "parent": interesting(mapped_paths()),
        "sh": paths_from_maps("\n".join(sh_lines[1:])),
        "cat": paths_from_maps(cat.stdout),
        "python_child": child_report["mapped"],
        "child_stderr": child.stderr + sh.stderr + cat.stderr,
    })


if __name__ == "__main__":
    main()
