#!/usr/bin/python3
"""Side-by-side CPU inference benchmark: stock PyTorch vs. ipex-shim.

Usage (from anywhere; paths default relative to the repo root = parent of scripts/):

    /usr/bin/python3 scripts/bench.py                         # resnet50, batch 16, all rows
    /usr/bin/python3 scripts/bench.py --model bert            # BERT-base-shaped encoder, batch 8
    /usr/bin/python3 scripts/bench.py --model bert_module     # the same of nn.TransformerEncoderLayer
    /usr/bin/python3 scripts/bench.py --model resnet18,mobilenet_v2 --rounds 3
    /usr/bin/python3 scripts/bench.py --variants stock_fp32,shim_bf16 --lib build/libipex_shim.so
    /usr/bin/python3 scripts/bench.py --quick --model resnet18,bert   # smoke test
    /usr/bin/python3 scripts/bench.py --preload-cost          # cost of LD_PRELOAD itself
    /usr/bin/python3 scripts/bench.py --calibration-cost      # cost of a calibration run

Rows ("variants"):
    stock_fp32     stock fp32 eager, eval(), torch.no_grad()
    jit_freeze     torch.jit.script (trace as fallback) -> freeze -> optimize_for_inference
    autocast_bf16  stock eager under torch.autocast("cpu", dtype=torch.bfloat16)
    ao_int8        torch.ao int8: CNNs: FX static quantization, onednn engine/qconfig
                   mapping, calibrated on a few seeded random batches; bert: dynamic
                   quantization of nn.Linear to qint8
    compile_fp32   torch.compile(model), inductor backend, torch._inductor.config.freezing
                   = True, called under no_grad (torch 2.x)
    compile_bf16   the same, called under torch.autocast("cpu", dtype=torch.bfloat16)
    pt2e_int8      PT2E static int8: torch.export.export_for_training (torch >= 2.5; else
                   capture_pre_autograd_graph), X86InductorQuantizer with its default
                   config, prepare_pt2e, the calibration batches ao_int8 uses, convert_pt2e,
                   then torch.compile as compile_fp32
                   The three need torch.compile: with an older torch in the children (e.g.
                   1.13) they are left out of the default rows, and printed as skipped
                   ("needs torch 2.x: torch.compile/PT2E") when asked for by --variants.
                   Their inductor cache is a fresh empty folder per row (cold compile)
                   unless --inductor-cache names one.
    shim_fp32      the unmodified stock_fp32 code, run with LD_PRELOAD=<lib> IPEX_MODE=fp32
    shim_bf16      ... IPEX_MODE=bf16
    shim_int8      a calibration run (IPEX_MODE=calibration IPEX_CONFIG=<tmp>/conf.json,
                   same calibration batches as ao_int8), then IPEX_MODE=int8 with that config
  A shim row is run only if the library exists and, in a child process started
  under that mode, torch.ops.ipex_shim.status()["implemented_modes"] lists the
  mode (shim_int8 needs both "calibration" and "int8"); otherwise it is printed
  as skipped, with the reason.
  Column "first s" (JSON: first_s), time to first result: seconds from the parent's
  spawning the row's worker to the end of the worker's first forward call.  It
  includes, for every row alike, interpreter start, import torch (for shim rows
  this is where the preloaded library loads and registers), building the model and
  loading its weights (~ the same in all rows: compare with stock_fp32); then the
  row's own preparation (scripting and freezing, quantization and calibration,
  export) and the first call (torch.compile rows compile during it; shim rows
  create their oneDNN primitives in it).  shim_int8 and prev_int8 add the wall time
  of the separate calibration run (spawn to exit), noted under the table.  The JSON
  also has load_s (model build + weight load), prep_s (that plus the preparation)
  and first_call_s.  Measured once per row, on whatever else the machine was doing.

Method:
  * The parent builds each model once from a fixed seed (torchvision models with
    weights=None; BN statistics from a few train-mode passes on seeded random
    data, classifier bias centered so the argmax depends on the input; see
    bench_models.py), saves its state_dict and the seeded inputs to a temp dir.
  * Each variant runs in its own long-lived worker process: /usr/bin/python3
    running this file with --worker, with that variant's environment (LD_PRELOAD
    and IPEX_* only for shim rows; OMP_NUM_THREADS/OPENBLAS_NUM_THREADS and
    torch.set_num_threads = --threads everywhere).  A worker loads the weights,
    prepares its variant, runs --warmup iterations (at least one: the first
    call, which ends the time to first result), reports "ready", and then
    serves commands, one JSON object per line, on stdin/stdout.  Workers are
    started one at a time.
  * Timing: --rounds interleaved rounds.  In round r every live worker in turn
    (order rotated by r) runs --round-warmup untimed and then --iters timed
    forward passes on the same input; the others wait idle on stdin, so only
    one process computes at any time.  Reported latency = median over all
    timed iterations of all rounds; throughput = batch / median; "vs stock" =
    stock_fp32 median / variant median (>1 means faster than stock).
    --paired VARIANT adds, for every row, the median over rounds of VARIANT's
    round median / the row's, and the rounds the row was faster: two rows timed
    in the same round share that round's state of the machine.
  * Agreement: at the end every worker returns its output on the fixed seeded
    input; vs. stock_fp32's output we report the cosine similarity of the
    flattened outputs and top-1 agreement (argmax over the last dim; fraction
    of rows that agree; for bert the rows are the batch*seq hidden vectors).
  * A worker that raises, crashes or hangs (--timeout; --setup-timeout while it
    prepares and warms up, 120 s in --quick) does not stop the run: its row is
    reported as FAILED with the error's last line.
  * Interference check: for every timed segment the worker reports its own CPU
    time and the parent reads the machine's busy time from /proc/stat; the
    difference, as a share of all cores, is the "other%" column (CPU used by
    other processes while that row was timed).  Above 10% a warning is
    printed: the numbers are disturbed (e.g. a compiler running meanwhile).
  * Results: a table on stdout, a JSON file (settings, raw per-iteration
    latencies, CPU model, BLAS, torch version, date, shim status/op counters),
    and a PNG bar chart of the "vs stock" ratios, each bar labelled with its
    time to first result.
  * Fairness: Debian's libtorch calls the system libblas.so.3; if that resolves
    to the reference BLAS instead of OpenBLAS, every fp32 GEMM that goes
    through BLAS is very slow and the comparison is skewed; this is checked
    and warned about at start.  With OpenBLAS's pthread build there is a
    second effect: OpenBLAS's own threads and libgomp's spin-waiting OpenMP
    threads compete for the cores, which can make stock fp32 GEMM-heavy
    models (bert) several times slower than with OMP_WAIT_POLICY=passive
    (which in turn slows OpenMP-heavy rows a little).  The default keeps the
    environment an unmodified program gets; pass --env OMP_WAIT_POLICY=passive
    (applied to every child, shim rows included) to see the other side.

Defaults: results go to bench-out/bench.json and bench-out/bench.png
(--json/--png to change); --quick = batch 2, 2 rounds x 2 iters, 4 warm-up calls and 1
per round. Four, because the first calls are set-up rather than speed: the shim learns its
fusions over its first four passes (chains, then handoffs, then joins of handed-over
bytes: inception_v3 INT8 took 361, 55, 41 and 31 ms for its first calls, then 27-28) and
jit.freeze's profiling executor optimises after its second call. With 1 warm-up call the
quick zoo timed those calls (squeezenet1_1 INT8 measured 6.4 ms against a steady 4.6).

--zoo runs every variant on the model zoo (ZOO below: twelve models, the encoder as
"bert"), in one interleaved run per model, and ends with a summary: per variant the
geometric mean over the models of the speed-up over stock fp32, and the lowest cosine to
stock fp32. A row that failed or was skipped on a model (FX cannot trace it, torch.compile
is missing) counts as 1.0x there, with the reason listed; "losses" lists every shim row
slower than stock fp32. --zoo --quick (batch 2, 2 rounds x 2 iters) is the quick setting.

Speed against the machine (every row):
  * FLOPs: the model's convolutions and matrix products (conv1d/2d/3d, mm, addmm, bmm,
    baddbmm; linear and matmul reach them), counted once per model by torch.profiler
    (with_flops) from their shapes on the benchmark's input, in the parent on stock fp32:
    the ops the shim sees and runs, at the same shapes. Element-wise ops, norms and pools
    are not counted. GFLOP/s = FLOPs / median latency.
  * --ceiling first runs ipex-shim-ceiling (built beside the library): oneDNN's own
    primitives on large matmul and convolution shapes in fp32, BF16 and INT8, the ISA
    oneDNN picked, and per precision the best GFLOP/s. Each row then also reports its
    GFLOP/s as a percentage of the ceiling of its precision (the precision its name says:
    *_fp32, stock_fp32 and jit_freeze fp32, *bf16* BF16, *int8* INT8; a precision oneDNN
    has no kernels for here has no ceiling). --ceiling-seconds sets the time per case.
  * --onednn-profile PASSES: after the timed rounds every row runs PASSES more passes with
    oneDNN's verbose log switched on (rows whose torch has oneDNN as a shared library:
    Debian's; a pip wheel's is inside libtorch and is reported unavailable) and reports a
    pass split into its matrix products in the row's precision (ms, GFLOP/s, % of the
    ceiling: the issue's "convolutions at 60% of the ceiling" is this column, the rows
    above count the whole pass), products in other precisions, oneDNN's other primitives,
    and the time outside oneDNN. Each product shape is also timed alone by
    ipex-shim-ceiling --shapes (--profile-seconds each), operands warm in the caches
    ("alone": what oneDNN itself reaches on the model's shapes; alone against the ceiling is
    what the shapes cost) and flushed from them ("cold"); a pass's products lie between the
    two. See scripts/onednn_profile.py.

--preload-cost measures what preloading alone costs: wall time (median of
--preload-runs=20 interleaved runs; posix_spawn + wait4) and max RSS of
/bin/true, sh -c true, python3 -c pass and python3 -c "import torch", each
with and without LD_PRELOAD=<lib> (IPEX_MODE=bf16), printed as a table with
the differences and written to bench-out/preload_cost.json.  Max RSS comes
from "/usr/bin/time -f %M /usr/bin/env LD_PRELOAD=... cmd" (a child forked
directly from Python would inherit Python's RSS as its ru_maxrss floor).
"""

import argparse
import contextlib
import datetime
import json
import os
import platform
import resource
import select
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback

SCRIPT_DIR = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(SCRIPT_DIR)
THIS_FILE = os.path.abspath(__file__)
DEFAULT_PYTHON = "/usr/bin/python3"
DEFAULT_LIB = os.path.join(REPO_ROOT, "build", "libipex_shim.so")
DEFAULT_OUT_DIR = os.path.join(REPO_ROOT, "bench-out")  # git-ignored

# torch 2.x's own alternatives: run only when the children's torch has torch.compile.
COMPILE_VARIANTS = ["compile_fp32", "compile_bf16", "pt2e_int8"]
NEEDS_TORCH2 = "needs torch 2.x: torch.compile/PT2E"
STOCK_VARIANTS = ["stock_fp32", "jit_freeze", "autocast_bf16", "ao_int8"] + COMPILE_VARIANTS
# prev_*: the same modes under another build of the shim (--lib-previous), for a change's
# before/after in one interleaved run; prev_int8 uses the config shim_int8's calibration wrote.
PREVIOUS_VARIANTS = ["prev_fp32", "prev_bf16", "prev_int8"]
SHIM_VARIANTS = ["shim_fp32", "shim_bf16", "shim_int8"] + PREVIOUS_VARIANTS
ALL_VARIANTS = STOCK_VARIANTS + SHIM_VARIANTS
SHIM_MODE = {"shim_fp32": "fp32", "shim_bf16": "bf16", "shim_int8": "int8",
             "prev_fp32": "fp32", "prev_bf16": "bf16", "prev_int8": "int8"}
