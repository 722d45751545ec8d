"""Eval outputs of torchvision CNNs and a small BERT-shaped encoder, for accuracy comparisons.

usage: float_accuracy.py WORKDIR control|shim MODEL[:ROWS] ...

control (run without the shim): builds each model from seed 0 with
  scripts/bench_models.build_reference_model (weights=None, a few train-mode forwards under
  no_grad so BatchNorm has real statistics, classifier centred), saves its state_dict and a
  seeded input to WORKDIR, then evaluates.
shim (run with the shim preloaded): loads that state_dict and input and evaluates.
Both save WORKDIR/<model>.<tag>.pt (tag: control, or the IPEX_MODE) with the output, and for
resnet18 also the output of a channels_last input and the memory format of every conv output.
The control run also saves two bf16 references computed by stock PyTorch for the CNNs:
  emu:      ideal BF16 inference: conv/linear weights and inputs rounded to BF16, conv
            outputs rounded to BF16, everything computed in fp32 (what the shim's BF16 kernels
            compute, up to summation order: fp32 accumulation, convolutions write BF16 that is
            widened to fp32, linear layers write fp32);
  autocast: stock torch.autocast("cpu", torch.bfloat16).
  (Not with FLOAT_ACCURACY_BF16_REFERENCES=0: the tests set it where bf16 mode runs the fp32
  kernels, a CPU without native BF16, and stock's emulated BF16 would take minutes.)
The report line gives, per model, the output dtype/format and the shim's op counts.
"""
import os
import sys
import time

import torch

from float_common import (import_bench_models, memory_format, op_counts, report, reset_stats,
                          small_encoder)

IMAGE_SIZE = 64
ENCODER_SEQ = 32
CL_MODEL = "resnet18"  # the model also fed a channels_last input


def build(bm, name, workdir, rows, control):
    state_path = os.path.join(workdir, f"{name}.state.pt")
    input_path = os.path.join(workdir, f"{name}.input.pt")
    if name == "encoder":
        model = small_encoder(bm, 0)
        if control:
            g = torch.Generator().manual_seed(1)
            x = torch.randint(0, 1000, (rows // ENCODER_SEQ, ENCODER_SEQ), generator=g)
    else:
        if control:
            # Random-weight train-mode forwards produce denormals that make stock CPU
            # kernels ~20x slower; flush them while building only (every run loads the
            # state built here, and evaluation runs with the default setting).
            torch.set_flush_denormal(True)
            try:
                model = bm.build_reference_model(name, 0, image_size=IMAGE_SIZE)
            finally:
                torch.set_flush_denormal(False)
            x = bm.make_input(name, rows, 1, image_size=IMAGE_SIZE)
        else:
            torch.manual_seed(0)
            model = bm.build_skeleton(name)
    if control:
        torch.save(model.state_dict(), state_path)
        torch.save(x, input_path)
    else:
        model.load_state_dict(torch.load(state_path))
        x = torch.load(input_path)
    return model.eval(), x


def conv_formats(model, x):
    """Output of `model(x)` and the memory format of every Conv2d output (forward hooks)."""
    seen = []
    hooks = [m.register_forward_hook(lambda mod, i, o: seen.append(memory_format(o)))
             for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    try:
        with torch.no_grad():
            out = model(x)
    finally:
        for h in hooks:
            h.remove()
    return out, seen


def bf16_round(tensor):
    return tensor.to(torch.bfloat16).float()


def ideal_bf16_output(model, x):
    """Stock forward with every Conv2d/Linear weight and input rounded to BF16, and every
    Conv2d output rounded to BF16 (fp32 math). Changes the model's weights: call last."""
    hooks = []
    with torch.no_grad():
        for mod in model.modules():
            if isinstance(mod, (torch.nn.Conv2d, torch.nn.Linear)):
                mod.weight.copy_(bf16_round(mod.weight))
                hooks.append(mod.register_forward_pre_hook(
                    lambda m, inputs: (bf16_round(inputs[0]),) + tuple(inputs[1:])))
            if isinstance(mod, torch.nn.Conv2d):
                hooks.append(mod.register_forward_hook(
                    lambda m, inputs, output: bf16_round(output)))
        try:
            return model(x)
        finally:
            for h in hooks:
                h.remove()


def main():
    workdir, role = sys.argv[1], sys.argv[2]
    control = role == "control"
    tag = "control" if control else os.environ.get("IPEX_MODE", "off")
    bm = import_bench_models()
    facts = {}
    for spec in sys.argv[3:]:
        name, _, rows = spec.partition(":")
        rows = int(rows or 64)
        model, x = build(bm, name, workdir, rows, control)
        reset_stats()
        start = time.perf_counter()
        with torch.no_grad():
            out = model(x)
        seconds = time.perf_counter() - start
        result = {"output": out}
        fact = {"dtype": str(out.dtype), "shape": list(out.shape),
                "format": memory_format(out), "seconds": round(seconds, 3),
                "ops": op_counts()}
        if name == CL_MODEL:
            x_cl = x[:8].contiguous(memory_format=torch.channels_last)
            out_cl, formats = conv_formats(model, x_cl)
            result["output_cl"] = out_cl
            fact["cl_conv_formats"] = formats
            fact["cl_output_format"] = memory_format(out_cl)
            fact["cl_dtype"] = str(out_cl.dtype)
        if control and name != "encoder" and os.environ.get("FLOAT_ACCURACY_BF16_REFERENCES") != "0":
            with torch.no_grad(), torch.autocast("cpu", torch.bfloat16):
                result["autocast"] = model(x).float()
            result["emu"] = ideal_bf16_output(model, x)
        torch.save(result, os.path.join(workdir, f"{name}.{tag}.pt"))
        facts[name] = fact
        del model
    report({"tag": tag, "models": facts, "threads": torch.get_num_threads()})


if __name__ == "__main__":
    main()
