"""Eval outputs of torchvision CNNs and a BERT-shaped encoder, for the INT8 accuracy tests.

usage:
  int8_models.py control WORKDIR MODEL[:VARIANT+VARIANT...] ...
      Stock PyTorch (run without the shim). Builds each model from seed 0 with
      scripts/bench_models.build_reference_model (weights=None, BatchNorm statistics from
      train-mode forwards under no_grad, classifier centred) or, for `encoder`, the
      BERT-shaped encoder of scripts/bench_models.py (ENCODER below); saves its state_dict
      and seeded inputs to WORKDIR/<model>.state.pt and WORKDIR/<model>.inputs.pt
      ({"calibration": [batch, ...], "test": batch}); evaluates every calibration batch and
      the test batch and saves the outputs to WORKDIR/<model>.control.pt. For a CNN it also
      saves there, under "ideal_int8", the test output of ideal INT8 inference for each
      VARIANT ("mse/per_channel" when none is named; ALGORITHM/GRANULARITY), see
      ideal_int8_outputs.
  int8_models.py calibrate|infer WORKDIR MODEL OUT
      The program a user runs twice, unchanged: first under IPEX_MODE=calibration, then under
      IPEX_MODE=int8, both with the same IPEX_CONFIG. Loads the state_dict, then `calibrate`
      evaluates the calibration batches and `infer` evaluates the test batch (calibration
      never sees it); saves the outputs to OUT.
The report line gives the shim's status (null without the shim).
"""
import copy
import math
import os
import sys

import torch

from float_common import import_bench_models, report, reset_stats, shim_status

IMAGE_SIZE = {"resnet18": 224, "resnet50": 224, "mobilenet_v2": 224}
# 64 calibration images: with fewer, the random per-image gain of synthetic_images puts the
# test images outside the calibrated ranges (see tests/e2e/test_int8_accuracy.py).
CALIBRATION_BATCHES = 8
CALIBRATION_BATCH = 8
TEST_BATCH = 2  # another batch size than calibration's, and other images
# BERT-base's layer shape (hidden 768, 12 heads, feed-forward 3072) with 2 layers and a
# smaller vocabulary, so that calibration and inference fit the test's time budget.
ENCODER = dict(vocab=8000, max_pos=128, hidden=768, heads=12, layers=2, ffn=3072)
ENCODER_SEQ = {"calibration": 64, "test": 48}
DEFAULT_VARIANT = "mse/per_channel"  # the shim's defaults


# -- models and inputs --------------------------------------------------------------------------

def build_encoder(bench_models):
    torch.manual_seed(0)
    return bench_models.BertEncoder(**ENCODER)


def token_ids(batch, seq, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, ENCODER["vocab"], (batch, seq), generator=g)


def build_control(bench_models, name):
    """The seeded model, its calibration batches and its test batch (stock run only)."""
    if name == "encoder":
        model = build_encoder(bench_models)
        model.init_weights()
        calibration = [token_ids(CALIBRATION_BATCH, ENCODER_SEQ["calibration"], 10 + i)
                       for i in range(CALIBRATION_BATCHES)]
        return model.eval(), calibration, token_ids(TEST_BATCH, ENCODER_SEQ["test"], 20)
    size = IMAGE_SIZE[name]
    # Random-weight train-mode forwards produce denormals that make stock CPU kernels ~20x
    # slower; flush them while building only (every run loads the state built here).
    torch.set_flush_denormal(True)
    try:
        model = bench_models.build_reference_model(name, 0, image_size=size)
    finally:
        torch.set_flush_denormal(False)

    def images(batch, seed):
        return bench_models.synthetic_images(batch, size, torch.Generator().manual_seed(seed))

    calibration = [images(CALIBRATION_BATCH, 10 + i) for i in range(CALIBRATION_BATCHES)]
    return model.eval(), calibration, images(TEST_BATCH, 20)


def evaluate(model, batches):
    with torch.no_grad():
        return [model(x) for x in batches]


# -- ideal INT8 inference, computed by stock PyTorch --------------------------------------------

PERCENTILE = 0.9999  # README: percentile "clips the rarest 0.01%"
RANGE_SAMPLES = 65536  # values read from each call (an even stride through them), and the
# size of mse's pool over all calls (the shim keeps a uniform sample: reservoir sampling)


def squared_error_of_clip(values, levels, clips):
    """[summed squared error of quantising `values` (>= 0) to multiples of t / levels,
    clipped at t, for each t in `clips`]."""
    t = clips.view(-1, 1)
    quantised = torch.minimum(torch.round(values.view(1, -1) / t * levels),
                              torch.tensor(float(levels))) * t / levels
    return ((values.view(1, -1) - quantised) ** 2).sum(1)