INT8_VARIANTS = ("shim_int8", "prev_int8")


def lib_for(args, variant):
    """The shim library a preloaded row runs under."""
    return args.lib_previous if variant in PREVIOUS_VARIANTS else args.lib

PROTO_PREFIX = "@@BENCH "  # marks protocol lines on the worker's stdout

sys.path.insert(0, SCRIPT_DIR)


def log(msg=""):
    print(msg, flush=True)


def last_line(text):
    lines = [l.strip() for l in str(text).strip().splitlines() if l.strip()]
    return lines[-1] if lines else ""


def median(xs):
    return statistics.median(xs) if xs else float("nan")


# ===========================================================================
# System information
# ===========================================================================


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def cpu_flags():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = line.split(":", 1)[1].split()
                    return [x for x in flags if x.startswith(("avx512", "amx", "avx2", "avx_vnni"))]
    except OSError:
        pass
    return []


def blas_info():
    """Which library libblas.so.3 resolves to (Debian alternatives)."""
    info = {"alternative": None, "kind": "unknown", "query": None}
    link = "/etc/alternatives/libblas.so.3-x86_64-linux-gnu"
    if os.path.lexists(link):
        info["alternative"] = os.path.realpath(link)
    else:
        try:
            out = subprocess.run(["update-alternatives", "--query", "libblas.so.3-x86_64-linux-gnu"],
                                 capture_output=True, text=True, timeout=20).stdout
            for line in out.splitlines():
                if line.startswith("Value:"):
                    info["alternative"] = line.split(":", 1)[1].strip()
            info["query"] = out
        except (OSError, subprocess.SubprocessError):
            pass
    target = (info["alternative"] or "").lower()
    if "openblas" in target:
        info["kind"] = "openblas"
    elif "blis" in target:
        info["kind"] = "blis"
    elif "mkl" in target:
        info["kind"] = "mkl"
    elif "atlas" in target:
        info["kind"] = "atlas"
    elif target.endswith("/blas/libblas.so.3"):
        info["kind"] = "reference"
    return info


def mapped_libs(patterns):
    """Paths of loaded shared objects in this process matching any pattern."""
    found = []
    try:
        with open("/proc/self/maps") as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 6:
                    path = parts[5]
                    base = os.path.basename(path)
                    if any(p in base for p in patterns) and path not in found:
                        found.append(path)
    except OSError:
        pass
    return found


def shim_mapped():
    """True if a library named in LD_PRELOAD, or any *ipex_shim* library, is
    mapped into this process (i.e. the preload really happened)."""
    wanted = set()
    for entry in os.environ.get("LD_PRELOAD", "").replace(":", " ").split():
        wanted.add(os.path.realpath(entry))
    return any(os.path.realpath(p) in wanted or "ipex_shim" in os.path.basename(p)
               for p in mapped_libs(("",)))


def report_blas(torch_mod=None):
    info = blas_info()
    # What this (unpreloaded) process really mapped after importing torch.
    info["mapped"] = mapped_libs(("libblas", "libopenblas", "libblis", "libmkl")) if torch_mod else []
    log("BLAS: libblas.so.3 -> %s (%s)" % (info["alternative"], info["kind"]))
    if info["mapped"]:
        log("BLAS: mapped by torch in this process: %s" % ", ".join(info["mapped"]))
    if info["kind"] == "reference":
        bar = "!" * 78
        log(bar)
        log("!!! WARNING: libblas.so.3 is the REFERENCE BLAS (netlib), not OpenBLAS.")
        log("!!! Debian's libtorch calls it for fp32 GEMMs (linear/matmul): the stock")
        log("!!! fp32 rows will be far slower than they should be and every ratio is")
        log("!!! skewed in the shim's favour.  Install libopenblas0-pthread (or select")
        log("!!! it with update-alternatives) before trusting these numbers.")
        log(bar)
    elif info["kind"] != "openblas":
        log("BLAS: note: expected OpenBLAS (libopenblas0-pthread); got %s" % info["kind"])
    return info


# ===========================================================================
# Worker side (runs in the child processes)
# ===========================================================================


def _shim_status(torch):
    """torch.ops.ipex_shim.status() parsed, or None if the op is absent."""
    try:
        s = torch.ops.ipex_shim.status()
    except Exception:  # op not registered: library not loaded
        return None
    if isinstance(s, str):
        try:
            return json.loads(s)
        except ValueError:
            return {"raw": s}
    return s


def _prepare_variant(torch, variant, model, name, x, calib, notes):
    """Return fwd(x) -> output tensor for the variant (the model is in eval mode)."""
    import bench_models as bm
    nograd = torch.no_grad
    null = contextlib.nullcontext

    if variant in ("stock_fp32",) + tuple(SHIM_VARIANTS):
        # The shim rows run exactly this, unmodified, under LD_PRELOAD.
        net, ctx = model, null
    elif variant == "autocast_bf16":
        net = model
        ctx = lambda: torch.autocast("cpu", dtype=torch.bfloat16)  # noqa: E731
    elif variant == "jit_freeze":
        with torch.no_grad():
            try:
                net = torch.jit.script(model)
                notes.append("jit.script")
            except Exception as e:  # e.g. control flow TorchScript can't compile
                notes.append("jit.trace (script failed: %s)" % last_line(e)[:120])
                net = torch.jit.trace(model, (x,))
            net = torch.jit.freeze(net.eval())
            try:
                net = torch.jit.optimize_for_inference(net)
                notes.append("freeze+optimize_for_inference")
            except Exception as e:
                notes.append("freeze only (optimize_for_inference failed: %s)" % last_line(e)[:120])
        ctx = null
    elif variant == "ao_int8":
        torch.backends.quantized.engine = "onednn"
        if bm.is_transformer(name):
            import torch.ao.quantization as tq
            net = tq.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
            notes.append("dynamic quantization of nn.Linear (qint8), engine onednn")
        else:
            import torch.ao.quantization as tq
            from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx
            qmap = tq.get_default_qconfig_mapping("onednn")
            prepared = prepare_fx(model, qmap, example_inputs=(x,))
            with torch.no_grad():
                for c in calib:
                    prepared(c)
            net = convert_fx(prepared)
            notes.append("FX static quantization, onednn qconfig mapping/engine, %d calib batches"
                         % len(calib))
        ctx = null
    elif variant in COMPILE_VARIANTS:
        if not hasattr(torch, "compile"):
            raise RuntimeError("%s (this is torch %s)" % (NEEDS_TORCH2, torch.__version__))
        import torch._inductor.config as inductor_config
        # Freezing folds the weights into the graph as constants (and lets inductor
        # pre-pack them for oneDNN); it applies only to calls under no_grad, as fwd's are.
        inductor_config.freezing = True
        ctx = null
        if variant == "compile_bf16":
            ctx = lambda: torch.autocast("cpu", dtype=torch.bfloat16)  # noqa: E731
        if variant == "pt2e_int8":
            model = _pt2e_quantize(torch, model, x, calib, notes)
        # torch.compile only wraps here: dynamo traces and inductor compiles during the
        # first call, which is inside the time to first result.
        net = torch.compile(model, backend="inductor")
        notes.append("torch.compile inductor, freezing%s" % (
            ", under autocast bf16" if variant == "compile_bf16" else ""))
    else:
        raise ValueError("unknown variant %r" % variant)

    def fwd(inp):
        with nograd(), ctx():
            return net(inp)
    return fwd


def _pt2e_quantize(torch, model, x, calib, notes):
    """PT2E static INT8 for X86 inductor: export, annotate with X86InductorQuantizer's
    default config, calibrate on the calibration batches ao_int8 uses, convert."""
    from torch.ao.quantization.quantize_pt2e import convert_pt2e, prepare_pt2e
    import torch.ao.quantization.quantizer.x86_inductor_quantizer as xiq

    with torch.no_grad():
        if hasattr(torch.export, "export_for_training"):  # torch >= 2.5
            graph = torch.export.export_for_training(model, (x,)).module()
            how = "torch.export.export_for_training"
        else:
            from torch._export import capture_pre_autograd_graph
            graph = capture_pre_autograd_graph(model, (x,))
            how = "capture_pre_autograd_graph"
        quantizer = xiq.X86InductorQuantizer()
        quantizer.set_global(xiq.get_default_x86_inductor_quantization_config())
        prepared = prepare_pt2e(graph, quantizer)
        for c in calib:
            prepared(c)
        converted = convert_pt2e(prepared)
    notes.append("PT2E static int8: %s, X86InductorQuantizer default config, %d calib batches"
                 % (how, len(calib)))
    return converted


def worker_main(spec_json):
    """Child process: build, prepare, warm up, then serve JSON-line commands."""
    spec = json.loads(spec_json)
    # Protocol channel = a private dup of stdout; fd 1 itself (and sys.stdout)
    # go to stderr so that prints from Python or native code (e.g. the shim
    # with IPEX_VERBOSE) cannot corrupt the protocol.
    proto = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr

    def send(obj):
        proto.write(PROTO_PREFIX + json.dumps(obj) + "\n")
        proto.flush()

    try:
        import torch
        import bench_models as bm

        torch.set_num_threads(spec["threads"])
        torch.manual_seed(spec["seed"])
        name, variant = spec["model"], spec["variant"]
        notes = []

        t0 = time.perf_counter()
        model = bm.build_skeleton(name)
        model.load_state_dict(torch.load(spec["state_path"]))
        model.eval()
        data = torch.load(spec["input_path"])
        x, calib = data["x"], data["calib"]

        if spec["role"] == "calibrate":
            # shim calibration pass: the unmodified stock script on a few batches.
            t_passes = time.perf_counter()
            with torch.no_grad():
                for c in calib:
                    model(c)
            passes_s = time.perf_counter() - t_passes
            status = _shim_status(torch)
            written = write_s = None
            if spec.get("write_now") and status and status.get("mode") == "calibration":
                # --calibration-cost: the config's write timed on its own (the exit then
                # finds it written).
                t_write = time.perf_counter()
                written = torch.ops.ipex_shim.write_config()
                write_s = time.perf_counter() - t_write
            send({"ok": True, "status": status,
                  "shim_loaded": shim_mapped(),
                  "calib_batches": len(calib), "seconds": time.perf_counter() - t0,
                  "passes_s": passes_s, "write_s": write_s, "written": written})
            proto.close()
            return 0  # normal interpreter exit: lets the library write IPEX_CONFIG

        load_s = time.perf_counter() - t0
        fwd = _prepare_variant(torch, variant, model, name, x, calib, notes)
        prep_s = time.perf_counter() - t0  # model build and weight load included
        # The first call always runs (it counts as the first warm-up iteration): its end is
        # the time to first result; torch.compile rows compile during it.
        fwd(x)
        first_wall = time.time()  # compared with the parent's time.time() at spawn
        first_call_s = time.perf_counter() - t0 - prep_s
        for _ in range(spec["warmup"] - 1):
            fwd(x)
        send({"ok": True, "ready": True, "notes": notes, "prep_s": prep_s, "load_s": load_s,
              "first_call_s": first_call_s, "first_wall": first_wall,
              "warmup_s": time.perf_counter() - t0 - prep_s,
              "threads": torch.get_num_threads(), "pid": os.getpid(),
              "shim_loaded": shim_mapped(),
              "status": _shim_status(torch)})

        for line in sys.stdin:
            line = line.strip()
            if not line:
                continue
            cmd = json.loads(line)
            op = cmd.get("cmd")
            if op == "time":
                ru0, w0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
                for _ in range(cmd.get("warm", 0)):
                    fwd(x)
                lat = []
                for _ in range(cmd["iters"]):
                    t = time.perf_counter()
                    fwd(x)
                    lat.append((time.perf_counter() - t) * 1e3)
                ru1, w1 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
                # CPU seconds this worker (all its threads) used for the command,
                # so the parent can tell how much CPU *other* processes took.
                cpu = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
                send({"ok": True, "lat_ms": lat, "cpu_s": cpu, "wall_s": w1 - w0})
            elif op == "output":
                out = fwd(x)
                if isinstance(out, (tuple, list)):
                    out = out[0]
                dtype = str(out.dtype)  # e.g. bfloat16 under autocast
                torch.save(out.detach().float().contiguous(), cmd["path"])
                send({"ok": True, "path": cmd["path"], "dtype": dtype,
                      "shape": list(out.shape)})
            elif op == "status":
                send({"ok": True, "status": _shim_status(torch)})
            elif op == "profile":
                import onednn_profile
                reply = onednn_profile.capture(lambda: fwd(x), cmd["passes"],
                                               mapped_libs(onednn_profile.LIBRARIES))
                send(dict(reply, ok=True))
            elif op == "quit":
                send({"ok": True})
                break
            else:
                send({"ok": False, "error": "unknown command %r" % op})
        return 0
    except BaseException as e:  # report, then die: the parent marks the row failed
        tb = traceback.format_exc()
        sys.stderr.write(tb)
        try:
            send({"ok": False, "error": "%s: %s" % (type(e).__name__, last_line(e) or repr(e)),
                  "traceback": tb[-4000:]})
        except Exception:
            pass
        return 1


