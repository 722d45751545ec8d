"""ipex-shim from Python: the mode, changed while the program runs.

Importing this package (or `intel_pytorch_extension` / `intel_extension_for_pytorch`,
which import it) attaches to the shim that `LD_PRELOAD=libipex_shim.so` started, or, in a
process without the preload, loads the shim's core by its absolute path and starts it. The
mode is then what IPEX_MODE says (off when unset) until the program changes it:

    import ipex_shim
    ipex_shim.set_mode("bf16")                 # every thread without a scope of its own
    with ipex_shim.mode("int8", config="conf.json"):
        model(x)                               # this thread, inside the block only

Without the preload, threads that Python starts after the import are switched on here;
threads started by C++ code are not (the preload's pthread_create hook does that).
"""

import contextlib
import ctypes
import json
import os
import threading
import warnings

import torch

from ._location import CORE_PATH

__all__ = ["MODES", "attached", "set_mode", "mode", "status", "save_config", "load_config",
           "reset_calibration"]

# The modes IPEX_MODE takes ("inference" is accepted for int8).
MODES = ("off", "fp32", "bf16", "calibration", "int8")

_lock = threading.Lock()
_attached = None  # "preload", "import", or why the core is not running


def _core_status():
    """The core's status as a dict, or None when no core registered its ops in this process.
    A core that refused to start registers its status alone, which says why."""
    try:
        op = torch.ops.ipex_shim.status
    except (RuntimeError, AttributeError):
        return None
    try:
        return json.loads(op())
    except (RuntimeError, ValueError):  # registered but unreadable: taken as running
        return {}


def _refusal(status):
    """Why a core that is loaded stays off, or None when it runs."""
    if status is None or status.get("running", True):
        return None
    return "the shim stays off: " + (status.get("refused") or "it did not start")


def _switch_on_new_threads():
    """Without the preload no pthread_create hook exists: Python's threads switch the shim
    on as they start, before their target runs."""
    original = threading.Thread._bootstrap_inner
    if getattr(original, "_ipex_shim", False):
        return

    def _bootstrap_inner(self):
        try:
            torch.ops.ipex_shim.enable_thread()
        except Exception:  # the thread runs stock; nothing else to do
            pass
        original(self)

    _bootstrap_inner._ipex_shim = True
    threading.Thread._bootstrap_inner = _bootstrap_inner


def _attach():
    global _attached
    with _lock:
        if _attached is not None:
            return _attached
        loaded = _core_status()
        if loaded is not None:
            _attached = _refusal(loaded) or "preload"
        elif not os.path.isabs(CORE_PATH) or not os.path.isfile(CORE_PATH):
            _attached = f"{CORE_PATH} is missing (reinstall ipex-shim)"
        else:
            try:
                core = ctypes.CDLL(CORE_PATH, mode=os.RTLD_NOW | os.RTLD_LOCAL)
                started = core.ipex_shim_core_attach() == 0
            except (OSError, AttributeError) as error:
                started, _attached = False, f"cannot load {CORE_PATH}: {error}"
            if started:
                _switch_on_new_threads()
                _attached = "import"
            elif _attached is None:
                _attached = _refusal(_core_status()) or "the core did not start (it said why above)"
        if _attached not in ("preload", "import"):
            warnings.warn(f"ipex-shim: {_attached}; the program runs on stock PyTorch",
                          RuntimeWarning, stacklevel=3)
        return _attached


def attached():
    """How the shim runs in this process: "preload" (LD_PRELOAD started it), "import"
    (this package loaded it), or None when it could not start (the program runs stock)."""
    state = _attach()
    return state if state in ("preload", "import") else None


def _check_mode(value, argument="mode"):
    if not isinstance(value, str) or value not in MODES + ("inference",):
        raise ValueError(f"ipex_shim: {argument}={value!r} is not valid "
                         f"(allowed: {', '.join(MODES)}, or 'inference' for int8)")
    return "int8" if value == "inference" else value


def _check_config(mode_name, config):
    if config is None:
        return ""
    if not isinstance(config, (str, os.PathLike)):
        raise TypeError(f"ipex_shim: config must be a path, not {type(config).__name__}")
    if mode_name != "int8":
        raise ValueError(f"ipex_shim: config= applies to int8 mode only (mode is {mode_name!r}); "
                         "calibration writes its observations with save_config(path)")
    path = os.path.abspath(os.fspath(config))
    if not os.path.isfile(path):
        what = "a directory" if os.path.isdir(path) else "missing" if not os.path.exists(path) \
            else "not a regular file"
        raise FileNotFoundError(f"ipex_shim: config {path} is {what}; "
                                "int8 mode needs the JSON file calibration wrote")
    return path


def set_mode(mode_name, config=None):
    """Sets the process mode (every thread without a scope of its own) and returns the
    previous one. `config`: for int8, the config calibration wrote (once loaded, later
    calls may omit it). Raises ValueError for a bad mode, with the mode in effect unchanged."""
    mode_name = _check_mode(mode_name)
    path = _check_config(mode_name, config)
    if attached() is None:
        return "off"
    try:
        return torch.ops.ipex_shim.set_mode(mode_name, path)
    except RuntimeError as error:
        raise ValueError(str(error)) from None


@contextlib.contextmanager
def mode(mode_name, config=None):
    """The calling thread runs in `mode_name` inside the block; leaving it restores what was
    there (scopes nest). Other threads are not affected."""
    mode_name = _check_mode(mode_name)
    path = _check_config(mode_name, config)
    if attached() is None:
        yield
        return
    try:
        depth = torch.ops.ipex_shim.enter_mode(mode_name, path)
    except RuntimeError as error:
        raise ValueError(str(error)) from None
    try:
        yield
    finally:
        torch.ops.ipex_shim.exit_mode(depth)


def status():
    """torch.ops.ipex_shim.status() as a dict. When the shim is not running: "active" False
    and "why" it is not (with what a core that refused to start reported, if one did)."""
    if attached() is None:
        stopped = _core_status() or {"active": False}
        stopped["why"] = _attached
        return stopped
    return json.loads(torch.ops.ipex_shim.status())


def save_config(path):
    """Writes the INT8 config of what calibration observed so far to `path`, atomically (a
    previous file there is replaced whole or left unchanged). Returns what was written."""
    if not isinstance(path, (str, os.PathLike)) or not os.fspath(path):
        raise ValueError(f"ipex_shim: save_config needs a file path, not {path!r}")
    if attached() is None:
        raise RuntimeError(f"ipex_shim: nothing was calibrated: {_attached}")
    try:
        return torch.ops.ipex_shim.save_config(os.path.abspath(os.fspath(path)))
    except RuntimeError as error:
        raise RuntimeError(str(error)) from None


def load_config(path):
    """Reads the INT8 config at `path` now and makes it the one int8 mode applies (for every
    thread). Raises ValueError naming the problem when the file cannot be used; the config in
    use then stays."""
    path = _check_config("int8", path)
    if attached() is None:
        return "not used: " + str(_attached)
    try:
        return torch.ops.ipex_shim.load_config(path)
    except RuntimeError as error:
        raise ValueError(str(error)) from None


def reset_calibration():
    """Forgets what calibration observed (a new calibration starts from nothing)."""
    if attached() is not None:
        torch.ops.ipex_shim.reset_calibration()


_attach()
