"""The Intel Extension for PyTorch 2.x entry points people use most, on stock PyTorch, with
ipex-shim as the engine.

    import intel_extension_for_pytorch as ipex
    model = ipex.optimize(model.eval(), dtype=torch.bfloat16)            # BF16 inference
    model, optimizer = ipex.optimize(model, optimizer=opt, dtype=torch.bfloat16)  # training
    prepared = ipex.quantization.prepare(model, ipex.quantization.default_static_qconfig_mapping,
                                         example_inputs=(x,))
    prepared(x)                                                          # calibration
    quantized = ipex.quantization.convert(prepared)                      # INT8

A model returned by optimize() runs in the shim's fp32 or bf16 mode whenever it is called
(its forward opens a scope of the calling thread), whatever the rest of the program runs
in. Its weights stay fp32 tensors of the same values: the shim packs its own copies and
repacks them whenever they change. What IPEX has and this package does not provide raises
an AttributeError that names it and what to use instead.
"""

import copy
import warnings

import torch

import ipex_shim as _shim

from . import quantization
from ._scoped import scoped_forward

__all__ = ["optimize", "quantization"]
__version__ = "2.8.0+ipex_shim"

# optimize()'s keyword arguments that IPEX 2.x documents. The shim does what they ask for by
# itself (batch-norm folding, weight packing, fused kernels) or they do not apply to it, so
# they are accepted and change nothing.
_KNOWN_OPTIONS = {
    "conv_bn_folding", "linear_bn_folding", "weights_prepack", "replace_dropout_with_identity",
    "optimize_lstm", "split_master_weight_for_bf16", "fuse_update_step", "auto_kernel_selection",
    "sample_input", "graph_mode", "concat_linear", "deployment_mode",
}
_LEVELS = ("O0", "O1")
_warned_options = False


def optimize(model, dtype=None, optimizer=None, level="O1", inplace=False, **options):
    """Returns `model` (a copy unless inplace=True) set to run in the shim's fp32 mode
    (dtype None or torch.float32) or bf16 mode (torch.bfloat16); with `optimizer`, returns
    (model, optimizer), the optimizer updating the returned model's parameters. level='O0'
    runs the model stock."""
    global _warned_options
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"optimize: model must be a torch.nn.Module, not {type(model).__name__}")
    if dtype in (None, torch.float32):
        mode = "fp32"
    elif dtype == torch.bfloat16:
        mode = "bf16"
    elif dtype == torch.int8:
        raise ValueError("optimize: dtype=torch.int8 is not how INT8 is done: use "
                         "ipex.quantization.prepare(...), calibrate, then "
                         "ipex.quantization.convert(...)")
    else:
        raise ValueError(f"optimize: dtype={dtype!r} is not supported "
                         "(allowed: None, torch.float32, torch.bfloat16)")
    if level not in _LEVELS:
        raise ValueError(f"optimize: level={level!r} is not supported (allowed: 'O0', 'O1')")
    if optimizer is not None and not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(f"optimize: optimizer must be a torch.optim.Optimizer, not "
                        f"{type(optimizer).__name__}")
    unknown = sorted(set(options) - _KNOWN_OPTIONS)
    if unknown and not _warned_options:
        _warned_options = True
        warnings.warn(f"ipex.optimize: {', '.join(unknown)} not known to ipex-shim; accepted "
                      "and ignored", UserWarning, stacklevel=2)
    if level == "O0":
        mode = "off"
    if not inplace:
        # One deep copy of both, so that the optimizer's parameters are the copy's.
        model, optimizer = copy.deepcopy((model, optimizer))
    scoped_forward(model, mode)
    return model if optimizer is None else (model, optimizer)


# IPEX 2.x names this package does not provide, and what to use instead.
_NOT_PROVIDED = {
    "llm": "ipex.llm (large language model kernels) is not provided by ipex-shim: use "
           "ipex.optimize(model, dtype=torch.bfloat16), or IPEX_MODE=bf16",
    "xpu": "ipex.xpu (Intel GPUs) is not provided: ipex-shim runs on the CPU",
    "cpu": "ipex.cpu (runtime extensions, thread pinning) is not provided: use OMP_NUM_THREADS "
           "and taskset/numactl",
    "enable_onednn_fusion": "ipex.enable_onednn_fusion is not provided: fusion is on by "
                            "default; IPEX_FUSION=0 turns it off for the process",
    "set_fp32_math_mode": "ipex.set_fp32_math_mode is not provided: fp32 mode keeps fp32 "
                          "numerics; for BF16 use optimize(model, dtype=torch.bfloat16)",
    "fast_bert": "ipex.fast_bert is not provided: use ipex.optimize(model, "
                 "dtype=torch.bfloat16)",
    "compile": "ipex.compile is not provided: use torch.compile, or call the optimized model "
               "directly",
    "enable_auto_channels_last": "ipex.enable_auto_channels_last is not provided: the shim "
                                 "picks oneDNN's layouts itself",
    "disable_auto_channels_last": "ipex.disable_auto_channels_last is not provided: the shim "
                                  "picks oneDNN's layouts itself",
}


def __getattr__(name):
    if name in _NOT_PROVIDED:
        raise AttributeError(_NOT_PROVIDED[name])
    raise AttributeError(f"intel_extension_for_pytorch.{name} is not provided by ipex-shim "
                         "(provided: optimize, quantization.prepare, quantization.convert, "
                         "quantization.default_static_qconfig_mapping)")
