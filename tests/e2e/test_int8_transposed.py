"""INT8 transposed convolutions (an upsampling decoder: conv2d, then conv_transpose2d with
stride 2, with output_padding and groups, with dilation and no bias, and conv_transpose1d):
calibration writes a "Convolution" entry for each, with an SQNR estimate, keyed apart from
direct convolutions; INT8 inference on a batch calibration never saw runs every transposed
call on the INT8 kernel and stays within INT8 accuracy of stock fp32 (cosine >= 0.99).
"""

import pytest

from conftest import calibrate_then_infer, cosine


PROGRAM = r"""
import json, sys
import torch, torch.nn as nn

torch.manual_seed(0)
net2d = nn.Sequential(
    nn.Conv2d(3, 16, 3, stride=2, padding=1), nn.ReLU(),
    nn.ConvTranspose2d(16, 12, 4, stride=2, padding=1), nn.ReLU(),
    nn.ConvTranspose2d(12, 6, 3, stride=2, padding=1, output_padding=1, groups=3),
    nn.ConvTranspose2d(6, 4, 3, padding=2, dilation=2, bias=False)).eval()
net1d = nn.Sequential(nn.ConvTranspose1d(5, 8, 4, stride=2, padding=1), nn.ReLU(),
                      nn.ConvTranspose1d(8, 3, 3, stride=3)).eval()
g = torch.Generator().manual_seed(1)
with torch.no_grad():
    if sys.argv[2] == "calibrate":
        for _ in range(6):
            net2d(torch.randn(4, 3, 20, 18, generator=g))
            net1d(torch.randn(4, 5, 30, generator=g))
        result = None
    else:
        for _ in range(2):
            result = torch.cat([net2d(torch.randn(3, 3, 20, 18, generator=g)).flatten(),
                                net1d(torch.randn(3, 5, 27, generator=g)).flatten()])
torch.save(result, sys.argv[1])
try:
    status = json.loads(torch.ops.ipex_shim.status())
    print(json.dumps({"2d": status["ops"]["conv_transpose2d.input"],
                      "1d": status["ops"]["conv_transpose1d"], "int8": status.get("int8")}))
except (AttributeError, RuntimeError):
    print("{}")
"""


@pytest.fixture(scope="module")
def runs(run_py, tmp_path_factory):
    return calibrate_then_infer(run_py, PROGRAM, tmp_path_factory.mktemp("int8_transposed"))


def test_calibration_writes_a_keyed_entry_per_transposed_convolution(runs):
    transposed = [e for e in runs["config"] if e["name"] == "Convolution"
                  and e["key"].startswith("Convolution(transposed,")]
    assert len(transposed) == 5, [e["key"] for e in runs["config"]]
    assert all(e["quantized"] and e["sqnr_db"] > 25 for e in transposed), transposed


def test_every_transposed_call_runs_in_int8(runs):
    status = runs["status"]
    assert status["2d"] == {"onednn_int8": 2 * 3}, status  # 3 layers x 2 passes
    assert status["1d"] == {"onednn_int8": 2 * 2}, status
    assert status["int8"]["mismatched"] == 0, status["int8"]


def test_output_is_within_int8_accuracy_of_stock(runs):
    assert cosine(runs["int8"], runs["stock"]) >= 0.99, cosine(runs["int8"], runs["stock"])
