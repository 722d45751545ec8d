"""Shared fixtures for the end-to-end tests of ipex-shim.

Every test runs real programs as subprocesses, with and without libipex_shim.so in
LD_PRELOAD, from a controlled environment: the caller's environment minus LD_PRELOAD,
every IPEX_* variable and OMP_NUM_THREADS (tests that need them set them explicitly).

The build directory is `<repo>/build` unless IPEX_SHIM_BUILD_DIR names another one; the
whole suite is skipped, with a message saying what to build, when the libraries are missing.
"""
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

E2E_DIR = Path(__file__).resolve().parent
PROGRAMS = E2E_DIR / "programs"
REPO_ROOT = E2E_DIR.parents[1]

# Generous: a cold `import torch` on a busy 2-core machine takes a few seconds.
DEFAULT_TIMEOUT = 180

# Markers the programs print so a test can pick their machine-readable report out of stdout.
REPORT_PREFIX = "E2E-REPORT:"


def _python():
    """The interpreter running pytest: the one that has torch (not a pyenv shim script)."""
    return sys.executable or "/usr/bin/python3"


PYTHON = _python()


def clean_env(extra=None, drop=()):
    """os.environ without LD_PRELOAD, IPEX_* and OMP_NUM_THREADS, then `extra` applied.

    A value of None in `extra` removes that variable."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k != "LD_PRELOAD" and not k.startswith("IPEX_") and k != "OMP_NUM_THREADS"
    }
    for name in drop:
        env.pop(name, None)
    for key, value in (extra or {}).items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = str(value)
    return env


def cosine(a, b):
    """Cosine similarity of two tensors, in double."""
    import torch  # collection must not need torch
    return torch.nn.functional.cosine_similarity(
        a.double().flatten(), b.double().flatten(), dim=0).item()


def rel_l2(got, ref):
    """|got - ref| / |ref| (L2 norms, in double)."""
    return ((got.double() - ref.double()).norm() / ref.double().norm()).item()


def rel_max(got, ref):
    """Largest absolute difference relative to the reference's largest magnitude."""
    return ((got - ref).abs().max() / ref.abs().max().clamp_min(1e-12)).item()


def assert_like_stock(got, stock, least_cosine, most_rel, label):
    """got is stock's result to a mode's accuracy: cosine and largest relative difference."""
    assert cosine(got, stock) >= least_cosine, (label, cosine(got, stock))
    assert rel_max(got, stock) <= most_rel, (label, rel_max(got, stock))


def assert_scenario_like_stock(runs, mode, grad_mode, scenario, tolerance, read_rel=None):
    """In run_in_modes' results, `scenario`'s result in (mode, grad_mode) is stock's to
    `tolerance` (least cosine, largest relative difference); with `read_rel`, its last element
    (a value the program read) is within that fraction of stock's."""
    least_cosine, most_rel = tolerance
    stock = runs["stock"]["results"][scenario]
    got = runs[(mode, grad_mode)]["results"][scenario]
    assert got.shape == stock.shape, (scenario, got.shape, stock.shape)
    assert_like_stock(got, stock, least_cosine, most_rel, scenario)
    if read_rel is not None:
        assert abs(got[-1] - stock[-1]) <= read_rel * abs(stock[-1]), (scenario, got[-1], stock[-1])


def run_in_modes(shim, tmp, program, modes, grad_modes, unfused=False):
    """Runs `program OUT.pt [GRAD_MODE]` stock, for calibration (writing tmp/conf.json) and
    under the shim in each mode and grad mode (int8 with that config); returns the saved
    results: {"stock": ..., (mode, grad_mode): ...}, with `unfused` also each shim run with
    IPEX_FUSION=0 as (mode, grad_mode, "unfused"). Each shim run must exit 0 without a
    kernel failure."""
    import torch  # collection must not need torch
    conf = tmp / "conf.json"
    proc = shim.run_py(program, preload=False, args=(str(tmp / "stock.pt"),))
    assert proc.returncode == 0, describe(proc)
    out = {"stock": torch.load(tmp / "stock.pt")}
    proc = shim.run_py(program, mode="calibration", env={"IPEX_CONFIG": str(conf)},
                       args=(str(tmp / "calibration.pt"),))
    assert proc.returncode == 0 and conf.exists(), describe(proc)
    variants = [((), {})] + ([(("unfused",), {"IPEX_FUSION": "0"})] if unfused else [])
    for mode in modes:
        for grad_mode in grad_modes:
            for tag, extra in variants:
                env = dict(extra, IPEX_CONFIG=str(conf)) if mode == "int8" else dict(extra)
                path = tmp / ("_".join((mode, grad_mode) + tag) + ".pt")
                proc = shim.run_py(program, mode=mode, env=env or None,
                                   args=(str(path), grad_mode))
                assert proc.returncode == 0, describe(proc)
                assert "kernel failed" not in proc.stderr, proc.stderr
                out[(mode, grad_mode) + tag] = torch.load(path)
    return out


