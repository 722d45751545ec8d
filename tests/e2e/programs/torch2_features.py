"""What users of torch 2.x write, under the preload (or not): torch.compile, torch.export,
FakeTensor and meta tensors, inference_mode and torch.amp.autocast("cpu").

argv: OUT.pt. Saves each feature's output (or None where a feature has none, such as fake
tensors' shapes) and prints one E2E-REPORT line with what each gave and the shim's status().
"""
import json
import sys
import warnings

import torch

torch.manual_seed(0)
model = torch.nn.Sequential(
    torch.nn.Conv2d(3, 16, 3, padding=1), torch.nn.BatchNorm2d(16), torch.nn.ReLU(),
    torch.nn.Conv2d(16, 16, 3, padding=1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
    torch.nn.Flatten(), torch.nn.Linear(16, 10)).eval()
x = torch.randn(4, 3, 16, 16)
outputs, report = {}, {"torch": torch.__version__}

with torch.no_grad():
    outputs["eager"] = model(x)
    outputs["eager_again"] = model(x)

with torch.inference_mode():
    outputs["inference_mode"] = model(x)

with torch.no_grad(), torch.amp.autocast("cpu", dtype=torch.bfloat16):
    amp = model(x)
    report["amp_dtype"] = str(amp.dtype)
    outputs["amp"] = amp.float()

from torch._subclasses.fake_tensor import FakeTensorMode  # noqa: E402

with FakeTensorMode() as mode:
    fake_model_input = mode.from_tensor(x)
    with torch.no_grad():
        fake = torch.nn.functional.conv2d(fake_model_input, mode.from_tensor(model[0].weight),
                                          mode.from_tensor(model[0].bias), padding=1)
    report["fake_shape"] = list(fake.shape)

with torch.no_grad():
    meta = torch.nn.functional.linear(torch.empty(4, 16, device="meta"),
                                      torch.empty(10, 16, device="meta"))
report["meta_shape"] = list(meta.shape)
report["meta_device"] = str(meta.device)

exported = torch.export.export(model, (x,))
with torch.no_grad():
    outputs["export"] = exported.module()(x)

with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    compiled = torch.compile(model)
    with torch.no_grad():
        outputs["compile"] = compiled(x)
        outputs["compile_again"] = compiled(x)
report["compile_warnings"] = len(caught)

try:
    status = json.loads(torch.ops.ipex_shim.status())
    report["ops"] = status["ops"]
    report["dispatch_key"] = status["dispatch_key"]
except (AttributeError, RuntimeError):
    report["ops"] = None
torch.save(outputs, sys.argv[1])
print("E2E-REPORT:" + json.dumps(report))
