#!/usr/bin/env python3
"""How close to stock fp32 can INT8 get on the benchmark zoo's CNNs, and how much of that do
the calibration ranges decide?

Some of the zoo's models (seeded random weights: no trained weights offline) stay below a
cosine of 0.98 to fp32 in int8 mode, with torch.ao's FX INT8 near them. This script runs
each model in fp32 with every convolution and linear layer made to behave like an ideal INT8
kernel: its weight rounded per output channel to 127 steps a side, and its input rounded to
the steps of the range calibration gave it; batch norms, activations, pools and additions
stay fp32. Ranges, from the same calibration batches as the bench:
  min_max          the widest value seen (the seed's; the shim's default before mse), in the
                   shim's scheme: u8 with 255 steps for a range never negative, else s8
                   with 127 a side
  torch_ao         torch.ao's HistogramObserver as its `onednn` qconfig sets it (full 8-bit
                   range; the bench's ao_int8 row), in the shim's scheme
  torch_ao_affine  the same ranges in torch.ao's scheme: u8 with a zero point
It prints each variant's cosine to plain fp32. No shim is loaded; run it without LD_PRELOAD.

    /usr/bin/python3 scripts/int8_floor.py                # vgg16_bn, mobilenet_v2, mnasnet1_0
    /usr/bin/python3 scripts/int8_floor.py --models resnet50 --batch 4 --algorithms min_max

Same models, seeds and inputs as `scripts/bench.py --zoo` (model seed 0, input seed 1,
calibration batches from seed 100).
"""
import argparse
import os
import sys
import time

import torch
import torch.nn as nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_models as bm  # noqa: E402

DEFAULT_MODELS = ["vgg16_bn", "mobilenet_v2", "mnasnet1_0"]
ALGORITHMS = ("min_max", "torch_ao", "torch_ao_affine")
WEIGHT_BOUND = 127.0  # the shim's largest |q_w| where oneDNN has VNNI (kernels/int8.h)


def quantisable(model):
    """The model's convolutions and linear layers."""
    return [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


def input_ranges(model, layers, batches, algorithm):
    """[(lo, hi)] of each layer's input over the calibration batches, as `algorithm` sees it."""
    from torch.ao.quantization.observer import HistogramObserver
    seen = [None] * len(layers)

    def observer(index):
        def observe(module, inputs):
            x = inputs[0].detach()
            if algorithm == "min_max":
                lo, hi = x.min().item(), x.max().item()
                old = seen[index] or (lo, hi)
                seen[index] = (min(lo, old[0]), max(hi, old[1]))
            else:
                if seen[index] is None:
                    seen[index] = HistogramObserver(reduce_range=False)
                seen[index](x)
        return observe

    hooks = [m.register_forward_pre_hook(observer(i)) for i, m in enumerate(layers)]
    try:
        with torch.no_grad():
            for x in batches:
                model(x)
    finally:
        for hook in hooks:
            hook.remove()
    if algorithm == "min_max":
        return seen
    ranges = []
    for histogram in seen:
        scale, zero_point = (t.item() for t in histogram.calculate_qparams())
        ranges.append((-zero_point * scale, (255 - zero_point) * scale))
    return ranges


def fake_quantise(x, lo, hi, affine=False):
    """x rounded to the range's steps and back. The shim's scheme: u8 = round(x * 255 / hi)
    for a range never negative, else s8 = round(x * 127 / max(|lo|, hi)), clamped. affine:
    torch.ao's u8 with scale (hi - lo) / 255 and a zero point."""
    if affine:
        scale = max(hi - lo, 1e-12) / 255.0
        zero_point = min(255.0, max(0.0, round(-lo / scale)))
        return (torch.clamp(torch.round(x / scale) + zero_point, 0, 255) - zero_point) * scale
    if lo >= 0:
        scale = 255.0 / max(hi, 1e-12)
        return torch.clamp(torch.round(x * scale), 0, 255) / scale
    scale = 127.0 / max(-lo, hi, 1e-12)
    return torch.clamp(torch.round(x * scale), -128, 127) / scale


def quantised_weight(weight):
    """The weight an INT8 kernel multiplies: rounded per output channel to WEIGHT_BOUND steps
    a side. (The shim folds a following batch norm in first; per channel, that changes
    nothing: the fold scales each channel and its step alike.)"""
    shape = (-1,) + (1,) * (weight.dim() - 1)
    scale = (WEIGHT_BOUND / weight.abs().flatten(1).amax(1).clamp_min(1e-12)).view(shape)
    return torch.round(weight * scale) / scale


def run_emulated(model, x, layers, ranges, affine=False):
    """model(x) with each of `layers` computing as an ideal INT8 kernel with its input range;
    the weights are put back and the hooks removed afterwards."""
    saved = [layer.weight.detach().clone() for layer in layers]
    hooks = []
    try:
        with torch.no_grad():
            for layer, (lo, hi) in zip(layers, ranges):
                layer.weight.copy_(quantised_weight(layer.weight))
                hooks.append(layer.register_forward_pre_hook(
                    lambda m, inputs, lo=lo, hi=hi: (fake_quantise(inputs[0], lo, hi, affine),)))
            return model(x)
    finally:
        for hook in hooks:
            hook.remove()
        with torch.no_grad():
            for layer, weight in zip(layers, saved):
                layer.weight.copy_(weight)


def cosine(a, b):
    a, b = a.double().flatten(), b.double().flatten()
    return (a @ b / (a.norm() * b.norm())).item()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default=",".join(DEFAULT_MODELS))
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--calib-batches", type=int, default=4)
    parser.add_argument("--algorithms", default=",".join(ALGORITHMS))
    args = parser.parse_args()
    algorithms = args.algorithms.split(",")
    unknown = sorted(set(algorithms) - set(ALGORITHMS))
    if unknown:
        parser.error(f"unknown algorithm(s) {', '.join(unknown)} (known: {', '.join(ALGORITHMS)})")
    torch.set_num_threads(len(os.sched_getaffinity(0)))  # for speed: the cosines do not need it
    print(f"batch {args.batch}, {args.calib_batches} calibration batches, "
          f"{torch.get_num_threads()} threads")
    for name in args.models.split(","):
        model = bm.build_reference_model(name, 0).eval()
        x = bm.make_input(name, args.batch, 1)
        calibration = [bm.make_input(name, args.batch, 100 + i)
                       for i in range(args.calib_batches)]
        with torch.no_grad():
            reference = model(x)
        layers = quantisable(model)
        ranges = {}
        for algorithm in algorithms:
            started = time.perf_counter()
            observed = algorithm.replace("_affine", "")
            if observed not in ranges:
                ranges[observed] = input_ranges(model, layers, calibration, observed)
            got = run_emulated(model, x, layers, ranges[observed],
                               affine=algorithm.endswith("_affine"))
            print(f"{name:18s} {algorithm:16s} cosine {cosine(got, reference):.5f} "
                  f"({len(layers)} layers, {time.perf_counter() - started:.0f} s)", flush=True)
        del model


if __name__ == "__main__":
    main()
