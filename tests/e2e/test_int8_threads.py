"""INT8 from several threads: op identities are counted per thread and fused results are
tracked per thread, so two threads running the same network at once must find the same
config entries and compute exactly what one thread computes.
"""
import json

import torch

from conftest import describe


def test_two_threads_compute_what_one_thread_computes(shim, torch_available, tmp_path):
    conf = tmp_path / "conf.json"
    program = shim.program("int8_threads.py")
    # Calibrating with the threads too: the threads' ops must find the main thread's keys.
    proc = shim.run_py(program, mode="calibration", env={"IPEX_CONFIG": str(conf)},
                       args=(str(tmp_path / "calibration.pt"),))
    assert proc.returncode == 0 and conf.exists(), describe(proc)
    entries = json.loads(conf.read_text())
    # One network: one entry per op of one pass (5 convolutions, 1 linear, ...), however
    # many threads ran it; the calls add up over 3 + 2 x 5 passes.
    convolutions = [e for e in entries if e["name"] == "Convolution"]
    assert len(convolutions) == 8, [e["key"] for e in convolutions]
    assert all(e["calls"] == 13 for e in entries), [(e["key"], e["calls"]) for e in entries]

    proc = shim.run_py(program, mode="int8", env={"IPEX_CONFIG": str(conf)},
                       args=(str(tmp_path / "int8.pt"),))
    assert proc.returncode == 0, describe(proc)
    assert "ipex_shim: warning" not in proc.stderr, describe(proc)
    saved = torch.load(tmp_path / "int8.pt")
    assert saved["errors"] == []
    for output in saved["threads"]:
        assert torch.equal(output, saved["main"]), (output - saved["main"]).abs().max()
