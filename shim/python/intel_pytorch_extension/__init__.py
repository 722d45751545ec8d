"""The Intel Extension for PyTorch 1.x API (the seed's README), on stock PyTorch, with
ipex-shim as the engine.

    import intel_pytorch_extension as ipex
    model = Model().to(ipex.DEVICE)
    ipex.enable_auto_mixed_precision(mixed_dtype=torch.bfloat16)      # BF16
    conf = ipex.AmpConf(torch.int8)                                   # INT8 calibration
    with ipex.AutoMixPrecision(conf, running_mode="calibration"):
        model(x)
    conf.save("configure.json")
    conf = ipex.AmpConf(torch.int8, "configure.json")                 # INT8 inference
    with ipex.AutoMixPrecision(conf, running_mode="inference"):
        model(x)

The extension ran every op of a model moved to its device on its own fp32 kernels. Here
the shim's kernels serve the CPU itself: DEVICE is the CPU, and importing this package sets
the shim's fp32 mode unless IPEX_MODE chose another. Only the process, not a device,
distinguishes the two, so code that never moves to DEVICE runs on the shim's kernels too.
"""

import os
import tempfile
import threading

import torch

import ipex_shim as _shim

__all__ = ["DEVICE", "enable_auto_mixed_precision", "get_auto_mixed_precision", "AmpConf",
           "AutoMixPrecision"]

# Moving a module or tensor here keeps it on the CPU, where the shim's kernels run.
DEVICE = torch.device("cpu")

_RUNNING_MODES = ("calibration", "inference")
_mixed_dtype = None


def _start():
    """The extension accelerated fp32 without being asked: so does this package, unless the
    environment chose a mode."""
    state = _shim.status()
    if state.get("active") is not False and state.get("mode_source") == "environment" \
            and state.get("environment_mode") == "off":
        _shim.set_mode("fp32")


def enable_auto_mixed_precision(mixed_dtype=torch.bfloat16, train=False):
    """mixed_dtype=torch.bfloat16: every thread runs in the shim's bf16 mode (heavy ops in
    BF16, results in fp32), for inference and, with train=True or not, training.
    mixed_dtype=None: back to fp32. INT8 goes through AmpConf/AutoMixPrecision instead."""
    global _mixed_dtype
    if not isinstance(train, bool):
        raise TypeError(f"enable_auto_mixed_precision: train must be True or False, not {train!r}")
    if mixed_dtype is None:
        _shim.set_mode("fp32")
    elif mixed_dtype == torch.bfloat16:
        _shim.set_mode("bf16")
    elif mixed_dtype == torch.int8:
        raise ValueError("enable_auto_mixed_precision: mixed_dtype=torch.int8 needs a "
                         "calibration: use AmpConf(torch.int8) with AutoMixPrecision(conf, "
                         "running_mode='calibration'), then running_mode='inference'")
    else:
        raise ValueError(f"enable_auto_mixed_precision: mixed_dtype={mixed_dtype!r} is not "
                         "supported (allowed: torch.bfloat16, or None to turn it off)")
    _mixed_dtype = mixed_dtype


def get_auto_mixed_precision():
    """The mixed_dtype last given to enable_auto_mixed_precision (None when off)."""
    return _mixed_dtype


class AmpConf:
    """The precision of an AutoMixPrecision block, and for INT8 its config.

    AmpConf(torch.int8): a new calibration (what was observed before is forgotten).
    AmpConf(torch.int8, path): the config a calibration saved, checked now.
    AmpConf(torch.bfloat16): BF16 inside the block.
    """

    def __init__(self, mixed_dtype=torch.bfloat16, configure_file=None):
        if mixed_dtype not in (torch.int8, torch.bfloat16):
            raise ValueError(f"AmpConf: mixed_dtype={mixed_dtype!r} is not supported "
                             "(allowed: torch.int8, torch.bfloat16)")
        self.dtype = mixed_dtype
        self.configure_file = None
        if mixed_dtype == torch.bfloat16:
            if configure_file is not None:
                raise ValueError("AmpConf: a configure_file applies to torch.int8 only; BF16 "
                                 "needs none")
            return
        if configure_file is None:
            _shim.reset_calibration()
            return
        if not isinstance(configure_file, (str, os.PathLike)):
            raise TypeError(f"AmpConf: configure_file must be a path, not "
                            f"{type(configure_file).__name__}")
        path = os.path.abspath(os.fspath(configure_file))
        try:
            with open(path, "rb") as config:
                config.read(1)
        except OSError as error:
            raise FileNotFoundError(f"AmpConf: cannot read configure_file {path}: "
                                    f"{error.strerror or error}") from None
        if not os.path.isfile(path):
            raise ValueError(f"AmpConf: configure_file {path} is not a regular file")
        # The shim reads and validates it now, so that a bad file fails here.
        _shim.load_config(path)
        self.configure_file = path

    def save(self, configure_file):
        """Writes the INT8 config, atomically: what calibration observed, or the file this
        conf was made from. Later AutoMixPrecision(self, running_mode='inference') uses it."""
        if self.dtype != torch.int8:
            raise ValueError("AmpConf.save: a torch.bfloat16 conf has no config to save")
        if not isinstance(configure_file, (str, os.PathLike)) or not os.fspath(configure_file):
            raise ValueError(f"AmpConf.save: configure_file must be a file path, not "
                             f"{configure_file!r}")
        path = os.path.abspath(os.fspath(configure_file))
        if self.configure_file is not None and self.configure_file != path:
            _copy_atomically(self.configure_file, path)
        elif self.configure_file is None:
            _shim.save_config(path)
        self.configure_file = path


def _copy_atomically(source, target):
    with open(source, "rb") as config:
        text = config.read()
    directory = os.path.dirname(target) or "."
    handle, temporary = tempfile.mkstemp(prefix=".ipex-config-", dir=directory)
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, target)
    except BaseException:
        try:
            os.unlink(temporary)
        except OSError:
            pass
        raise


class AutoMixPrecision:
    """Inside the block, the calling thread runs as `conf` and `running_mode` ask:
    calibration observes (results stay fp32), inference applies the INT8 config, a BF16 conf
    runs BF16. Leaving the block restores what was there; other threads are not affected."""

    def __init__(self, conf, running_mode="inference"):
        if not isinstance(conf, AmpConf):
            raise TypeError(f"AutoMixPrecision: conf must be an AmpConf, not "
                            f"{type(conf).__name__}")
        if running_mode not in _RUNNING_MODES:
            raise ValueError(f"AutoMixPrecision: running_mode={running_mode!r} is not valid "
                             f"(allowed: {', '.join(repr(m) for m in _RUNNING_MODES)})")
        self.conf = conf
        self.running_mode = running_mode
        self._scopes = threading.local()

    def _mode(self):
        if self.conf.dtype == torch.bfloat16:
            return "bf16", None
        if self.running_mode == "calibration":
            return "calibration", None
        if self.conf.configure_file is None:
            raise ValueError("AutoMixPrecision: running_mode='inference' needs a config: "
                             "AmpConf(torch.int8, 'configure.json'), or conf.save(path) after "
                             "calibration")
        return "int8", self.conf.configure_file

    def __enter__(self):
        mode_name, config = self._mode()
        scope = _shim.mode(mode_name, config=config)
        scope.__enter__()
        stack = getattr(self._scopes, "stack", None)
        if stack is None:
            stack = self._scopes.stack = []
        stack.append(scope)
        return self

    def __exit__(self, *exc):
        return self._scopes.stack.pop().__exit__(*exc)


_start()