def mse_clip(values, levels):
    """The clip of the mse algorithm, searched differently from the shim: 400 clips evenly
    spaced in log from max / 128 to max, then 64 evenly spaced between the best one's
    neighbours."""
    largest = values.max().item()
    if largest <= 0:
        return 0.0
    values = values.double()
    clips = largest * torch.exp(torch.linspace(-math.log(128), 0, 400, dtype=torch.double))
    errors = torch.cat([squared_error_of_clip(values, levels, part) for part in clips.split(50)])
    best = int(errors.argmin())
    fine = torch.linspace(clips[max(0, best - 1)].item(), clips[min(399, best + 1)].item(), 64,
                          dtype=torch.double)
    fine_errors = squared_error_of_clip(values, levels, fine)
    return fine[int(fine_errors.argmin())].item()


def call_sample(tensor):
    """The values of one call the clipping algorithms read, as magnitudes: README, a stride
    sharing no factor with the innermost dimension, so that every position of it is read."""
    flat = tensor.reshape(-1)
    step = max(1, flat.numel() // RANGE_SAMPLES)
    while math.gcd(step, tensor.shape[-1] if tensor.dim() else 1) != 1:
        step += 1
    return flat[::step].abs()


def tensor_range(tensor, algorithm):
    """(min, max) of one call's tensor as the calibration algorithm sees it (mse: the
    extremes; its clip is chosen over all calls, pooled_clip)."""
    lo, hi = tensor.min().item(), tensor.max().item()
    if algorithm == "percentile":
        magnitudes = call_sample(tensor)
        clip = magnitudes.kthvalue(max(1, math.ceil(PERCENTILE * magnitudes.numel()))).values
        lo, hi = max(lo, -clip.item()), min(hi, clip.item())
    return lo, hi


def pooled_clip(lo, hi, samples):
    """mse: (lo, hi) clipped where quantising a uniform sample of every call's values (at most
    RANGE_SAMPLES, drawn with a fixed seed) to the steps the range will get (255 for a tensor
    never negative, 127 a side otherwise) gives the smallest squared error."""
    pool = torch.cat(samples)
    if pool.numel() > RANGE_SAMPLES:
        drawn = torch.randperm(pool.numel(), generator=torch.Generator().manual_seed(0))
        pool = pool[drawn[:RANGE_SAMPLES]]
    clip = mse_clip(pool, 255 if lo >= 0 else 127)
    return (max(lo, -clip), min(hi, clip)) if clip > 0 else (lo, hi)


def quantisable(model):
    """[(conv or linear, the BatchNorm2d that follows it or None)] in module order
    (torchvision registers a convolution's BatchNorm right after it)."""
    modules = list(model.modules())
    pairs = []
    for module, follower in zip(modules, modules[1:] + [None]):
        if isinstance(module, (torch.nn.Conv2d, torch.nn.Linear)):
            pairs.append((module, follower if isinstance(follower, torch.nn.BatchNorm2d)
                          else None))
    return pairs


def input_ranges(model, batches, algorithms):
    """{algorithm: [(min, max) of each quantisable module's input over all batches]}."""
    modules = [m for m, _ in quantisable(model)]
    ranges = {a: [(math.inf, -math.inf)] * len(modules) for a in algorithms}
    samples = [[] for _ in modules]  # mse's pool, per module

    def observer(index):
        def observe(module, inputs):
            for algorithm in algorithms:
                lo, hi = tensor_range(inputs[0], algorithm)
                old_lo, old_hi = ranges[algorithm][index]
                ranges[algorithm][index] = (min(lo, old_lo), max(hi, old_hi))
            if "mse" in algorithms:
                samples[index].append(call_sample(inputs[0]))
        return observe

    hooks = [m.register_forward_pre_hook(observer(i)) for i, m in enumerate(modules)]
    try:
        evaluate(model, batches)
    finally:
        for hook in hooks:
            hook.remove()
    if "mse" in algorithms:
        ranges["mse"] = [pooled_clip(lo, hi, pool)
                         for (lo, hi), pool in zip(ranges["mse"], samples)]
    return ranges


def fake_quantise(tensor, lo, hi):
    """Quantise and dequantise: u8 = clamp(round(x * 255 / max), 0, 255) when the range is
    non-negative, else s8 = clamp(round(x * 127 / max|x|), -128, 127)."""
    if lo >= 0:
        scale = 255.0 / max(hi, 1e-12)
        return torch.clamp(torch.round(tensor * scale), 0, 255) / scale
    scale = 127.0 / max(-lo, hi, 1e-12)
    return torch.clamp(torch.round(tensor * scale), -128, 127) / scale


# The largest |q_w| (kernels/int8.h): 127, or 63 on a CPU whose oneDNN has no VNNI (7-bit
# weights there keep its 16-bit pair sums exact). The test passes the shim's.
WEIGHT_BOUND = float(os.environ.get("IDEAL_INT8_WEIGHT_BOUND", "127"))


def quantised_weight(weight, batch_norm, per_channel):
    """s8 weights within WEIGHT_BOUND, symmetric scale per output channel or per tensor, of
    the weight with the following BatchNorm folded in (what an INT8 kernel multiplies),
    unfolded again so that the stock module can apply the BatchNorm itself."""
    shape = (-1,) + (1,) * (weight.dim() - 1)
    fold = torch.ones(weight.shape[0])
    if batch_norm is not None:
        fold = batch_norm.weight / torch.sqrt(batch_norm.running_var + batch_norm.eps)
    folded = weight * fold.view(shape)
    if per_channel:
        scale = (WEIGHT_BOUND / folded.abs().flatten(1).amax(1).clamp_min(1e-12)).view(shape)
    else:
        scale = WEIGHT_BOUND / folded.abs().max().clamp_min(1e-12)
    return (torch.round(folded * scale) / scale) / fold.view(shape)


def ideal_int8_outputs(model, calibration, x, variants):
    """{variant: stock forward of `x` with every conv/linear input fake-quantised with the
    range the calibration batches gave it (variant's algorithm) and every conv/linear weight
    quantised at the variant's granularity; BatchNorm, ReLU, pooling, additions in fp32}.
    Leaves `model` as it was."""
    parsed = [v.split("/") for v in variants]
    ranges = input_ranges(model, calibration, sorted({a for a, _ in parsed}))
    outputs = {}
    for variant, (algorithm, granularity) in zip(variants, parsed):
        emulated = copy.deepcopy(model)
        with torch.no_grad():
            for (module, batch_norm), (lo, hi) in zip(quantisable(emulated), ranges[algorithm]):
                module.weight.copy_(quantised_weight(module.weight, batch_norm,
                                                     granularity == "per_channel"))
                module.register_forward_pre_hook(
                    lambda m, inputs, lo=lo, hi=hi: (fake_quantise(inputs[0], lo, hi),))
            outputs[variant] = emulated(x)
    return outputs


# -- roles --------------------------------------------------------------------------------------

def control(workdir, specs):
    bench_models = import_bench_models()
    # The stock outputs are evaluated with stock's default thread count, the one calibration
    # keeps (a reduction split over another number of threads rounds differently); building
    # and the ideal INT8 emulation use every CPU, for speed only.
    stock_threads = torch.get_num_threads()
    all_threads = len(os.sched_getaffinity(0))
    for spec in specs:
        name, _, variants = spec.partition(":")
        torch.set_num_threads(all_threads)
        model, calibration, test = build_control(bench_models, name)
        torch.save(model.state_dict(), f"{workdir}/{name}.state.pt")
        torch.save({"calibration": calibration, "test": test}, f"{workdir}/{name}.inputs.pt")
        torch.set_num_threads(stock_threads)
        outputs = {"calibration": evaluate(model, calibration),
                   "test": evaluate(model, [test])[0]}
        torch.set_num_threads(all_threads)
        if name != "encoder":
            outputs["ideal_int8"] = ideal_int8_outputs(
                model, calibration, test, (variants or DEFAULT_VARIANT).split("+"))
        torch.save(outputs, f"{workdir}/{name}.control.pt")
        del model
    report({"role": "control", "status": shim_status()})


def run(phase, workdir, name, out):
    bench_models = import_bench_models()
    if name == "encoder":
        model = build_encoder(bench_models)
    else:
        torch.manual_seed(0)
        model = bench_models.build_skeleton(name)
    model.load_state_dict(torch.load(f"{workdir}/{name}.state.pt"))
    model.eval()
    inputs = torch.load(f"{workdir}/{name}.inputs.pt")
    batches = inputs["calibration"] if phase == "calibrate" else [inputs["test"]]
    reset_stats()
    outputs = evaluate(model, batches)
    torch.save(outputs if phase == "calibrate" else outputs[0], out)
    report({"role": phase, "status": shim_status()})


def main():
    role, workdir = sys.argv[1], sys.argv[2]
    if role == "control":
        control(workdir, sys.argv[3:])
    elif role in ("calibrate", "infer"):
        run(role, workdir, sys.argv[3], sys.argv[4])
    else:
        sys.exit(f"unknown role {role!r}: expected control, calibrate or infer")


if __name__ == "__main__":
    main()