def probe_main():
    """Child process: print the shim status seen under the current environment."""
    try:
        import torch
        res = {"shim_loaded": shim_mapped(), "torch": torch.__version__}
        try:
            s = torch.ops.ipex_shim.status()
            res["status"] = json.loads(s) if isinstance(s, str) else s
        except Exception as e:
            res["status"] = None
            res["error"] = "torch.ops.ipex_shim.status() failed: %s" % last_line(e)
    except Exception as e:
        res = {"status": None, "error": "%s: %s" % (type(e).__name__, last_line(e))}
    sys.stdout.write(PROTO_PREFIX + json.dumps(res) + "\n")
    sys.stdout.flush()
    return 0


# ===========================================================================
# Parent side
# ===========================================================================


class WorkerError(Exception):
    pass


class Worker:
    """A long-lived child process speaking the JSON-line protocol."""

    def __init__(self, variant, args_list, env, log_path, own_group=False):
        # own_group: args_list starts a wrapper (GNU time) whose child is the worker; a kill
        # then goes to the whole process group, so that the worker does not outlive it.
        self.variant = variant
        self.log_path = log_path
        self.log_file = open(log_path, "wb")
        self.own_group = own_group
        self.proc = subprocess.Popen(args_list, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self.log_file, env=env, cwd=REPO_ROOT,
                                     start_new_session=own_group)
        self.buf = b""

    def log_tail(self, n=20):
        try:
            with open(self.log_path, "rb") as f:
                text = f.read()[-20000:].decode("utf-8", "replace")
            return "\n".join(text.splitlines()[-n:])
        except OSError:
            return ""

    def _crash_message(self):
        try:
            rc = self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            rc = None
        if rc is not None and rc < 0:
            try:
                what = "killed by %s" % signal.Signals(-rc).name
            except ValueError:
                what = "killed by signal %d" % -rc
        elif rc is None:
            what = "closed its output but is still running"
        else:
            what = "exited with code %d" % rc
        tail = last_line(self.log_tail())
        return "worker %s%s" % (what, (": " + tail) if tail else "")

    def send(self, obj):
        try:
            self.proc.stdin.write((json.dumps(obj) + "\n").encode())
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            raise WorkerError(self._crash_message())

    def recv(self, timeout):
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + timeout
        prefix = PROTO_PREFIX.encode()
        while True:
            while b"\n" in self.buf:
                line, self.buf = self.buf.split(b"\n", 1)
                if not line.startswith(prefix):
                    continue  # stray output from native code before the fd swap
                msg = json.loads(line[len(prefix):].decode())
                if not msg.get("ok"):
                    raise WorkerError(msg.get("error") or "worker reported failure")
                return msg
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self.kill()
                raise WorkerError("timed out after %.0f s" % timeout)
            ready, _, _ = select.select([fd], [], [], remaining)
            if not ready:
                continue
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                raise WorkerError(self._crash_message())
            self.buf += chunk

    def request(self, obj, timeout):
        self.send(obj)
        return self.recv(timeout)

    def kill(self):
        if self.own_group:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        if self.proc.poll() is None:
            self.proc.kill()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass

    def close(self, timeout=30):
        if self.proc.poll() is None:
            try:
                self.request({"cmd": "quit"}, timeout)
            except (WorkerError, ValueError):
                pass
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        for f in (self.proc.stdin, self.proc.stdout):
            try:
                f.close()
            except (OSError, BrokenPipeError):
                pass
        self.log_file.close()


EXTRA_ENV = {}  # --env KEY=VAL, applied to every child


def base_env(threads):
    """Environment for non-preloaded children: no LD_PRELOAD, no IPEX_*."""
    env = {k: v for k, v in os.environ.items()
           if k != "LD_PRELOAD" and not k.startswith("IPEX_")}
    # OpenBLAS (pthread build) reads OPENBLAS_NUM_THREADS first, then
    # OMP_NUM_THREADS; set both so that BLAS and OpenMP agree.
    for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env[k] = str(threads)
    env["PYTHONUNBUFFERED"] = "1"
    env.update(EXTRA_ENV)
    return env


def shim_env(threads, lib, mode, config=None):
    env = base_env(threads)
    env["LD_PRELOAD"] = lib
    env["IPEX_MODE"] = mode
    if config:
        env["IPEX_CONFIG"] = config
    if "IPEX_VERBOSE" in os.environ:
        env["IPEX_VERBOSE"] = os.environ["IPEX_VERBOSE"]
    return env


def probe_shim(python, env, timeout=180):
    """Run a child under env and return (status dict or None, error or None)."""
    try:
        r = subprocess.run([python, THIS_FILE, "--probe"], env=env, cwd=REPO_ROOT,
                           capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return None, "probe timed out after %d s" % timeout
    out = r.stdout.decode("utf-8", "replace")
    for line in out.splitlines():
        if line.startswith(PROTO_PREFIX):
            res = json.loads(line[len(PROTO_PREFIX):])
            if res.get("status") is None:
                err = res.get("error") or "no status"
                if not res.get("shim_loaded"):
                    err = "library not loaded in the child (%s)" % err
                return None, err
            return res["status"], None
    why = last_line(r.stderr.decode("utf-8", "replace"))
    if r.returncode < 0:
        try:
            sig = signal.Signals(-r.returncode).name
        except ValueError:
            sig = "signal %d" % -r.returncode
        why = "probe process (python3, import torch, status()) killed by %s%s" % (
            sig, (": " + why) if why else "")
    elif not why:
        why = "probe exited with code %d and printed no status" % r.returncode
    return None, why


def child_torch(python, parent_torch):
    """{"version", "compile"} of the torch the children import: the parent's own when
    --python is this interpreter, else asked once of that interpreter."""
    if os.path.realpath(python) == os.path.realpath(sys.executable):
        return {"version": parent_torch.__version__, "compile": hasattr(parent_torch, "compile")}
    code = ("import json, torch; print(json.dumps({'version': torch.__version__, "
            "'compile': hasattr(torch, 'compile')}))")
    try:
        r = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=300,
                           env=base_env(1))
        return json.loads(r.stdout.strip().splitlines()[-1])
    except (OSError, subprocess.SubprocessError, ValueError, IndexError) as e:
        log("note: could not ask %s for its torch version (%s); torch.compile rows are skipped"
            % (python, last_line(e) or type(e).__name__))
        return {"version": "unknown", "compile": False}


