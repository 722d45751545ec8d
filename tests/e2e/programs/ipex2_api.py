"""IPEX 2.x-style scripts on the shim, next to the same work on stock PyTorch.

usage: ipex2_api.py infer_bf16 | infer_fp32 | train_bf16 OUT.pt | train_plain OUT.pt | int8 [SUMMARY]
  infer_*:     ipex.optimize(model.eval(), dtype=...) then inference; cosines to stock fp32.
  train_bf16:  model, opt = ipex.optimize(model, optimizer=opt, dtype=torch.bfloat16); one
               training step; saves the loss, gradients and updated weights to OUT.pt.
  train_plain: the same step without ipex (run it with IPEX_MODE=bf16, or without the shim).
  int8:        ipex.quantization.prepare / calibrate on 4 batches / convert; with SUMMARY,
               save_qconf_summary(SUMMARY) and a second model loads it.
Prints one E2E-REPORT line.
"""
import sys

import torch
import torch.nn as nn

from e2e_util import report, shim_status

part = sys.argv[1]
torch.manual_seed(0)


def make_model():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
        nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10))
    with torch.no_grad():  # trained-looking statistics
        model[1].running_mean.uniform_(-0.5, 0.5)
        model[1].running_var.uniform_(0.5, 2.0)
    return model


def cosine(a, b):
    return torch.nn.functional.cosine_similarity(a.double().flatten(), b.double().flatten(),
                                                 dim=0).item()


def stock(model, x):
    import ipex_shim
    with torch.no_grad(), ipex_shim.mode("off"):
        return model(x)


data = {}
if part in ("infer_bf16", "infer_fp32"):
    import intel_extension_for_pytorch as ipex
    model = make_model().eval()
    weight = model[0].weight
    before = weight.detach().clone()
    dtype = torch.bfloat16 if part == "infer_bf16" else None
    optimized = ipex.optimize(model, dtype=dtype, inplace=True, weights_prepack=True)
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        y = optimized(x)
    data["cosine"] = cosine(y, stock(make_model().eval(), x))
    data["dtype"] = str(y.dtype)
    data["same_weight_object"] = optimized[0].weight is weight
    data["weight_unchanged"] = bool(torch.equal(weight.detach(), before))
    data["weight_dtype"] = str(optimized[0].weight.dtype)
    copy = ipex.optimize(make_model().eval(), dtype=dtype)
    with torch.no_grad():
        data["copy_cosine"] = cosine(copy(x), y)
elif part in ("train_bf16", "train_plain"):
    model = make_model().train()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    if part == "train_bf16":
        import intel_extension_for_pytorch as ipex
        model, opt = ipex.optimize(model, optimizer=opt, dtype=torch.bfloat16)
        data["optimizer_follows_copy"] = all(
            a is b for a, b in zip(opt.param_groups[0]["params"], model.parameters()))
    torch.manual_seed(1)
    x = torch.randn(8, 3, 32, 32)
    target = torch.randint(0, 10, (8,))
    loss = nn.functional.cross_entropy(model(x), target)
    opt.zero_grad()
    loss.backward()
    grads = [p.grad.detach().clone() for p in model.parameters()]
    opt.step()
    torch.save({"loss": loss.detach(), "grads": grads,
                "weights": [p.detach().clone() for p in model.parameters()]}, sys.argv[2])
    data["loss"] = loss.item()
elif part == "int8":
    import intel_extension_for_pytorch as ipex
    from intel_extension_for_pytorch.quantization import prepare, convert
    model = make_model().eval()
    torch.manual_seed(2)
    batches = [torch.randn(4, 3, 32, 32) for _ in range(4)]
    qconfig = ipex.quantization.default_static_qconfig_mapping
    prepared = prepare(model, qconfig, example_inputs=(batches[0],), inplace=False)
    with torch.no_grad():
        for x in batches:
            calibrated = prepared(x)
            data.setdefault("calibration_cosines", []).append(cosine(calibrated, stock(model, x)))
    if len(sys.argv) > 2:
        prepared.save_qconf_summary(qconf_summary=sys.argv[2])
        prepared = prepare(make_model().eval(), qconfig, example_inputs=(batches[0],))
        prepared.load_qconf_summary(qconf_summary=sys.argv[2])
    converted = convert(prepared)
    with torch.no_grad():
        data["cosines"] = [cosine(converted(x), stock(model, x)) for x in batches]
        data["model_outside_cosine"] = cosine(model(batches[0]), stock(model, batches[0]))
status = shim_status()
if status is not None:
    data["ops"] = {name: status["ops"][name] for name in ("conv2d", "linear")}
    data["mode"] = status["mode"]
    data["process_mode"] = status["process_mode"]
report(data)
