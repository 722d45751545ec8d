"""IPEX 2.x static INT8 quantization, through the shim's calibration and int8 modes.

    prepared = prepare(model, default_static_qconfig_mapping, example_inputs=(x,))
    for x in calibration_data:
        prepared(x)                          # observes; results are fp32
    prepared.save_qconf_summary(qconf_summary="int8.json")   # optional: the seed's format
    quantized = convert(prepared)            # runs INT8 with what was observed

The shim decides how ranges are observed (IPEX_INT8_ALGORITHM, IPEX_INT8_GRANULARITY: mse
clipping and per-channel weights by default); a qconfig mapping is accepted for the call's sake.
Dynamic quantization and weight-only quantization are not provided.
"""

import atexit
import copy
import os
import shutil
import tempfile
import threading
import warnings

import torch

import ipex_shim as _shim

from .._scoped import scope_of, scoped_forward

__all__ = ["prepare", "convert", "default_static_qconfig_mapping", "default_static_qconfig"]


class StaticQConfigMapping:
    """The shim's static INT8 scheme: activations per tensor (u8 for a tensor never seen
    negative, else s8), weights per output channel, ranges by IPEX_INT8_ALGORITHM (mse by
    default: clipped where the squared error of quantising is smallest)."""

    def __repr__(self):
        return ("ipex_shim static INT8 (ranges: IPEX_INT8_ALGORITHM, mse by default; weights: "
                "IPEX_INT8_GRANULARITY, per channel by default)")


default_static_qconfig_mapping = StaticQConfigMapping()
default_static_qconfig = default_static_qconfig_mapping

_NOT_PROVIDED = {
    "default_dynamic_qconfig_mapping": "dynamic quantization is not provided by ipex-shim: use "
                                       "static quantization (prepare, calibrate, convert)",
    "default_dynamic_qconfig": "dynamic quantization is not provided by ipex-shim: use static "
                               "quantization (prepare, calibrate, convert)",
    "get_weight_only_quant_qconfig_mapping": "weight-only quantization is not provided by "
                                             "ipex-shim: use static quantization",
    "autotune": "ipex.quantization.autotune is not provided: calibrate with prepare(), and "
                "IPEX_INT8_MIN_SQNR keeps sensitive ops out of INT8 (in BF16 where the CPU has "
                "native BF16, else fp32: IPEX_INT8_FALLBACK)",
}


def __getattr__(name):
    if name in _NOT_PROVIDED:
        raise AttributeError(_NOT_PROVIDED[name])
    raise AttributeError(f"intel_extension_for_pytorch.quantization.{name} is not provided by "
                         "ipex-shim (provided: prepare, convert, "
                         "default_static_qconfig_mapping)")


def _check_qconfig(qconfig):
    if isinstance(qconfig, StaticQConfigMapping):
        return
    name = type(qconfig).__name__
    if "QConfig" in name:  # torch.ao's QConfig / QConfigMapping: their observers are not used
        if "dynamic" in repr(qconfig).lower() or "PlaceholderObserver" in repr(qconfig):
            raise ValueError("prepare: a dynamic qconfig is not supported by ipex-shim: use "
                             "ipex.quantization.default_static_qconfig_mapping")
        return
    raise TypeError(f"prepare: configure must be a qconfig mapping "
                    f"(ipex.quantization.default_static_qconfig_mapping), not {name}")


class _Prepared:
    """What prepare() adds to a model: its calibration, saved and loaded in the seed's format."""

    def __init__(self, module):
        self.module = module
        self.summary = None  # a config file loaded by load_qconf_summary

    def save_qconf_summary(self, qconf_summary):
        if self.summary is not None:
            shutil.copyfile(self.summary, qconf_summary)
            return
        _shim.save_config(qconf_summary)

    def load_qconf_summary(self, qconf_summary):
        path = os.path.abspath(os.fspath(qconf_summary))
        _shim.load_config(path)  # raises on a file that cannot be used
        self.summary = path


class _SaveSummary:
    def __init__(self, prepared):
        self.prepared = prepared

    def __call__(self, qconf_summary):
        self.prepared.save_qconf_summary(qconf_summary)


class _LoadSummary:
    def __init__(self, prepared):
        self.prepared = prepared

    def __call__(self, qconf_summary):
        self.prepared.load_qconf_summary(qconf_summary)


_workspace_lock = threading.Lock()
_workspace = None


def _private_config_path():
    """A file of this process's own, for a calibration convert() applies without a save."""
    global _workspace
    with _workspace_lock:
        if _workspace is None:
            _workspace = tempfile.mkdtemp(prefix="ipex-shim-")
            atexit.register(shutil.rmtree, _workspace, True)
        handle, path = tempfile.mkstemp(suffix=".json", dir=_workspace)
        os.close(handle)
        return path


def prepare(model, configure=default_static_qconfig_mapping, example_inputs=None, inplace=False,
            bn_folding=True, example_kwarg_inputs=None):
    """Returns `model` (a copy unless inplace=True) set to calibrate: calling it observes
    every quantisable op, with fp32 results. What was observed before is forgotten."""
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"prepare: model must be a torch.nn.Module, not {type(model).__name__}")
    _check_qconfig(configure)
    if not inplace:
        model = copy.deepcopy(model)
    _shim.reset_calibration()
    scoped_forward(model, "calibration")
    prepared = _Prepared(model)
    model.save_qconf_summary = _SaveSummary(prepared)
    model.load_qconf_summary = _LoadSummary(prepared)
    model._ipex_shim_prepared = prepared
    return model


def convert(model, inplace=False):
    """Returns the prepared `model` (a copy unless inplace=True) set to run INT8 with what its
    calibration observed, or with the summary load_qconf_summary() gave it. Where the shim is
    not running, says so and returns it running stock fp32."""
    prepared = getattr(model, "_ipex_shim_prepared", None)
    if prepared is None or scope_of(model) is None:
        raise ValueError("convert: the model does not come from ipex.quantization.prepare(); "
                         "prepare it, run it on calibration data, then convert it")
    if not inplace:
        model = copy.deepcopy(model)
    if _shim.attached() is None:
        # Nothing was observed: the program goes on in stock fp32, as the import warned.
        warnings.warn(f"ipex_shim: convert: {_shim.status()['why']}; the model runs stock fp32",
                      RuntimeWarning, stacklevel=2)
    else:
        path = prepared.summary
        if path is None:
            path = _private_config_path()
            _shim.save_config(path)
        _shim.load_config(path)
        scoped_forward(model, "int8", path)
    for name in ("save_qconf_summary", "load_qconf_summary", "_ipex_shim_prepared"):
        model.__dict__.pop(name, None)
    return model
