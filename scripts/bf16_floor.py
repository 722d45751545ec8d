#!/usr/bin/env python3
"""How close to stock fp32 can any BF16 computation get on the benchmark zoo's models?

The zoo's models have seeded random weights (no trained weights offline), and some of them
give outputs whose cosine to fp32 stays below 0.999 in bf16 mode. This script asks whether
that is the shim's doing or the model's: it runs each model in fp32 with selected
convolutions and linear layers made to behave like an ideal BF16 kernel (input, weight and
output each rounded once to bf16, products summed in fp32), and prints each variant's
cosine to plain fp32 next to stock autocast's. No shim is loaded; run it without LD_PRELOAD.

    /usr/bin/python3 scripts/bf16_floor.py                 # the eight CNNs, batch 16
    /usr/bin/python3 scripts/bf16_floor.py --models mobilenet_v2 --batch 4 --first 9

Same models, seeds and inputs as `scripts/bench.py --zoo` (model seed 0, input seed 1).
"""
import argparse
import os
import sys

import torch
import torch.nn as nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_models as bm  # noqa: E402

DEFAULT_MODELS = ["resnet50", "mobilenet_v2", "vgg16_bn", "inception_v3", "mnasnet1_0",
                  "wide_resnet50_2", "regnet_x_1_6gf", "efficientnet_v2_s"]


def to_bf16(t):
    return t.to(torch.bfloat16).float()


def heavy_layers_in_call_order(model, x):
    """The model's convolutions and linear layers, in the order one forward pass calls them."""
    order, hooks = [], []
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            hooks.append(m.register_forward_pre_hook(
                lambda mod, inp: order.append(mod) if mod not in order else None))
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in hooks:
            h.remove()
    return order


def run_emulated(model, x, layers):
    """One forward pass with ``layers`` computing as an ideal BF16 kernel would."""
    hooks, saved = [], []
    for m in layers:
        saved.append((m, m.weight.data))
        m.weight.data = to_bf16(m.weight.data)
        hooks.append(m.register_forward_pre_hook(lambda mod, inp: tuple(to_bf16(t) for t in inp)))
        hooks.append(m.register_forward_hook(lambda mod, inp, out: to_bf16(out)))
    try:
        with torch.no_grad():
            return model(x)
    finally:
        for h in hooks:
            h.remove()
        for m, w in saved:
            m.weight.data = w


def cosine(a, b):
    return float(nn.functional.cosine_similarity(a.double().flatten(), b.double().flatten(), dim=0))


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default=",".join(DEFAULT_MODELS),
                   help="comma-separated zoo model names (default: the eight CNNs)")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--seed", type=int, default=0, help="model seed; the input's is seed + 1")
    p.add_argument("--first", type=int, default=6,
                   help="how many leading layers the 'first N' variants keep or round")
    args = p.parse_args()
    if args.first < 1:
        p.error("--first must be at least 1")
    torch.set_num_threads(max(1, torch.get_num_threads()))

    n = args.first
    columns = ["autocast", "every layer", "first only", "all but first",
               "first %d only" % n, "all but first %d" % n]
    print("cosine to stock fp32, batch %d; emulated BF16 in the named conv/linear layers"
          % args.batch)
    print("| model | layers | " + " | ".join(columns) + " |")
    print("|---|---|" + "---|" * len(columns))
    for name in [m for m in args.models.split(",") if m]:
        size = bm.default_image_size(name)
        try:
            model = bm.build_reference_model(name, args.seed, image_size=size)
        except ValueError as e:
            p.error(str(e))
        x = bm.make_input(name, args.batch, args.seed + 1, image_size=size)
        with torch.no_grad():
            ref = model(x)
            with torch.autocast("cpu", dtype=torch.bfloat16):
                auto = model(x).float()
        layers = heavy_layers_in_call_order(model, x)
        variants = [layers, layers[:1], layers[1:], layers[:n], layers[n:]]
        cos = [cosine(ref, auto)] + [cosine(ref, run_emulated(model, x, v)) for v in variants]
        print("| %s | %d | " % (name, len(layers)) + " | ".join("%.5f" % c for c in cos) + " |",
              flush=True)


if __name__ == "__main__":
    main()
