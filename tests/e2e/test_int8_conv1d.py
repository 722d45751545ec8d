"""INT8 1-D convolutions: a small 1-D CNN (conv1d -> batch_norm -> relu, three times, with
stride, dilation and groups) calibrated on 8 seeded batches, then run in INT8 on a batch
calibration never saw. Every conv1d call runs on the INT8 kernel, every op finds its entry,
and the output stays within INT8 accuracy of stock fp32 (cosine >= 0.99, the brief's bar for
the models in test_int8_accuracy.py).
"""

import pytest

from conftest import calibrate_then_infer, cosine


PROGRAM = r"""
import json, sys
import torch, torch.nn as nn

torch.manual_seed(0)
net = nn.Sequential(
    nn.Conv1d(4, 32, 5, padding=2), nn.BatchNorm1d(32), nn.ReLU(inplace=True),
    nn.Conv1d(32, 48, 3, stride=2, padding=1), nn.BatchNorm1d(48), nn.ReLU(inplace=True),
    nn.Conv1d(48, 48, 3, padding=2, dilation=2, groups=3), nn.BatchNorm1d(48), nn.ReLU(),
    nn.AdaptiveAvgPool1d(1), nn.Flatten(), nn.Linear(48, 10)).eval()
with torch.no_grad():
    for m in net.modules():
        if isinstance(m, nn.BatchNorm1d):
            m.running_mean.uniform_(-0.2, 0.2); m.running_var.uniform_(0.5, 1.5)
generator = torch.Generator().manual_seed(1)
batches = [torch.randn(8, 4, 101, generator=generator) for _ in range(8)]
test = torch.randn(5, 4, 77, generator=generator)
with torch.no_grad():
    if sys.argv[2] == "calibrate":
        for batch in batches:
            net(batch)
        result = None
    else:
        for _ in range(2):
            result = net(test)
torch.save(result, sys.argv[1])
try:
    status = json.loads(torch.ops.ipex_shim.status())
    print(json.dumps({"conv1d": status["ops"]["conv1d"], "int8": status.get("int8")}))
except (AttributeError, RuntimeError):
    print("{}")
"""


@pytest.fixture(scope="module")
def runs(run_py, tmp_path_factory):
    return calibrate_then_infer(run_py, PROGRAM, tmp_path_factory.mktemp("int8_conv1d"))


def test_calibration_writes_an_entry_per_conv1d(runs):
    convolutions = [e for e in runs["config"] if e.get("name") == "Convolution"]
    assert len(convolutions) == 3, runs["config"]
    assert all(e.get("quantized", True) for e in convolutions), convolutions


def test_every_conv1d_runs_in_int8_with_its_entry(runs):
    paths = runs["status"]["conv1d"]
    assert paths.get("onednn_int8") == 6, paths  # 3 convolutions x 2 passes
    assert set(paths) <= {"onednn_int8", "fallback_reasons"}, paths
    assert runs["status"]["int8"]["mismatched"] == 0, runs["status"]["int8"]


def test_output_is_within_int8_accuracy_of_stock(runs):
    assert cosine(runs["int8"], runs["stock"]) >= 0.99, cosine(runs["int8"], runs["stock"])
