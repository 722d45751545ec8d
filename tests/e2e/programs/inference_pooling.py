"""Pooling of tensors the program made, without a gradient (shim/ops_fusion_consumers.cpp:
oneDNN pools the fp32 values; an NCHW input through channel blocks). Each case runs
max_pool2d, avg_pool2d or adaptive_avg_pool2d under torch.no_grad or torch.inference_mode
on seeded inputs and records the output, its strides and the shim's counts for the op.

  argv[1]: where to torch.save the outputs.
Report: {"stock": bool, "ops": {case: counts of its op}}.
"""
import sys

import torch
import torch.nn.functional as F

from e2e_util import report, shim_status


def seeded(shape, seed):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def nan_at_corner(x):
    x = x.clone()
    x[0, 3, 5, 5] = float("nan")
    return x


def minus_inf_rows(x):
    x = x.clone()
    x[:, :, :4] = -float("inf")
    return x


NCHW = torch.contiguous_format
CL = torch.channels_last

CASES = {  # name: (input shape, seed, memory format, change to the input, call)
    "squeezenet_max_ceil": ((2, 32, 27, 27), 1, NCHW, None,
                            lambda x: F.max_pool2d(x, 3, 2, ceil_mode=True)),
    "max_channels_last": ((2, 24, 15, 15), 2, CL, None, lambda x: F.max_pool2d(x, 3, 2, 1)),
    "max_three_channels_nchw": ((2, 3, 15, 15), 3, NCHW, None, lambda x: F.max_pool2d(x, 2)),
    "inception_avg_pad": ((2, 64, 17, 17), 4, NCHW, None,
                          lambda x: F.avg_pool2d(x, 3, stride=1, padding=1)),
    "avg_pad_not_counted_cl": ((1, 16, 9, 11), 5, CL, None,
                               lambda x: F.avg_pool2d(x, 3, 1, 1, count_include_pad=False)),
    "avg_ceil_mode": ((2, 16, 9, 9), 6, NCHW, None,
                      lambda x: F.avg_pool2d(x, 2, ceil_mode=True)),
    "global_average_nchw": ((2, 128, 7, 7), 7, NCHW, None,
                            lambda x: F.adaptive_avg_pool2d(x, 1)),
    "global_average_cl": ((2, 128, 7, 7), 10, CL, None,
                          lambda x: F.adaptive_avg_pool2d(x, 1)),
    "global_average_not_global": ((2, 64, 14, 14), 11, NCHW, None,
                                  lambda x: F.adaptive_avg_pool2d(x, 7)),
    "max_nan": ((2, 16, 12, 12), 8, NCHW, nan_at_corner, lambda x: F.max_pool2d(x, 2)),
    "max_minus_inf": ((2, 16, 12, 12), 9, CL, minus_inf_rows,
                      lambda x: F.max_pool2d(x, 3, 2, 1)),
}
OP = {"max": "max_pool2d", "squeezenet_max_ceil": "max_pool2d", "inception_avg_pad": "avg_pool2d",
      "avg": "avg_pool2d", "global_average": "adaptive_avg_pool2d"}


def op_of(name):
    return next(op for prefix, op in OP.items() if name.startswith(prefix))


def main():
    out, counts = {}, {}
    for grad_mode, scope in (("no_grad", torch.no_grad), ("inference_mode", torch.inference_mode)):
        for name, (shape, seed, memory_format, change, call) in CASES.items():
            x = seeded(shape, seed).contiguous(memory_format=memory_format)
            if change is not None:
                x = change(x)
            if shim_status() is not None:
                torch.ops.ipex_shim.reset_stats()
            with scope():
                y = call(x)
            key = f"{name}/{grad_mode}"
            status = shim_status()
            counts[key] = status["ops"].get(op_of(name), {}) if status else None
            out[key] = {"y": y.clone(), "stride": list(y.stride())}
    torch.save(out, sys.argv[1])
    report({"stock": shim_status() is None, "ops": counts})


if __name__ == "__main__":
    main()