def parse_report(stdout):
    """The JSON object a program printed on its `E2E-REPORT:` line (exactly one)."""
    lines = [l for l in stdout.splitlines() if l.startswith(REPORT_PREFIX)]
    assert len(lines) == 1, f"expected one {REPORT_PREFIX} line in stdout, got:\n{stdout}"
    return json.loads(lines[0][len(REPORT_PREFIX):])


# How the tests launch torchrun, the same on every release. Debian 13's torch 2.6 is built
# without libuv, and every TCPStore its launcher makes without asking the environment (the
# static rendezvous of --master_addr, the c10d rendezvous's TCP store, the store it shares
# with the workers) stops with "use_libuv was requested but PyTorch was build without libuv
# support". So the rendezvous goes through a file store, the agent does not share a TCP store
# (TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1), and USE_LIBUV=0 gives the stores that do read the
# environment (the workers' env:// store) the older implementation. torch 1.13 reads neither
# variable and has the same file-store rendezvous.
TORCHRUN_ENV = {"USE_LIBUV": "0", "TORCH_DISABLE_SHARE_RDZV_TCP_STORE": "1"}


def torchrun_rendezvous(directory):
    """torchrun's arguments for a one-machine rendezvous through a file in `directory`."""
    return ["--nnodes=1", "--rdzv_backend=c10d", f"--rdzv_endpoint={directory}/rendezvous",
            "--rdzv_conf=store_type=file"]


# What bf16 mode runs on a CPU without native BF16 is said once at start: expected on such
# machines, so the tests that read the shim's messages leave it out; test_cpu_plan.py checks it.
CPU_PLAN_LINES = ("ipex_shim: warning: IPEX_MODE=bf16 runs ",)


def shim_lines(stderr):
    """The lines of stderr that the shim wrote, but for CPU_PLAN_LINES."""
    return [l for l in stderr.splitlines()
            if l.startswith("ipex_shim:") and not l.startswith(CPU_PLAN_LINES)]


def calibrate_then_infer(run_py, program, tmp):
    """The INT8 flow on `program` (which takes OUT.pt and "calibrate" or "infer", and prints a
    JSON line last): a stock run, a calibration run writing tmp/conf.json, an int8 run with it.
    Returns the stock and int8 outputs, the int8 run's JSON line and the written config."""
    import torch  # the caller's tests need torch anyway; collection must not
    conf = tmp / "conf.json"
    proc = run_py(program, preload=False, args=(str(tmp / "stock.pt"), "infer"))
    assert proc.returncode == 0, describe(proc)
    proc = run_py(program, mode="calibration", env={"IPEX_CONFIG": str(conf)},
                  args=(str(tmp / "calibration.pt"), "calibrate"))
    assert proc.returncode == 0 and conf.exists(), describe(proc)
    proc = run_py(program, mode="int8", env={"IPEX_CONFIG": str(conf)},
                  args=(str(tmp / "int8.pt"), "infer"))
    assert proc.returncode == 0, describe(proc)
    return {"stock": torch.load(tmp / "stock.pt"), "int8": torch.load(tmp / "int8.pt"),
            "status": json.loads(proc.stdout.strip().splitlines()[-1]),
            "config": json.loads(conf.read_text())}


def describe(proc):
    """A failure message with everything a reader needs."""
    args = proc.args if isinstance(proc.args, str) else " ".join(map(str, proc.args))
    return (
        f"command: {args}\nreturn code: {proc.returncode}\n"
        f"--- stdout ---\n{proc.stdout}\n--- stderr ---\n{proc.stderr}"
    )


