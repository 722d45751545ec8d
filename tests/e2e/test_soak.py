"""scripts/soak.py --quick: 1,500 inference passes of a small CNN and the reduced encoder in
fp32, bf16 and int8 mode, and 300 training steps in fp32 and bf16 mode, against what the
script holds (its docstring): RSS flat after warm-up, the buffer pool under its limit, the
weight cache never holding entries of dead weights, no stale or drifting output, no fall in
throughput. The full run (10,000 passes, 2,000 steps) is the README's "Reliability" figure.
"""
import json
import subprocess
import sys

from conftest import REPO_ROOT, clean_env


def test_quick_soak_holds(shim, torch_available, tmp_path):
    out = tmp_path / "soak.json"
    proc = subprocess.run(
        [sys.executable, str(REPO_ROOT / "scripts" / "soak.py"), "--quick",
         "--build-dir", str(shim.build_dir), "--json", str(out)],
        env=clean_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        timeout=900)
    print(proc.stdout)
    assert out.exists(), proc.stdout
    results = json.loads(out.read_text())["results"]
    runs = {(r["part"], r["model"], r["mode"]) for r in results}
    assert runs == {("infer", model, mode) for model in ("cnn", "encoder")
                    for mode in ("fp32", "bf16", "int8")} | {("train", "cnn", "fp32"),
                                                             ("train", "cnn", "bf16")}, runs
    problems = {f"{r['part']} {r['model']} {r['mode']}": r["problems"]
                for r in results if r["problems"]}
    assert not problems, proc.stdout
    assert proc.returncode == 0, proc.stdout
    for r in results:
        if r["part"] == "train":
            # The deep copy evaluated each step was packed too: a pack per weight per step
            # for the model and for the copy, or the check of dead entries checked nothing.
            figures = r["figures"]
            assert figures["packs"] >= 2 * 300 * figures["live_packed_weights"], figures
