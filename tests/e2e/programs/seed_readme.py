"""The seed's three README examples, written out as its README uses the API, each followed by
the same computation on stock PyTorch (a scope of mode "off") for the test to compare.

usage: seed_readme.py device | bf16 | calibrate CONF | infer CONF | plain
  plain: the INT8 example's model and data with no API call, for IPEX_MODE=calibration/int8.
Prints one E2E-REPORT line: cosine of each result to stock fp32, the ops' counts, the mode.
"""
import sys

import torch
import torch.nn as nn

import ipex_shim
from e2e_util import report, shim_status

part = sys.argv[1]
torch.manual_seed(0)
results = []


def stock(model, x):
    with torch.no_grad(), ipex_shim.mode("off"):
        return model(x)


def cosine(a, b):
    return torch.nn.functional.cosine_similarity(a.double().flatten(), b.double().flatten(),
                                                 dim=0).item()


if part == "device":
    # --- the README's first example: the extension enabled by moving to its device ---------
    import intel_pytorch_extension as ipex

    class Model(nn.Module):
        def __init__(self):
            super(Model, self).__init__()
            self.linear = nn.Linear(4, 5)

        def forward(self, input):
            return self.linear(input)

    # Convert the input tensor to the Extension device
    input = torch.randn(2, 4).to(ipex.DEVICE)
    # Convert the model to the Extension device
    model = Model().to(ipex.DEVICE)

    res = model(input)
    # ----------------------------------------------------------------------------------------
    results.append((res, stock(model, input)))
    on_cpu = res.device.type == "cpu" and input.device.type == "cpu"

elif part == "bf16":
    # --- "Automatically Mix Precision", BFloat16 -------------------------------------------
    import intel_pytorch_extension as ipex
    # Automatically mix precision
    ipex.enable_auto_mixed_precision(mixed_dtype = torch.bfloat16)

    class Model(nn.Module):
        def __init__(self):
            super(Model, self).__init__()
            self.linear = nn.Linear(4, 5)

        def forward(self, input):
            return self.linear(input)

    input = torch.randn(2, 4).to(ipex.DEVICE)
    model = Model().to(ipex.DEVICE)

    res = model(input)
    # ----------------------------------------------------------------------------------------
    results.append((res, stock(model, input)))
    on_cpu = res.device.type == "cpu"

else:
    # --- "INT8 Quantization" ---------------------------------------------------------------
    import intel_pytorch_extension as ipex

    class Model(nn.Module):
        def __init__(self):
            super(Model, self).__init__()
            self.conv = nn.Conv2d(3, 64, 7, stride=2)

        def forward(self, input):
            return self.conv(input).relu()

    cali_dataset = [torch.rand(2, 3, 56, 56) for _ in range(4)]
    conf_path = sys.argv[2] if len(sys.argv) > 2 else None
    if part == "plain":
        model = Model()
        with torch.no_grad():
            for x in cali_dataset:
                results.append((model(x), stock(model, x)))
    elif part == "calibrate":
        # Convert the model to the Extension device
        model = Model().to(ipex.DEVICE)

        # Create a configuration file to save quantization parameters.
        conf = ipex.AmpConf(torch.int8)
        with torch.no_grad():
            for x in cali_dataset:
                # Run the model under calibration mode to collect quantization parameters
                with ipex.AutoMixPrecision(conf, running_mode='calibration'):
                    y = model(x.to(ipex.DEVICE))
                results.append((y, stock(model, x)))
        # Save the configuration file
        conf.save(conf_path)
    else:
        model = Model().to(ipex.DEVICE)
        conf = ipex.AmpConf(torch.int8, conf_path)
        with torch.no_grad():
            for x in cali_dataset:
                with ipex.AutoMixPrecision(conf, running_mode='inference'):
                    y = model(x.to(ipex.DEVICE))
                results.append((y, stock(model, x)))
        # Outside the block the model runs in fp32.
        with torch.no_grad():
            outside = model(cali_dataset[0])
        outside_cosine = cosine(outside, stock(model, cali_dataset[0]))
    # ----------------------------------------------------------------------------------------
    on_cpu = True

status = shim_status()
data = {
    "cosines": [cosine(got, ref) for got, ref in results],
    "exact": [bool(torch.equal(got, ref)) for got, ref in results],
    "dtypes": [str(got.dtype) for got, _ in results],
    "on_cpu": on_cpu,
    "ops": {name: status["ops"][name] for name in ("linear", "conv2d", "relu")},
    "mode": status["mode"], "process_mode": status["process_mode"],
    "mode_source": status["mode_source"], "attached": ipex_shim.attached(),
}
if part in ("infer", "plain"):
    data["int8"] = status.get("int8")
if part == "infer":
    data["outside_cosine"] = outside_cosine
report(data)
