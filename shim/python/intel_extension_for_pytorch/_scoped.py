"""A module's forward, run in a mode of the shim (a scope of the calling thread)."""

import warnings

import torch

import ipex_shim as _shim

_warned_tracing = False


class ScopedForward:
    """Stands in for `module.forward` (an instance attribute, so the class and its other
    instances are untouched). A plain class, so the module still pickles and deep-copies."""

    def __init__(self, module, mode, config=None):
        self.module = module
        self.mode = mode
        self.config = config

    def __call__(self, *args, **kwargs):
        global _warned_tracing
        forward = type(self.module).forward
        if self.mode == "int8" and torch.jit.is_tracing() and not _warned_tracing:
            _warned_tracing = True
            warnings.warn("torch.jit.trace of a model from ipex.quantization.convert records "
                          "its fp32 ops, and the traced module runs them in fp32: call the "
                          "converted model itself to run INT8", UserWarning, stacklevel=3)
        with _shim.mode(self.mode, config=self.config):
            return forward(self.module, *args, **kwargs)

    def __deepcopy__(self, memo):
        import copy
        return ScopedForward(copy.deepcopy(self.module, memo), self.mode, self.config)


def scoped_forward(module, mode, config=None):
    """From now on `module` runs in `mode` when called."""
    module.forward = ScopedForward(module, mode, config)
    return module


def scope_of(module):
    """The ScopedForward installed on `module`, or None."""
    forward = module.__dict__.get("forward")
    return forward if isinstance(forward, ScopedForward) else None