class Shim:
    """Paths of the built artefacts and helpers to run programs with or without them."""

    def __init__(self, build_dir):
        self.repo = REPO_ROOT
        self.build_dir = Path(build_dir).resolve()
        self.lib = self.build_dir / "libipex_shim.so"
        self.core = self.build_dir / "libipex_shim_core.so"
        self.launcher = self.build_dir / "ipex-run"
        self.python = PYTHON
        self.programs = PROGRAMS

    # -- environment -------------------------------------------------------------------------
    def env(self, mode=None, env=None, preload=True):
        """A controlled environment: preload the shim (and set IPEX_MODE) when asked."""
        extra = {}
        if preload:
            extra["LD_PRELOAD"] = str(self.lib)
        if mode is not None:
            extra["IPEX_MODE"] = mode
        extra.update(env or {})
        return clean_env(extra)

    # -- running -------------------------------------------------------------------------------
    def run(self, argv, mode=None, env=None, preload=True, timeout=DEFAULT_TIMEOUT, **kwargs):
        """Run argv; returns subprocess.CompletedProcess with text stdout/stderr."""
        kwargs.setdefault("cwd", "/tmp")
        return subprocess.run(
            [str(a) for a in argv],
            env=self.env(mode=mode, env=env, preload=preload),
            stdout=kwargs.pop("stdout", subprocess.PIPE),
            stderr=kwargs.pop("stderr", subprocess.PIPE),
            stdin=subprocess.DEVNULL,
            text=True,
            timeout=timeout,
            **kwargs,
        )

    def python_argv(self, code_or_path, args=()):
        """argv for running a program file (a Path, or a str naming an existing .py file)
        or a snippet of Python code."""
        if isinstance(code_or_path, Path) or (
            isinstance(code_or_path, str)
            and code_or_path.endswith(".py")
            and "\n" not in code_or_path
            and os.path.isfile(code_or_path)
        ):
            return [self.python, str(code_or_path), *map(str, args)]
        return [self.python, "-c", code_or_path, *map(str, args)]

    def run_py(self, code_or_path, mode=None, env=None, preload=True, args=(), **kwargs):
        """Run a Python program (file path or code) under the controlled environment."""
        return self.run(self.python_argv(code_or_path, args), mode=mode, env=env,
                        preload=preload, **kwargs)

    def onednn_refusal(self):
        """The shim's error line when it refuses this machine's oneDNN (its start-up check
        found a reorder that loses values), else None."""
        proc = self.run_py("import torch", mode="fp32")
        for line in proc.stderr.splitlines():
            if "lost values in a reorder" in line:
                return line.strip()
        return None

    def program(self, name):
        path = self.programs / name
        assert path.is_file(), f"missing helper program {path}"
        return path


@pytest.fixture(scope="session")
def repo_root():
    return REPO_ROOT


@pytest.fixture(scope="session")
def build_dir():
    path = Path(os.environ.get("IPEX_SHIM_BUILD_DIR") or REPO_ROOT / "build")
    missing = [
        name
        for name in ("libipex_shim.so", "libipex_shim_core.so", "ipex-run")
        if not (path / name).is_file()
    ]
    if missing:
        pytest.skip(
            f"ipex-shim is not built in {path} (missing: {', '.join(missing)}); build it with "
            f"`cmake -S {REPO_ROOT} -B {REPO_ROOT / 'build'} -G Ninja && "
            f"cmake --build {REPO_ROOT / 'build'}` or point IPEX_SHIM_BUILD_DIR at a build"
        )
    return path.resolve()


@pytest.fixture(scope="session")
def shim(build_dir):
    built = Shim(build_dir)
    refusal = built.onednn_refusal()
    if refusal:
        pytest.skip("the shim stays off on this machine, so its tests cannot run: " + refusal)
    return built


@pytest.fixture(scope="session")
def torch_available():
    if importlib.util.find_spec("torch") is None:
        pytest.skip(f"torch is not importable by {PYTHON}")
    return True


@pytest.fixture(scope="session")
def run_py(shim, torch_available):
    """run_py(code_or_path, mode=None, env=None, preload=True, args=(), **kw) ->
    CompletedProcess. mode=None leaves IPEX_MODE unset (the shim's default: off)."""
    return shim.run_py


@pytest.fixture(scope="session")
def run_cmd(shim):
    """run_cmd(argv, mode=None, env=None, preload=True, **kw) -> CompletedProcess."""
    return shim.run


@pytest.fixture(scope="session")
def cpu_plan(run_py):
    """What bf16 and int8 mode run on this CPU (status()["on_this_cpu"]), read once from a
    preloaded process: {"bf16": "...", "int8": "...", "int8_weight_bound": 127 or 63,
    "int8_residual_addends": "...", "native_bf16": bool}."""
    proc = run_py("import json, torch; print(json.dumps(json.loads("
                  "torch.ops.ipex_shim.status())['on_this_cpu']))", mode="fp32")
    assert proc.returncode == 0, describe(proc)
    plan = json.loads(proc.stdout.strip().splitlines()[-1])
    plan["native_bf16"] = plan["bf16"].startswith("BF16 kernels (native")
    return plan


def skip_without_kernels(cpu_plan, mode):
    """Skips a test of bf16 mode's own kernels on a CPU where that mode runs the fp32 kernels
    instead (int8 mode runs its INT8 kernels on every CPU)."""
    if mode == "bf16" and not cpu_plan["native_bf16"]:
        pytest.skip("bf16 mode runs " + cpu_plan["bf16"])


def bf16_path(cpu_plan):
    """The path bf16 mode's heavy ops are counted on here: onednn_bf16, or onednn_fp32 on a CPU
    without native BF16."""
    return "onednn_bf16" if cpu_plan["native_bf16"] else "onednn_fp32"


@pytest.fixture(scope="session")
def native_bf16(cpu_plan):
    """Skips a test of BF16 kernels on a CPU where bf16 mode runs the fp32 kernels."""
    if not cpu_plan["native_bf16"]:
        pytest.skip("bf16 mode runs " + cpu_plan["bf16"])