def cpu_busy_seconds():
    """Non-idle CPU time of the whole machine so far (from /proc/stat), in seconds."""
    try:
        with open("/proc/stat") as f:
            vals = [int(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = vals[3] + (vals[4] if len(vals) > 4 else 0)  # idle + iowait
    busy = sum(vals[:8]) - idle  # user nice system idle iowait irq softirq steal
    return busy / os.sysconf("SC_CLK_TCK")


def loadavg():
    try:
        with open("/proc/loadavg") as f:
            return [float(v) for v in f.read().split()[:3]]
    except (OSError, ValueError):
        return None


def implemented(status):
    modes = status.get("implemented_modes") if isinstance(status, dict) else None
    return list(modes) if isinstance(modes, (list, tuple)) else []


def summarize_ops(status, limit=12):
    """'conv2d[onednn_bf16=530], linear[stock=10]' from a status dict."""
    ops = status.get("ops") if isinstance(status, dict) else None
    if not isinstance(ops, dict) or not ops:
        return ""
    parts = []
    for op, paths in sorted(ops.items()):
        if isinstance(paths, dict):
            # counts per path only (skip nested details such as fallback_reasons)
            inner = ",".join("%s=%s" % (p, c) for p, c in sorted(paths.items())
                             if isinstance(c, (int, float)) and c)
            if inner:
                parts.append("%s[%s]" % (op, inner))
    more = len(parts) - limit
    return ", ".join(parts[:limit]) + (", +%d more" % more if more > 0 else "")


def check_shim_rows(args, variants, tmpdir):
    """Decide which shim rows can run.  Returns ({variant: reason_skipped}, probes)."""
    skipped, probes = {}, {}
    wanted = [v for v in variants if v in SHIM_VARIANTS]
    if not wanted:
        return skipped, probes
    for v in list(wanted):
        lib = lib_for(args, v)
        if not lib or not os.path.isfile(lib):
            skipped[v] = ("library not found at %s (build it first)" % lib if lib else
                          "no --lib-previous given")
            wanted.remove(v)
        elif v == "prev_int8" and "shim_int8" not in variants:
            skipped[v] = "needs shim_int8 in the same run (its calibration's config)"
            wanted.remove(v)
    for v in wanted:
        # shim_int8 needs a calibration run first, so its probe runs under
        # IPEX_MODE=calibration (IPEX_MODE=int8 needs an existing config);
        # the int8 worker re-checks status() under int8 once it starts.
        mode = "calibration" if v in INT8_VARIANTS else SHIM_MODE[v]
        cfg = os.path.join(tmpdir, "probe_conf.json") if mode == "calibration" else None
        status, err = probe_shim(args.python, shim_env(args.threads, lib_for(args, v), mode, cfg))
        probes[v] = {"probe_mode": mode, "status": status, "error": err}
        if status is None:
            skipped[v] = "status() unavailable under IPEX_MODE=%s: %s" % (mode, err)
            continue
        if status.get("refused"):
            skipped[v] = "the shim stays off under IPEX_MODE=%s: %s" % (mode, status["refused"])
            continue
        impl = implemented(status)
        need = ["calibration", "int8"] if v in INT8_VARIANTS else [SHIM_MODE[v]]
        missing = [m for m in need if m not in impl]
        if missing:
            skipped[v] = ("mode(s) %s not in implemented_modes %s (would only run stock PyTorch)"
                          % ("/".join(missing), impl))
    return skipped, probes


def start_worker(args, variant, model_name, env, role, paths, tmpdir, warmup, write_now=False,
                 wrapper=()):
    """A worker for the row; write_now: a calibrate worker writes its config before it
    reports (--calibration-cost times the write); wrapper: a command the worker runs under
    (GNU time), killed with it."""
    spawn_wall = time.time()  # the start of the worker's time to first result
    spec = {"role": role, "variant": variant, "model": model_name, "seed": args.seed,
            "threads": args.threads, "warmup": warmup, "write_now": write_now,
            "state_path": paths["state"], "input_path": paths["inputs"]}
    log_path = os.path.join(tmpdir, "%s_%s_%s.log" % (model_name, variant, role))
    w = Worker(variant, list(wrapper) + [args.python, THIS_FILE, "--worker", json.dumps(spec)],
               env, log_path, own_group=bool(wrapper))
    w.spawn_wall = spawn_wall
    return w


def run_to_exit(w, timeout):
    """A calibrate worker's one message, then its exit: (info, None) or (None, why)."""
    try:
        info = w.recv(timeout)
        rc = w.proc.wait(timeout=timeout)
    except (WorkerError, subprocess.TimeoutExpired) as e:
        w.kill()
        w.close()
        return None, "failed: %s" % e
    w.close()
    if rc != 0:
        return None, "exited with code %d: %s" % (rc, last_line(w.log_tail()))
    return info, None


def run_shim_calibration(args, model_name, paths, tmpdir, conf):
    """IPEX_MODE=calibration run of the stock script; returns (info, error)."""
    if os.path.exists(conf):
        os.remove(conf)
    env = shim_env(args.threads, args.lib, "calibration", conf)
    w = start_worker(args, "shim_int8", model_name, env, "calibrate", paths, tmpdir, 0)
    info, err = run_to_exit(w, args.timeout)
    if err:
        return None, "calibration run " + err
    if not os.path.isfile(conf):
        return info, "calibration run finished but did not write IPEX_CONFIG=%s" % conf
    return info, None


def agreement(ref, out):
    """(cosine of flattened outputs, top-1 agreement over rows of the last dim)."""
    import torch
    if ref.shape != out.shape:
        return None, None, "shape %s != reference %s" % (list(out.shape), list(ref.shape))
    a = ref.double().flatten()
    b = out.double().flatten()
    cos = float(torch.nn.functional.cosine_similarity(a, b, dim=0))
    r1 = ref.reshape(-1, ref.shape[-1]).argmax(-1)
    r2 = out.reshape(-1, out.shape[-1]).argmax(-1)
    top1 = float((r1 == r2).double().mean())
    return cos, top1, None


# The model zoo (--zoo): CNNs of several families, two vision transformers and the encoder.
ZOO = ["resnet50", "mobilenet_v2", "vgg16_bn", "inception_v3", "squeezenet1_1", "mnasnet1_0",
       "wide_resnet50_2", "regnet_x_1_6gf", "efficientnet_v2_s", "vit_b_16", "swin_t", "bert"]


def geomean(values):
    import math
    return math.exp(sum(math.log(v) for v in values) / len(values)) if values else None


def zoo_summary(results, variants):
    """Per variant: geometric mean of vs-stock over the models (1.0 where the row did not
    run, with the reason), lowest cosine, and the shim rows slower than stock."""
    summary = {}
    for v in variants:
        ratios, cosines, missing, losses = [], [], [], []
        for result in results:
            row = next((r for r in result.get("rows", []) if r["variant"] == v), None)
            if row is None or row.get("state") != "ok" or not row.get("vs_stock"):
                ratios.append(1.0)
                why = (row or {}).get("error") or result.get("error") or "did not run"
                missing.append("%s: %s" % (result["model"], last_line(str(why))[:100]))
                continue
            ratios.append(row["vs_stock"])
            if row.get("cosine") is not None:
                cosines.append(row["cosine"])
            if v in SHIM_VARIANTS and row["vs_stock"] < 1.0:
                losses.append("%s %.2fx" % (result["model"], row["vs_stock"]))
        summary[v] = {"geomean_vs_stock": geomean(ratios), "models": len(ratios),
                      "min_cosine": min(cosines) if cosines else None,
                      "counted_as_1x": missing, "losses": losses}
    return summary


def print_zoo_summary(summary):
    log("")
    log("Zoo: geometric mean of the speed-up over stock fp32, lowest cosine to stock fp32")
    log("%-14s %9s %11s %7s  %s" % ("variant", "geomean", "min cosine", "models", "notes"))
    for v, s in summary.items():
        notes = []
        if s["counted_as_1x"]:
            notes.append("1.0x for " + "; ".join(s["counted_as_1x"]))
        if s["losses"]:
            notes.append("slower than stock: " + ", ".join(s["losses"]))
        log("%-14s %8.2fx %11s %7d  %s" % (v, s["geomean_vs_stock"],
                                           fmt(s["min_cosine"], ".5f"), s["models"],
                                           " | ".join(notes)))


# The ops whose FLOPs count (torch.profiler computes FLOPs for these from their shapes).
FLOP_OPS = ("aten::conv1d", "aten::conv2d", "aten::conv3d", "aten::mm", "aten::addmm",
            "aten::bmm", "aten::baddbmm")


def count_flops(torch, model, x):
    """FLOPs (2 per multiply-add) of one pass of `model` on `x` in its convolutions and
    matrix products, and the same per op name.

    nn.TransformerEncoderLayer and nn.MultiheadAttention take PyTorch's fast path in eval
    without a gradient: one op whose products the profiler does not all see (the
    feed-forward's first, an addmm with its activation, is not counted: bert_module 120.8
    GFLOP a pass instead of 178.8). Such a model is counted with a gradient recorded, where
    those modules run their products as separate ops; the arithmetic is the same."""
    transformer_modules = (torch.nn.TransformerEncoderLayer, torch.nn.MultiheadAttention)
    plain_path = any(isinstance(m, transformer_modules) for m in model.modules())
    params = [p for p in model.parameters() if not p.requires_grad] if plain_path else []
    for p in params:
        p.requires_grad_(True)
    try:
        with torch.set_grad_enabled(plain_path), torch.profiler.profile(with_flops=True) as prof:
            model(x)
    finally:
        for p in params:
            p.requires_grad_(False)
    by_op = {}
    for event in prof.events():
        if event.name in FLOP_OPS and event.flops:
            by_op[event.name] = by_op.get(event.name, 0) + int(event.flops)
    return sum(by_op.values()), by_op


def precision_of(variant):
    """The precision a row's name says it runs in: fp32, bf16 or int8."""
    if "int8" in variant:
        return "int8"
    if "bf16" in variant:
        return "bf16"
    return "fp32"


def ceiling_tool_path(args):
    """ipex-shim-ceiling: --ceiling-tool, else the one built beside --lib."""
    return args.ceiling_tool or os.path.join(os.path.dirname(args.lib), "ipex-shim-ceiling")


def run_ceiling(args):
    """ipex-shim-ceiling's report (see the module docstring), or None with the reason logged."""
    tool = ceiling_tool_path(args)
    if not os.path.isfile(tool):
        log("ceiling: %s not found (build it: cmake --build build --target ipex-shim-ceiling)"
            % tool)
        return None
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    env.pop("LD_PRELOAD", None)
    log("ceiling: %s, %g s per case, %d threads" % (tool, args.ceiling_seconds, args.threads))
    proc = subprocess.run([tool, str(args.ceiling_seconds)], env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, timeout=900)
    if proc.returncode != 0:
        log("ceiling: failed (exit %d): %s" % (proc.returncode, last_line(proc.stderr)))
        return None
    report = json.loads(proc.stdout)
    log("ceiling: oneDNN %s, ISA %s" % (report["onednn"], report["onednn_isa"]))
    for row in report["results"]:
        if "gflops" in row:
            log("  %-5s %-36s %8.1f GFLOP/s  (%s)" % (row["precision"], row["case"],
                                                    row["gflops"], row["implementation"]))
        else:
            log("  %-5s %-36s unavailable: %s" % (row["precision"], row["case"],
                                                  row["unavailable"]))
    return report


def add_ceiling_figures(rows, variants, flops, ceiling):
    """GFLOP/s of every row that ran, and its share of its precision's ceiling."""
    for v in variants:
        row = rows[v]
        if row.get("state") != "ok" or not row.get("median_ms") or not flops:
            continue
        row["gflops"] = flops / 1e9 / (row["median_ms"] / 1e3)
        row["precision"] = precision_of(v)
        peak = (ceiling or {}).get("ceiling", {}).get(row["precision"])
        row["ceiling_pct"] = 100.0 * row["gflops"] / peak["gflops"] if peak else None


def print_ceiling_table(model_name, variants, rows, flops, ceiling):
    log("")
    log("Against the machine: %s, %.2f GFLOP a pass (convolutions and matrix products)"
        % (model_name, flops / 1e9))
    log("%-14s %10s %9s %11s" % ("variant", "GFLOP/s", "precision", "% ceiling"))
    for v in variants:
        row = rows[v]
        if row.get("gflops") is None:
            continue
        pct = row.get("ceiling_pct")
        log("%-14s %10.1f %9s %11s" % (v, row["gflops"], row["precision"],
                                       "-" if pct is None else "%.0f%%" % pct))
    if not ceiling:
        log("(no ceiling measured: --ceiling adds each row's share of it)")


def add_onednn_profiles(args, rows, variants):
    """Each row's --onednn-profile summary (onednn_profile.summarize), with its product
    shapes timed alone by ipex-shim-ceiling --shapes, one call per precision."""
    import onednn_profile as op

    wanted = {}
    for v in variants:
        capture = rows[v].get("onednn_capture") or {}
        if rows[v].get("state") != "ok" or not capture.get("available"):
            continue
        precision = precision_of(v)
        for r in capture["records"]:
            if r["kind"] in op.TIMED_ALONE and op.precision_of_record(r) == precision:
                wanted.setdefault(precision, set()).add(r["problem"])
    tool = ceiling_tool_path(args)
    alone, cold = {}, {}
    for precision, problems in sorted(wanted.items()):
        for timed, is_cold in ((alone, False), (cold, True)):
            timed[precision], why = op.standalone(tool, precision, sorted(problems),
                                                  args.profile_seconds, args.threads, is_cold)
            if why:
                log("oneDNN profile: %s shapes alone%s not timed: %s"
                    % (precision, " (cold)" if is_cold else "", why))
                timed[precision] = None
    for v in variants:
        row, capture = rows[v], rows[v].get("onednn_capture")
        if capture is None or row.get("state") != "ok":
            continue
        if not capture.get("available"):
            row["onednn_profile"] = {"unavailable": capture.get("why")}
            continue
        precision = precision_of(v)
        peak = ((args.ceiling_report or {}).get("ceiling", {}) or {}).get(precision)
        row["onednn_profile"] = op.summarize(capture, precision, row.get("median_ms"),
                                             peak["gflops"] if peak else None,
                                             alone.get(precision), cold.get(precision))


def print_onednn_profiles(args, model_name, rows, variants):
    log("")
    log("Inside oneDNN: %s, %d passes a row after the timed rounds (ONEDNN_VERBOSE's exec "
        "times), ms a pass: median = the timed rounds', profiled = these passes' (outside = "
        "profiled - oneDNN); products = convolutions, inner products and matmuls in the row's "
        "precision; alone, cold = the same shapes timed one by one by oneDNN in its own "
        "layouts, operands warm in the caches or flushed from them"
        % (model_name, args.onednn_profile))
    log("%-14s %8s %8s %8s %9s %8s %6s %8s %6s %8s %10s %8s %8s" % (
        "variant", "median", "profiled", "oneDNN", "products", "GFLOP/s", "%ceil", "alone",
        "%ceil", "cold", "other prec", "other", "outside"))
    for v in variants:
        prof = rows[v].get("onednn_profile")
        if prof is None:
            continue
        if "unavailable" in prof:
            log("%-14s unavailable: %s" % (v, prof["unavailable"]))
            continue
        log("%-14s %8.1f %8s %8.1f %9.1f %8s %6s %8s %6s %8s %10.1f %8.1f %8.1f" % (
            v, prof["median_ms"], fmt(prof.get("profiled_pass_ms"), ".1f"), prof["onednn_ms"],
            prof["products_ms"],
            fmt(prof.get("products_gflops"), ".0f"), fmt(prof.get("products_ceiling_pct"), ".0f"),
            fmt(prof.get("alone_ms"), ".1f"), fmt(prof.get("alone_ceiling_pct"), ".0f"),
            fmt(prof.get("cold_ms"), ".1f"), prof["other_precision_products_ms"],
            prof["other_primitives_ms"], prof["outside_ms"]))
    for v in variants:
        prof = rows[v].get("onednn_profile")
        if not prof or "shapes" not in prof or not args.profile_top:
            continue
        log("%s: the %d costliest product shapes (of %d)" % (
            v, min(args.profile_top, len(prof["shapes"])), len(prof["shapes"])))
        for shape in prof["shapes"][:args.profile_top]:
            log("  %7.2f ms (%4.1f calls) alone %7s cold %7s  %-32s %s" % (
                shape["ms_per_pass"], shape["calls_per_pass"],
                fmt(shape.get("alone_ms_per_pass"), ".2f"),
                fmt(shape.get("cold_ms_per_pass"), ".2f"), shape["implementation"],
                shape["problem"]))


def model_shape(args, model_name):
    """(batch, image size, a description of the input) of a model's rows."""
    import bench_models as bm

    is_bert = bm.is_transformer(model_name)
    batch = args.batch or (8 if is_bert else 16)
    image_size = args.image_size or bm.default_image_size(model_name)
    shape = ("seq %d" % args.seq) if is_bert else ("%dx%d" % (image_size, image_size))
    return batch, image_size, shape


def save_reference(args, model_name, batch, image_size, mdir):
    """Builds the seeded model and its inputs here (not preloaded) and saves them into mdir
    for the workers; returns (model, x, calib, paths)."""
    import torch
    import bench_models as bm

    t0 = time.perf_counter()
    torch.set_num_threads(args.threads)
    model = bm.build_reference_model(model_name, args.seed, image_size=image_size,
                                     bn_batches=args.bn_batches,
                                     bn_batch_size=min(batch, 8) if args.quick else 8)
    paths = {"state": os.path.join(mdir, "state.pt"), "inputs": os.path.join(mdir, "inputs.pt")}
    torch.save(model.state_dict(), paths["state"])
    x = bm.make_input(model_name, batch, args.seed + 1, image_size=image_size, seq=args.seq)
    calib = [bm.make_input(model_name, batch, args.seed + 100 + i, image_size=image_size,
                           seq=args.seq) for i in range(args.calib_batches)]
    torch.save({"x": x, "calib": calib}, paths["inputs"])
    log("built %s (%.1f M params) in %.1f s" %
        (model_name, sum(p.numel() for p in model.parameters()) / 1e6, time.perf_counter() - t0))
    return model, x, calib, paths


def bench_model(args, model_name, variants, tmpdir):
    """Benchmark one model; returns its result dict (rows in variants order)."""
    import torch
    import bench_models as bm

    is_bert = bm.is_transformer(model_name)
    batch, image_size, shape = model_shape(args, model_name)
    mdir = os.path.join(tmpdir, model_name)
    os.makedirs(mdir, exist_ok=True)

    log("")
    log("=" * 78)
    log("Model %s: batch %d, %s, threads %d, %d rounds x %d iters (+%d warm/round), warmup %d"
        % (model_name, batch, shape, args.threads, args.rounds, args.iters, args.round_warmup,
           args.warmup))
    log("=" * 78)

    # ---- reference weights and inputs, built once here (not preloaded) ----
    model, x, calib, paths = save_reference(args, model_name, batch, image_size, mdir)
    flops, flops_by_op = count_flops(torch, model.eval(), x)

    rows = {v: {"variant": v, "state": "pending", "lat_ms": [], "notes": []} for v in variants}

    # ---- which shim rows can run ----
    skipped, probes = check_shim_rows(args, variants, mdir)
    for v, why in skipped.items():
        rows[v]["state"] = "skipped"
        rows[v]["error"] = why
        log("SKIP %-13s %s" % (v, why))
    for v, p in probes.items():
        rows[v]["probe"] = p
    if not args.child_torch.get("compile"):
        for v in variants:
            if v in COMPILE_VARIANTS:
                rows[v]["state"] = "skipped"
                rows[v]["error"] = "%s (the children's torch is %s)" % (
                    NEEDS_TORCH2, args.child_torch.get("version"))
                log("SKIP %-13s %s" % (v, rows[v]["error"]))

    conf = os.path.join(mdir, "conf.json")
    if "shim_int8" in variants and rows["shim_int8"]["state"] == "pending":
        log("shim_int8: calibration run (IPEX_MODE=calibration, %d batches) ..." % len(calib))
        t = time.perf_counter()
        info, err = run_shim_calibration(args, model_name, paths, mdir, conf)
        # The calibration run is a whole process of its own: spawn to exit (config written).
        calib_wall_s = time.perf_counter() - t
        rows["shim_int8"]["calibration"] = info
        rows["shim_int8"]["calibration_wall_s"] = calib_wall_s
        if err:
            rows["shim_int8"]["state"] = "failed"
            rows["shim_int8"]["error"] = err
            log("FAIL %-13s %s" % ("shim_int8", err))
        else:
            rows["shim_int8"]["notes"].append("calibrated on %d batches" % len(calib))
            with open(conf) as f:
                rows["shim_int8"]["config_bytes"] = len(f.read())

    # ---- start workers one at a time; each prepares and warms up ----
    workers = {}
    for v in variants:
        if rows[v]["state"] != "pending":
            continue
        if v in SHIM_VARIANTS:
            # prev_int8 uses the config shim_int8's calibration wrote (shim_int8's worker may
            # already be running by now: only a calibration that failed or never ran counts).
            if v == "prev_int8" and rows["shim_int8"]["state"] in ("skipped", "failed"):
                rows[v]["state"] = "skipped"
                rows[v]["error"] = "shim_int8's calibration did not run"
                continue
            env = shim_env(args.threads, lib_for(args, v), SHIM_MODE[v],
                           conf if v in INT8_VARIANTS else None)
        else:
            env = base_env(args.threads)
            if v in COMPILE_VARIANTS:
                # inductor's on-disk caches: a fresh, empty one per row unless
                # --inductor-cache names one, so that the first result pays a cold compile.
                env["TORCHINDUCTOR_CACHE_DIR"] = args.inductor_cache or \
                    os.path.join(mdir, "inductor_cache_%s" % v)
        t = time.perf_counter()
        w = start_worker(args, v, model_name, env, "bench", paths, mdir, args.warmup)
        try:
            ready = w.recv(args.setup_timeout)
        except WorkerError as e:
            rows[v]["state"] = "failed"
            rows[v]["error"] = str(e)
            if "timed out" in str(e):  # WorkerError's wording for a recv past its limit
                rows[v]["error"] += " (preparing and warming up; --setup-timeout)"
            rows[v]["log_tail"] = w.log_tail()
            log("FAIL %-13s %s" % (v, e))
            w.kill()
            w.close()
            continue
        rows[v]["notes"] += ready.get("notes", [])
        rows[v]["prep_s"] = ready.get("prep_s")
        rows[v]["load_s"] = ready.get("load_s")
        rows[v]["first_call_s"] = ready.get("first_call_s")
        if ready.get("first_wall") is not None:
            # Time to first result: worker spawn to the end of its first forward call.
            first = ready["first_wall"] - w.spawn_wall
            if v in INT8_VARIANTS and rows["shim_int8"].get("calibration_wall_s") is not None:
                first += rows["shim_int8"]["calibration_wall_s"]
                rows[v]["first_includes_calibration_s"] = rows["shim_int8"]["calibration_wall_s"]
            rows[v]["first_s"] = first
        rows[v]["threads"] = ready.get("threads")
        rows[v]["shim_loaded"] = ready.get("shim_loaded")
        if v in SHIM_VARIANTS:
            st = ready.get("status")
            rows[v]["status_at_start"] = st
            problem = None
            if not ready.get("shim_loaded"):
                problem = "library is not mapped in the worker process"
            elif st is None:
                problem = "status() unavailable in the worker"
            elif SHIM_MODE[v] not in implemented(st):
                problem = "mode %s not in implemented_modes %s" % (SHIM_MODE[v], implemented(st))
            elif st.get("active") is False:
                problem = "status() reports active=false (mode %s)" % st.get("mode")
            if problem:
                rows[v]["state"] = "skipped"
                rows[v]["error"] = problem
                log("SKIP %-13s %s" % (v, problem))
                w.close()
                continue
        elif ready.get("shim_loaded"):
            rows[v]["notes"].append("WARNING: a preloaded/ipex_shim library is mapped in a "
                                    "stock worker")
        rows[v]["state"] = "running"
        workers[v] = w
        log("ready %-13s setup %.1f s (load+prepare %.1f s, first call %.1f s, first result "
            "%s s)  %s" % (v, time.perf_counter() - t, ready.get("prep_s", 0),
                           ready.get("first_call_s", 0), fmt(rows[v].get("first_s"), ".1f"),
                           "; ".join(rows[v]["notes"])))

    # ---- interleaved timing rounds ----
    order = [v for v in variants if v in workers]
    for r in range(args.rounds):
        live = [v for v in order if v in workers]
        if not live:
            break
        k = r % len(live)
        line = []
        for v in live[k:] + live[:k]:
            try:
                busy0 = cpu_busy_seconds()
                msg = workers[v].request({"cmd": "time", "iters": args.iters,
                                          "warm": args.round_warmup}, args.timeout)
                busy1 = cpu_busy_seconds()
            except WorkerError as e:
                rows[v]["state"] = "failed"
                rows[v]["error"] = "round %d: %s" % (r + 1, e)
                rows[v]["log_tail"] = workers[v].log_tail()
                log("FAIL %-13s %s" % (v, rows[v]["error"]))
                workers.pop(v).close(timeout=5)
                continue
            rows[v]["lat_ms"].append(msg["lat_ms"])
            if busy0 is not None and busy1 is not None and msg.get("wall_s"):
                # CPU used by anything other than this worker while it ran.
                other = max(0.0, (busy1 - busy0) - msg.get("cpu_s", 0.0))
                rows[v].setdefault("other_cpu_s", []).append(other)
                rows[v].setdefault("segment_cpu_capacity_s", []).append(
                    msg["wall_s"] * (os.cpu_count() or 1))
            line.append("%s %.1f" % (v, median(msg["lat_ms"])))
        log("round %d/%d (median ms): %s" % (r + 1, args.rounds, ", ".join(line)))

    # ---- outputs on the fixed input, final shim status ----
    outputs = {}
    for v in list(workers):
        path = os.path.join(mdir, "out_%s.pt" % v)
        try:
            msg = workers[v].request({"cmd": "output", "path": path}, args.timeout)
            rows[v]["output_dtype"] = msg.get("dtype")
            outputs[v] = torch.load(path)
            if v in SHIM_VARIANTS:
                st = workers[v].request({"cmd": "status"}, args.timeout).get("status")
                rows[v]["status_at_end"] = st
        except WorkerError as e:
            rows[v]["state"] = "failed"
            rows[v]["error"] = "output: %s" % e
            rows[v]["log_tail"] = workers[v].log_tail()
            log("FAIL %-13s %s" % (v, rows[v]["error"]))
    if args.onednn_profile:
        for v in list(workers):
            try:
                rows[v]["onednn_capture"] = workers[v].request(
                    {"cmd": "profile", "passes": args.onednn_profile}, args.timeout)
            except WorkerError as e:
                rows[v]["onednn_capture"] = {"available": False, "why": str(e)}
    for v in list(workers):
        workers.pop(v).close()

    if "stock_fp32" in outputs:
        ref, ref_src = outputs["stock_fp32"], "stock_fp32 worker"
    elif outputs:  # stock_fp32 not run (or failed): same computation, done here
        try:
            with torch.no_grad():
                ref = model(x).float()
            ref_src = "parent process (stock fp32 eager)"
        except Exception as e:
            ref, ref_src = None, "none: reference forward failed: %s" % last_line(e)
            log("reference output failed: %s" % last_line(e))
    else:
        ref, ref_src = None, "none"
    del model

    # ---- statistics ----
    stock_med = None
    if rows.get("stock_fp32", {}).get("state") == "running":
        stock_med = median([t for rnd in rows["stock_fp32"]["lat_ms"] for t in rnd])
    for v in variants:
        row = rows[v]
        if row["state"] != "running":
            continue
        lat = [t for rnd in row["lat_ms"] for t in rnd]
        row["state"] = "ok"
        row["runs"] = len(lat)
        row["median_ms"] = median(lat)
        row["min_ms"] = min(lat) if lat else None
        row["p25_ms"], row["p75_ms"] = (statistics.quantiles(lat, n=4)[0::2]
                                        if len(lat) >= 2 else (None, None))
        row["throughput"] = batch / (row["median_ms"] / 1e3) if lat else None
        row["vs_stock"] = (stock_med / row["median_ms"]) if (stock_med and lat) else None
        cap = sum(row.get("segment_cpu_capacity_s", []))
        row["other_load"] = (sum(row.get("other_cpu_s", [])) / cap) if cap > 0 else None
        if v in outputs and ref is not None:
            cos, top1, err = agreement(ref, outputs[v])
            row["cosine"], row["top1"] = cos, top1
            if err:
                row["notes"].append(err)
        st = row.get("status_at_end")
        if st is not None:
            row["ops_summary"] = summarize_ops(st)

    print_table(model_name, batch, variants, rows)
    if args.paired:
        add_paired_ratios(rows, variants, args.paired)
        print_paired_table(variants, rows, args.paired)
    add_ceiling_figures(rows, variants, flops, args.ceiling_report)
    print_ceiling_table(model_name, variants, rows, flops, args.ceiling_report)
    if args.onednn_profile:
        add_onednn_profiles(args, rows, variants)
        print_onednn_profiles(args, model_name, rows, variants)
    return {"model": model_name, "batch": batch, "image_size": None if is_bert else image_size,
            "seq": args.seq if is_bert else None, "reference_output": ref_src,
            "flops": flops, "flops_by_op": flops_by_op,
            "rows": [rows[v] for v in variants]}


def add_paired_ratios(rows, variants, anchor):
    """Each row against `anchor` round by round: both ran in the same round, one after the
    other, so a slow spell of a shared machine weighs on both sides of each ratio."""
    base = rows.get(anchor, {})
    if base.get("state") != "ok":
        return
    for v in variants:
        row = rows[v]
        if v == anchor or row["state"] != "ok":
            continue
        # Rounds where both timed something (a row that failed midway has fewer).
        pairs = [(median(a), median(b)) for a, b in zip(base["lat_ms"], row["lat_ms"]) if a and b]
        if not pairs:
            continue
        ratios = [a / b for a, b in pairs]
        row["paired"] = {"anchor": anchor, "round_ratios": ratios,
                         "median_ratio": median(ratios),
                         "faster_rounds": sum(1 for r in ratios if r > 1.0),
                         "rounds": len(ratios)}


def print_paired_table(variants, rows, anchor):
    log("")
    log("Paired with %s, round by round (ratio = %s's round median / the row's; >1: the row "
        "is faster)" % (anchor, anchor))
    hdr = "%-14s %12s %10s %10s %14s" % ("variant", "median ratio", "min", "max",
                                          "faster rounds")
    log(hdr)
    log("-" * len(hdr))
    for v in variants:
        pr = rows[v].get("paired")
        if not pr:
            continue
        log("%-14s %11.3fx %9.3fx %9.3fx %8d of %d" % (
            v, pr["median_ratio"], min(pr["round_ratios"]), max(pr["round_ratios"]),
            pr["faster_rounds"], pr["rounds"]))


def fmt(v, spec, dash="-"):
    return dash if v is None else format(v, spec)


def print_table(model_name, batch, variants, rows):
    log("")
    log("Results: %s, batch %d (vs stock = stock_fp32 median / row median; >1 is faster)"
        % (model_name, batch))
    hdr = "%-14s %10s %11s %9s %9s %7s %5s %7s %8s" % (
        "variant", "median ms", "samples/s", "vs stock", "cosine", "top1", "runs", "other%",
        "first s")
    log(hdr)
    log("-" * len(hdr))
    for v in variants:
        r = rows[v]
        if r["state"] == "ok":
            log("%-14s %10s %11s %9s %9s %7s %5d %7s %8s" % (
                v, fmt(r["median_ms"], ".1f"), fmt(r["throughput"], ".1f"),
                fmt(r["vs_stock"], ".2f") + ("x" if r["vs_stock"] else ""),
                fmt(r.get("cosine"), ".5f"), fmt(r.get("top1"), ".3f"), r["runs"],
                fmt(r.get("other_load") and 100 * r["other_load"], ".0f"),
                fmt(r.get("first_s"), ".1f")))
        else:
            log("%-14s %s: %s" % (v, r["state"].upper(), r.get("error", "")))
    busy = [v for v in variants if (rows[v].get("other_load") or 0) > 0.10]
    log("other% = CPU used by other processes while the row was timed, as % of all cores")
    log("first s = worker spawn to the end of its first forward call (interpreter, import "
        "torch, model\n          build and weight load, preparation or compilation, first call)")
    for v in variants:
        if rows[v].get("first_includes_calibration_s") is not None and rows[v]["state"] == "ok":
            log("          %s: includes its calibration run, %.1f s"
                % (v, rows[v]["first_includes_calibration_s"]))
    if busy:
        log("WARNING: other processes used >10%% of the CPU while timing %s: "
            "these numbers are disturbed; rerun on an idle machine." % ", ".join(busy))
    for v in variants:
        if rows[v].get("ops_summary"):
            log("  %s op paths: %s" % (v, rows[v]["ops_summary"]))


def write_png(path, results, settings):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(results)
    fig, axes = plt.subplots(n, 1, figsize=(8, 0.5 + 2.6 * n), squeeze=False)
    for ax, res in zip(axes[:, 0], results):
        names, vals, labels, colors = [], [], [], []
        for r in res["rows"]:
            names.append(r["variant"])
            if r["state"] == "ok" and r.get("vs_stock"):
                vals.append(r["vs_stock"])
                lab = "%.2fx" % r["vs_stock"]
                if r.get("cosine") is not None and r["cosine"] < 0.99:
                    lab += "  (cosine %.3f!)" % r["cosine"]  # flag wrong-ish outputs
                if r.get("first_s") is not None:
                    lab += "  first result %.1f s%s" % (
                        r["first_s"], " (calibration incl.)"
                        if r.get("first_includes_calibration_s") is not None else "")
                labels.append(lab)
                colors.append("tab:orange" if r["variant"].startswith("shim") else "tab:blue")
            else:
                vals.append(0.0)
                labels.append(r["state"] if r["state"] != "ok" else "n/a")
                colors.append("lightgray")
        ypos = list(range(len(names)))[::-1]
        ax.barh(ypos, vals, color=colors)
        ax.set_yticks(ypos)
        ax.set_yticklabels(names)
        ax.axvline(1.0, color="k", lw=0.8, ls="--")
        xmax = max(vals + [1.0]) * 1.7  # room for the labels
        ax.set_xlim(0, xmax)
        for y, v, lab in zip(ypos, vals, labels):
            ax.text(v + xmax * 0.01, y, lab, va="center", fontsize=8)
        ax.set_title("%s, batch %d, %d threads: speed-up vs stock_fp32"
                     % (res["model"], res["batch"], settings["threads"]), fontsize=10)
        ax.set_xlabel("stock_fp32 median latency / variant median latency")
    fig.suptitle("torch %s, %s" % (settings["torch"], settings["cpu"]), fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ---------------------------------------------------------------------------
# --preload-cost
# ---------------------------------------------------------------------------


def run_once(argv, env):
    """(wall ms, max RSS KiB per wait4, exit code) of one child via posix_spawn."""
    devnull = os.open(os.devnull, os.O_RDWR)
    try:
        t = time.perf_counter()
        pid = os.posix_spawn(argv[0], argv, env, file_actions=[
            (os.POSIX_SPAWN_DUP2, devnull, 0), (os.POSIX_SPAWN_DUP2, devnull, 1),
            (os.POSIX_SPAWN_DUP2, devnull, 2)])
        _, status, ru = os.wait4(pid, 0)
        wall = (time.perf_counter() - t) * 1e3
    finally:
        os.close(devnull)
    return wall, ru.ru_maxrss, os.waitstatus_to_exitcode(status)


GNU_TIME = "/usr/bin/time"
ENV_BIN = "/usr/bin/env"


def rss_once(argv, extra, env, tmpfile):
    """Max RSS (KiB) of argv run with the extra variables, or None.

    A child's ru_maxrss starts at its parent's RSS when it was forked (the
    kernel carries the pre-exec high-water mark over exec), so measuring a
    child of this ~16 MiB Python process directly can never report less than
    that.  Instead: /usr/bin/time -f %M (small, not preloaded) forks
    /usr/bin/env (small), which sets LD_PRELOAD/IPEX_MODE only for the final
    exec of the command."""
    cmd = [GNU_TIME, "-o", tmpfile, "-f", "%M", ENV_BIN] + \
        ["%s=%s" % kv for kv in extra.items()] + argv
    _, _, rc = run_once(cmd, env)
    try:
        with open(tmpfile) as f:
            return int(f.read().split()[-1])
    except (OSError, ValueError, IndexError):
        return None


def preload_cost_main(args):
    """Wall time and max RSS of tiny commands with and without LD_PRELOAD=<lib>."""
    n = args.preload_runs
    lib_ok = os.path.isfile(args.lib)
    use_time = os.access(GNU_TIME, os.X_OK) and os.access(ENV_BIN, os.X_OK)
    cmds = [("/bin/true", ["/bin/true"]),
            ("sh -c true", ["/bin/sh", "-c", "true"]),
            ("python3 -c pass", [args.python, "-c", "pass"]),
            ("python3 -c 'import torch'", [args.python, "-c", "import torch"])]
    plain = base_env(args.threads)
    preload_vars = {"LD_PRELOAD": args.lib, "IPEX_MODE": "bf16"}
    # (name, full env for the wall-time runs, variables added for the RSS runs)
    configs = [("plain", plain, {"IPEX_BENCH_PLAIN": "1"})]
    if lib_ok:
        configs.append(("preload", dict(plain, **preload_vars), preload_vars))
    rss_runs = min(n, 5)
    log("Preload cost: %d interleaved wall-time runs per cell (IPEX_MODE=bf16 when preloaded), "
        "lib %s%s" % (n, args.lib, "" if lib_ok else " (NOT FOUND: preloaded rows skipped)"))
    log("max RSS: %s" % ("max of %d runs each via %s -f %%M %s VAR=... cmd" % (rss_runs, GNU_TIME, ENV_BIN)
                         if use_time else "os.wait4 rusage (floor = this process's RSS: "
                         "%s not available)" % GNU_TIME))
    log("load average: %s" % (loadavg(),))
    data = {c: {k: {"wall_ms": [], "maxrss_kib": [], "rc": []} for k, _, _ in configs}
            for c, _ in cmds}
    fd, tmpfile = tempfile.mkstemp(prefix="ipex_bench_rss_")
    os.close(fd)
    try:
        # One untimed run of everything first (page cache, .pyc files).
        for _, argv in cmds:
            for _, env, _ in configs:
                run_once(argv, env)
        for i in range(n):
            cells = [(c, argv, k, env, extra) for c, argv in cmds for k, env, extra in configs]
            if i % 2:
                cells.reverse()  # alternate the order so neither side always goes first
            for c, argv, k, env, extra in cells:
                wall, rss, rc = run_once(argv, env)
                d = data[c][k]
                d["wall_ms"].append(wall)
                d["rc"].append(rc)
                if not use_time:
                    d["maxrss_kib"].append(rss)
                elif i < rss_runs:
                    r = rss_once(argv, extra, plain, tmpfile)
                    if r is not None:
                        d["maxrss_kib"].append(r)
    finally:
        os.remove(tmpfile)

    log("")
    hdr = "%-26s %10s %10s %9s %11s %11s %9s" % ("command", "plain ms", "preload ms", "diff ms",
                                                "plain MiB", "preload MiB", "diff MiB")
    log(hdr)
    log("-" * len(hdr))
    summary = {}
    for c, _ in cmds:
        s = {}
        for k, _, _ in configs:
            d = data[c][k]
            s[k] = {"median_wall_ms": median(d["wall_ms"]),
                    "p25_wall_ms": statistics.quantiles(d["wall_ms"], n=4)[0] if n > 1 else None,
                    "p75_wall_ms": statistics.quantiles(d["wall_ms"], n=4)[2] if n > 1 else None,
                    "max_rss_mib": max(d["maxrss_kib"]) / 1024.0 if d["maxrss_kib"] else None,
                    "nonzero_exits": sum(1 for r in d["rc"] if r != 0)}
        summary[c] = s
        p, q = s["plain"], s.get("preload")
        dw = q and q["median_wall_ms"] - p["median_wall_ms"]
        dr = q and p["max_rss_mib"] is not None and q["max_rss_mib"] is not None and \
            q["max_rss_mib"] - p["max_rss_mib"]
        log("%-26s %10.1f %10s %9s %11s %11s %9s" % (
            c, p["median_wall_ms"], fmt(q and q["median_wall_ms"], ".1f"), fmt(dw, "+.1f"),
            fmt(p["max_rss_mib"], ".1f"), fmt(q and q["max_rss_mib"], ".1f"),
            fmt(dr if dr is not False else None, "+.1f")))
        for k in s:
            if s[k]["nonzero_exits"]:
                log("  note: %s (%s) exited non-zero %d/%d times (codes %s)" % (
                    c, k, s[k]["nonzero_exits"], n, sorted(set(data[c][k]["rc"]))))
    if not lib_ok:
        log("note: preloaded rows skipped: %s does not exist" % args.lib)
    out = {"kind": "preload_cost", "date": datetime.datetime.now().isoformat(timespec="seconds"),
           "lib": args.lib, "lib_found": lib_ok, "runs": n, "rss_runs": rss_runs if use_time else n,
           "rss_method": "gnu time + env" if use_time else "wait4", "ipex_mode": "bf16",
           "cpu": cpu_model(), "nproc": os.cpu_count(), "loadavg_end": loadavg(),
           "summary": summary, "raw": data}
    path = args.json or os.path.join(DEFAULT_OUT_DIR, "preload_cost.json")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(out, f, indent=1)
    log("wrote %s" % path)
    return 0


CALIBRATION_ALGORITHMS = ("min_max", "mse", "percentile")


def calibration_cost_once(args, model_name, cell, paths, mdir, rss_file):
    """One calibration-shaped run of the model's script (the seeded calibration batches through
    the model, then exit), stock (cell "stock") or under IPEX_MODE=calibration with the cell's
    IPEX_INT8_ALGORITHM. Returns (measures, error)."""
    conf = os.path.join(mdir, "conf_%s.json" % cell)
    if os.path.exists(conf):
        os.remove(conf)
    if cell == "stock":
        env = base_env(args.threads)
    else:
        env = shim_env(args.threads, args.lib, "calibration", conf)
        env["IPEX_INT8_ALGORITHM"] = cell
    wrapper = [GNU_TIME, "-o", rss_file, "-f", "%M"] if os.access(GNU_TIME, os.X_OK) else []
    if os.path.exists(rss_file):
        os.remove(rss_file)  # a run GNU time could not report on must not read the last one's
    t = time.perf_counter()
    w = start_worker(args, cell, model_name, env, "calibrate", paths, mdir, 0, write_now=True,
                     wrapper=wrapper)
    info, err = run_to_exit(w, args.timeout)
    whole_s = time.perf_counter() - t  # the exit included (close() of an exited worker: ~0)
    if err:
        return None, "run " + err
    measures = {"whole_s": whole_s, "passes_s": info["passes_s"], "write_s": info["write_s"],
                "max_rss_mib": None}
    try:
        with open(rss_file) as f:
            measures["max_rss_mib"] = int(f.read().split()[-1]) / 1024.0
    except (OSError, ValueError, IndexError):
        pass
    if cell != "stock":
        # The run must have calibrated with the cell's algorithm and written its config.
        status = info.get("status")
        if not status:
            return None, "the shim was not loaded (LD_PRELOAD=%s)" % args.lib
        if status.get("mode") != "calibration":
            return None, "the shim did not calibrate (mode %s%s)" % (
                status.get("mode"), ", refused: %s" % status["refused"]
                if status.get("refused") else "")
        try:
            with open(conf) as f:
                entries = json.load(f)
        except (OSError, ValueError) as e:
            return None, "no config written (%s): %s" % (e, info.get("written"))
        used = sorted({e.get("algorithm") for e in entries})
        if used != [cell]:
            return None, "the config's entries say algorithm %s, not %s" % (used, cell)
        measures["entries"] = len(entries)
    return measures, None


def calibration_cost_main(args):
    """What calibration costs: each model's calibration batches run as a whole script, stock
    and under IPEX_MODE=calibration with each range algorithm, interleaved over --rounds."""
    import torch

    torch.set_num_threads(args.threads)
    cells = ["stock"] + list(CALIBRATION_ALGORITHMS)
    log("Calibration cost: %d interleaved runs per cell, %d threads, lib %s" %
        (args.rounds, args.threads, args.lib))
    log("CPU: %s, %d logical CPUs; flags: %s" % (cpu_model(), os.cpu_count(),
                                                 " ".join(cpu_flags()) or "-"))
    log("load average: %s" % (loadavg(),))
    if not os.access(GNU_TIME, os.X_OK):
        log("note: peak RSS not measured (%s is not installed)" % GNU_TIME)
    if not os.path.isfile(args.lib):
        cells = ["stock"]
        log("note: calibration rows skipped: %s does not exist" % args.lib)
    log("whole = spawn to exit (model build and load, the passes, the config's write, exit); "
        "passes = the calibration batches alone; write = torch.ops.ipex_shim.write_config()")
    tmpdir = tempfile.mkdtemp(prefix="ipex_bench_cost_")
    results = []
    try:
        for model_name in args.models:
            batch, image_size, shape = model_shape(args, model_name)
            mdir = os.path.join(tmpdir, model_name)
            os.makedirs(mdir, exist_ok=True)
            log("")
            log("Model %s: batch %d, %s, %d calibration batches" %
                (model_name, batch, shape, args.calib_batches))
            _, _, _, paths = save_reference(args, model_name, batch, image_size, mdir)
            data = {c: [] for c in cells}
            errors = {}
            rss_file = os.path.join(mdir, "rss.txt")
            for i in range(args.rounds):
                order = cells if i % 2 == 0 else list(reversed(cells))
                for c in order:
                    if c in errors:
                        continue
                    measures, err = calibration_cost_once(args, model_name, c, paths, mdir,
                                                          rss_file)
                    if err:
                        errors[c] = err
                        log("FAIL %-10s %s" % (c, err))
                    else:
                        data[c].append(measures)
            summary = {}
            for c in cells:
                if not data[c]:
                    continue
                summary[c] = {k: median([m[k] for m in data[c] if m.get(k) is not None])
                              if any(m.get(k) is not None for m in data[c]) else None
                              for k in ("whole_s", "passes_s", "write_s", "max_rss_mib")}
                summary[c]["runs"] = len(data[c])
                summary[c]["entries"] = data[c][-1].get("entries")
            stock = summary.get("stock")
            hdr = "%-11s %8s %8s %9s %8s %8s %9s %8s" % (
                "run", "whole s", "x stock", "passes s", "x stock", "write s", "RSS MiB", "entries")
            log(hdr)
            log("-" * len(hdr))
            for c in cells:
                s = summary.get(c)
                if not s:
                    log("%-11s failed: %s" % (c, errors.get(c)))
                    continue
                ratio = (lambda k: s[k] / stock[k] if stock and stock.get(k) else None)
                log("%-11s %8.2f %8s %9.2f %8s %8s %9s %8s" % (
                    c, s["whole_s"], fmt(ratio("whole_s"), ".2f"), s["passes_s"],
                    fmt(ratio("passes_s"), ".2f"), fmt(s["write_s"], ".2f"),
                    fmt(s["max_rss_mib"], ".0f"), fmt(s["entries"], "d")))
            log("(medians of %d runs a row)" % args.rounds)
            results.append({"model": model_name, "batch": batch,
                            "calib_batches": args.calib_batches, "summary": summary,
                            "errors": errors, "raw": data})
    finally:
        if not args.keep_tmp:
            shutil.rmtree(tmpdir, ignore_errors=True)
    out = {"kind": "calibration_cost",
           "date": datetime.datetime.now().isoformat(timespec="seconds"), "lib": args.lib,
           "threads": args.threads, "rounds": args.rounds, "cpu": cpu_model(),
           "cpu_flags": cpu_flags(), "nproc": os.cpu_count(), "loadavg_end": loadavg(),
           "results": results}
    path = args.json or os.path.join(DEFAULT_OUT_DIR, "calibration_cost.json")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(out, f, indent=1)
    log("wrote %s" % path)
    return 1 if any(r["errors"] for r in results) else 0


# ---------------------------------------------------------------------------
# main
# ---------------------------------------------------------------------------


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", action="append",
                   help="bert, bert_module or a torchvision classification model; repeatable or "
                        "comma-separated (default resnet50)")
    p.add_argument("--batch", type=int, help="batch size (default 16 for CNNs, 8 for bert)")
    p.add_argument("--threads", type=int, default=2, help="intra-op threads (default 2)")
    p.add_argument("--rounds", type=int, default=5, help="interleaved rounds (default 5)")
    p.add_argument("--iters", type=int, default=5, help="timed iterations per round (default 5)")
    p.add_argument("--warmup", type=int, default=3,
                   help="untimed iterations after a worker's setup (default 3)")
    p.add_argument("--round-warmup", type=int, default=1,
                   help="untimed iterations at the start of each worker's turn (default 1)")
    p.add_argument("--variants", help="comma list, subset of: " + ",".join(ALL_VARIANTS))
    p.add_argument("--json", help="results JSON (default bench-out/bench.json, "
                                  "or bench-out/preload_cost.json)")
    p.add_argument("--png", help="bar chart PNG (default bench-out/bench.png)")
    p.add_argument("--lib", default=DEFAULT_LIB, help="shim library (default %(default)s)")
    p.add_argument("--lib-previous", default=None, metavar="LIB",
                   help="another build's libipex_shim.so, run as the prev_* rows (a change's "
                        "before and after, interleaved)")
    p.add_argument("--python", default=DEFAULT_PYTHON, help="interpreter for children")
    p.add_argument("--inductor-cache", metavar="DIR",
                   help="inductor cache for the torch.compile rows (TORCHINDUCTOR_CACHE_DIR); "
                        "default: a fresh empty one per row, so first s is a cold compile")
    p.add_argument("--env", action="append", default=[], metavar="KEY=VAL",
                   help="extra environment for every child, e.g. OMP_WAIT_POLICY=passive "
                        "(repeatable)")
    p.add_argument("--seq", type=int, default=128, help="bert sequence length (default 128)")
    p.add_argument("--image-size", type=int, help="CNN input size (default 224)")
    p.add_argument("--calib-batches", type=int, default=4,
                   help="calibration batches for ao_int8 and shim_int8 (default 4)")
    p.add_argument("--bn-batches", type=int, default=4,
                   help="train-mode passes giving BN layers statistics (default 4)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--timeout", type=float, default=900,
                   help="seconds a worker may take for one step before it is failed")
    p.add_argument("--setup-timeout", type=float, default=None,
                   help="seconds a worker may take to prepare (calibrate, compile) and warm "
                        "up before it is failed, which a zoo summary counts as 1.0x with the "
                        "reason (default --timeout; --quick 120: torch.ao's HistogramObserver "
                        "calibrated efficientnet_v2_s for 466 s on an AMD EPYC, where no other "
                        "quick row took 15 s to get ready)")
    p.add_argument("--quick", action="store_true",
                   help="smoke test: batch 2, 2 rounds x 2 iters, 4 warm-up calls and 1 a "
                        "round, 2 calib batches")
    p.add_argument("--keep-tmp", action="store_true", help="keep the temp dir (logs, outputs)")
    p.add_argument("--preload-cost", action="store_true",
                   help="measure the cost of LD_PRELOAD itself instead")
    p.add_argument("--preload-runs", type=int, default=20, help="runs per cell (default 20)")
    p.add_argument("--calibration-cost", action="store_true",
                   help="measure what calibration costs instead: the model's calibration "
                        "batches as a whole script, stock and under IPEX_MODE=calibration with "
                        "each IPEX_INT8_ALGORITHM, --rounds interleaved runs a cell")
    p.add_argument("--zoo", action="store_true",
                   help="every variant on the model zoo, with a geometric-mean summary")
    p.add_argument("--paired", metavar="VARIANT",
                   help="also compare every row with VARIANT round by round: the median over "
                        "rounds of VARIANT's round median / the row's, and in how many rounds "
                        "the row was faster (a slow spell of the machine hits both alike)")
    p.add_argument("--ceiling", action="store_true",
                   help="measure oneDNN's peak per precision first; rows report %% of it")
    p.add_argument("--ceiling-tool", help="ipex-shim-ceiling (default: beside --lib)")
    p.add_argument("--ceiling-seconds", type=float, default=2.0,
                   help="seconds per ceiling case (default 2)")
    p.add_argument("--onednn-profile", type=int, default=0, metavar="PASSES",
                   help="after the timed rounds, run PASSES more passes a row with oneDNN's "
                        "verbose log on and split a pass into products, other oneDNN work and "
                        "time outside oneDNN; each product shape is also timed alone "
                        "(ipex-shim-ceiling --shapes)")
    p.add_argument("--profile-seconds", type=float, default=0.5,
                   help="seconds per shape timed alone (default 0.5)")
    p.add_argument("--profile-top", type=int, default=8,
                   help="product shapes listed per row, costliest first (default 8)")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--probe", action="store_true", help=argparse.SUPPRESS)
    # --quick's settings apply to the options not given: an option given with its default
    # value (--rounds 5) keeps that value, so the defaults are read from argv, not compared.
    quick_settings = (("rounds", 2), ("iters", 2), ("warmup", 4), ("round_warmup", 1),
                      ("calib_batches", 2), ("bn_batches", 2), ("preload_runs", 5),
                      ("ceiling_seconds", 0.5))
    defaults = {k: p.get_default(k) for k, _ in quick_settings}
    p.set_defaults(**{k: None for k in defaults})
    args = p.parse_args(argv)
    for k, v in quick_settings:
        if getattr(args, k) is None:
            setattr(args, k, v if args.quick else defaults[k])
    if args.setup_timeout is None:
        args.setup_timeout = min(args.timeout, 120.0) if args.quick else args.timeout
    if args.quick:
        args.batch = args.batch or 2
    models = []
    for m in args.model or (ZOO if args.zoo else ["resnet50"]):
        models += [x.strip() for x in m.split(",") if x.strip()]
    args.models = models
    if args.variants:
        args.variant_list = [v.strip() for v in args.variants.split(",") if v.strip()]
        bad = [v for v in args.variant_list if v not in ALL_VARIANTS]
        if bad:
            p.error("unknown variant(s) %s; choose from %s" % (bad, ",".join(ALL_VARIANTS)))
    else:
        args.variant_list = [v for v in ALL_VARIANTS
                             if v not in PREVIOUS_VARIANTS or args.lib_previous]
    if args.lib_previous:
        args.lib_previous = os.path.abspath(args.lib_previous)
    if args.inductor_cache:
        args.inductor_cache = os.path.abspath(args.inductor_cache)  # workers run in REPO_ROOT
    if not os.path.isabs(args.lib):
        # relative: to the current directory if it exists there, else to the repo root
        args.lib = os.path.abspath(args.lib if os.path.exists(args.lib)
                                   else os.path.join(REPO_ROOT, args.lib))
    for kv in args.env:
        if "=" not in kv:
            p.error("--env expects KEY=VAL, got %r" % kv)
        k, v = kv.split("=", 1)
        EXTRA_ENV[k] = v
    if not 1 <= args.seq <= 512:
        p.error("--seq must be in 1..512 (BERT position embeddings)")
    if args.threads < 1 or args.rounds < 1 or args.iters < 1:
        p.error("--threads, --rounds and --iters must be >= 1")
    if args.onednn_profile < 0 or args.profile_seconds <= 0 or args.profile_top < 0:
        p.error("--onednn-profile and --profile-top must be >= 0, --profile-seconds > 0")
    if args.paired and args.paired not in args.variant_list:
        p.error("--paired %s: not among the variants run (%s)"
                % (args.paired, ",".join(args.variant_list)))
    return args


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.worker:
        return worker_main(args.worker)
    if args.probe:
        return probe_main()
    if args.preload_cost:
        return preload_cost_main(args)
    if args.calibration_cost:
        return calibration_cost_main(args)

    if "ipex_shim" in os.environ.get("LD_PRELOAD", ""):
        log("WARNING: the parent runs under LD_PRELOAD=%s; children get their own environment."
            % os.environ["LD_PRELOAD"])
    os.environ["OMP_NUM_THREADS"] = str(args.threads)  # before importing torch here
    import torch
    import torchvision
    torch.set_num_threads(args.threads)
    args.child_torch = child_torch(args.python, torch)
    left_out = None
    if not args.child_torch.get("compile") and args.variants is None:
        args.variant_list = [v for v in args.variant_list if v not in COMPILE_VARIANTS]
        left_out = "note: %s left out of the default rows: %s (the children's torch is %s)" % (
            ",".join(COMPILE_VARIANTS), NEEDS_TORCH2, args.child_torch.get("version"))

    log("ipex-shim benchmark  %s" % datetime.datetime.now().isoformat(timespec="seconds"))
    log("CPU: %s, %d logical CPUs; flags: %s" % (cpu_model(), os.cpu_count(),
                                                 " ".join(cpu_flags()) or "-"))
    log("torch %s, torchvision %s, python %s, children: %s" %
        (torch.__version__, torchvision.__version__, platform.python_version(), args.python))
    blas = report_blas(torch)
    lib_found = os.path.isfile(args.lib)
    log("shim library: %s (%s)" % (args.lib, "found" if lib_found else "NOT FOUND"))
    la = loadavg()
    if la:
        log("load average: %.2f %.2f %.2f%s" % tuple(la + [
            "  <- WARNING: the machine is busy; timings will be disturbed"
            if la[0] > 0.5 else ""]))
    log("variants: %s" % ",".join(args.variant_list))
    if left_out:
        log(left_out)
    child_env = {k: base_env(args.threads)[k] for k in sorted(base_env(args.threads))
                 if k.startswith(("OMP_", "GOMP_", "KMP_", "OPENBLAS_", "MKL_", "DNNL_",
                                  "ONEDNN_", "MALLOC_", "LD_"))}
    log("child env: %s" % " ".join("%s=%s" % kv for kv in child_env.items()))
    if blas["kind"] == "openblas" and "openblas-pthread" in str(blas["alternative"]) \
            and "OMP_WAIT_POLICY" not in child_env and args.threads >= os.cpu_count():
        log("note: with OpenBLAS-pthread, OpenBLAS's own threads and libgomp's spinning "
            "threads compete\n      for the cores during fp32 GEMMs (linear/matmul), which "
            "can slow stock fp32\n      considerably; compare with --env OMP_WAIT_POLICY=passive.")

    settings = {"models": args.models, "batch": args.batch, "threads": args.threads,
                "rounds": args.rounds, "iters": args.iters, "warmup": args.warmup,
                "round_warmup": args.round_warmup, "variants": args.variant_list,
                "seq": args.seq, "image_size": args.image_size, "seed": args.seed,
                "calib_batches": args.calib_batches, "bn_batches": args.bn_batches,
                "quick": args.quick, "setup_timeout": args.setup_timeout,
                "lib": args.lib, "lib_found": lib_found,
                "python": args.python, "child_env": child_env, "torch": torch.__version__,
                "child_torch": args.child_torch, "inductor_cache": args.inductor_cache,
                "torchvision": torchvision.__version__, "python_version": platform.python_version(),
                "cpu": cpu_model(), "cpu_flags": cpu_flags(), "nproc": os.cpu_count(),
                "blas": blas, "date": datetime.datetime.now().isoformat(timespec="seconds"),
                "host": platform.node(), "kernel": platform.release(),
                "loadavg_start": loadavg()}

    args.ceiling_report = run_ceiling(args) if args.ceiling else None
    settings["ceiling"] = args.ceiling_report
    tmpdir = tempfile.mkdtemp(prefix="ipex_bench_")
    results = []
    t0 = time.perf_counter()
    try:
        for m in args.models:
            try:
                results.append(bench_model(args, m, args.variant_list, tmpdir))
            except Exception as e:  # e.g. unknown model name: report, go on
                traceback.print_exc()
                log("MODEL %s FAILED: %s" % (m, last_line(e)))
                results.append({"model": m, "error": "%s: %s" % (type(e).__name__, last_line(e)),
                                "rows": []})
    finally:
        if args.keep_tmp:
            log("kept temp dir %s" % tmpdir)
        else:
            shutil.rmtree(tmpdir, ignore_errors=True)
    settings["total_s"] = time.perf_counter() - t0
    settings["loadavg_end"] = loadavg()
    if args.zoo:
        settings["zoo_summary"] = zoo_summary(results, args.variant_list)
        print_zoo_summary(settings["zoo_summary"])

    json_path = args.json or os.path.join(DEFAULT_OUT_DIR, "bench.json")
    png_path = args.png or os.path.join(DEFAULT_OUT_DIR, "bench.png")
    for pth in (json_path, png_path):
        os.makedirs(os.path.dirname(os.path.abspath(pth)), exist_ok=True)
    with open(json_path, "w") as f:
        json.dump({"settings": settings, "results": results}, f, indent=1)
    log("")
    log("wrote %s" % json_path)
    plotted = [r for r in results if r.get("rows")]
    if plotted:
        try:
            write_png(png_path, plotted, settings)
            log("wrote %s" % png_path)
        except Exception as e:
            log("PNG not written: %s" % last_line(e))
    log("total %.0f s" % settings["total_s"])
    if blas["kind"] == "reference":
        log("WARNING (again): reference BLAS in use; stock fp32 numbers are not representative.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
