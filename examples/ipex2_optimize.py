"""A script written for the Intel Extension for PyTorch 2.x, unchanged: ipex.optimize for
BF16 inference and for a BF16 training step, and static INT8 quantization.

    PYTHONPATH=build/python python3 examples/ipex2_optimize.py
    build/ipex-run -- python3 examples/ipex2_optimize.py
"""
import json

import torch
import torchvision

import intel_extension_for_pytorch as ipex
from intel_extension_for_pytorch.quantization import convert, prepare

torch.manual_seed(0)
images = torch.rand(4, 3, 224, 224)

# BF16 inference: the returned model runs in the shim's bf16 mode; its weights stay fp32.
model = torchvision.models.resnet18(weights=None).eval()
model = ipex.optimize(model, dtype=torch.bfloat16)
with torch.no_grad():
    print("bf16 inference", tuple(model(images).shape))

# A BF16 training step: the optimizer comes back updating the returned model.
model = torchvision.models.resnet18(weights=None).train()
optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
model, optimizer = ipex.optimize(model, optimizer=optimizer, dtype=torch.bfloat16)
loss = torch.nn.functional.cross_entropy(model(images), torch.tensor([1, 2, 3, 4]))
optimizer.zero_grad()
loss.backward()
optimizer.step()
print(f"training step: loss {loss.item():.4f}")

# Static INT8: prepare, calibrate, convert.
model = torchvision.models.resnet18(weights=None).eval()
prepared = prepare(model, ipex.quantization.default_static_qconfig_mapping,
                   example_inputs=(images,), inplace=False)
with torch.no_grad():
    for _ in range(4):
        prepared(torch.rand(4, 3, 224, 224))
quantized = convert(prepared)
with torch.no_grad():
    fp32, int8 = model(images), quantized(images)
cos = torch.nn.functional.cosine_similarity(fp32.flatten(), int8.flatten(), dim=0).item()
print(f"int8 against fp32: cosine {cos:.5f}")
status = json.loads(torch.ops.ipex_shim.status())
print("conv2d ran:", status["ops"].get("conv2d", f"nothing: the shim stays off ({status['refused']})"))
