"""A script written for the Intel Extension for PyTorch 1.x (the seed's API), unchanged:
BF16 auto-mixed precision, then INT8 calibration and inference with a saved config.

    PYTHONPATH=build/python python3 examples/ipex1_seed_api.py     # no preload needed
    build/ipex-run -- python3 examples/ipex1_seed_api.py           # the same, via ipex-run

Installed (cmake --install), `import intel_pytorch_extension` works from /usr/bin/python3
with no PYTHONPATH.
"""
import json
import os
import tempfile

import torch
import torch.nn as nn

import intel_pytorch_extension as ipex


class Model(nn.Module):
    def __init__(self):
        super(Model, self).__init__()
        self.conv = nn.Conv2d(3, 64, 7, stride=2)
        self.linear = nn.Linear(64, 10)

    def forward(self, input):
        return self.linear(self.conv(input).relu().mean((2, 3)))


torch.manual_seed(0)
model = Model().to(ipex.DEVICE)
batches = [torch.rand(8, 3, 64, 64).to(ipex.DEVICE) for _ in range(4)]

# BF16: every op the shim handles runs in BF16 from here on (fp32 kernels on a CPU without
# native BF16, where BF16 would be slower).
ipex.enable_auto_mixed_precision(mixed_dtype=torch.bfloat16)
with torch.no_grad():
    print("bf16 output", tuple(model(batches[0]).shape))
ipex.enable_auto_mixed_precision(mixed_dtype=None)

# INT8: calibrate, save, apply.
conf = ipex.AmpConf(torch.int8)
with torch.no_grad():
    for x in batches:
        with ipex.AutoMixPrecision(conf, running_mode='calibration'):
            model(x)
path = os.path.join(tempfile.mkdtemp(), "configure.json")
conf.save(path)
print(f"saved {len(json.load(open(path)))} entries to {path}")

conf = ipex.AmpConf(torch.int8, path)
with torch.no_grad():
    fp32 = model(batches[0])
    with ipex.AutoMixPrecision(conf, running_mode='inference'):
        int8 = model(batches[0])
cos = torch.nn.functional.cosine_similarity(fp32.flatten(), int8.flatten(), dim=0).item()
print(f"int8 against fp32: cosine {cos:.5f}")
status = json.loads(torch.ops.ipex_shim.status())
print("conv2d ran:", status["ops"].get("conv2d", f"nothing: the shim stays off ({status['refused']})"))
