"""Where a row's time goes inside oneDNN: scripts/bench.py --onednn-profile.

A worker runs a few passes with oneDNN's verbose log switched on at run time
(dnnl_set_verbose on the process's own libdnnl, so the timed rounds before it ran
without it), captures what oneDNN writes to fd 1, and sums the "exec" lines by
primitive, implementation, source type and problem. The parent then splits a pass
into the row's matrix products (convolutions, inner products, matmuls) in its own
precision, products in other precisions, oneDNN's other primitives (reorders,
pools, ...) and the time outside oneDNN (the profiled passes' median wall time
less all of oneDNN's in them), and reports the products' GFLOP/s against the
ceiling.

It also times every product shape of the row's precision alone, with
ipex-shim-ceiling --shapes (oneDNN's preferred layouts, no post-ops), twice: with
the operands warm in the caches from the run before ("alone": what oneDNN itself
reaches on this model's shapes on this machine; that figure against the ceiling
is what the shapes themselves cost), and with them flushed from every cache level
before each run ("cold": every operand read from memory). In a pass a product
reads what the op before it has just written and weights it last read a pass
ago, so its time lies between the two: the row's products against "alone" are
what its kernels and the pass's memory traffic lose to oneDNN's best.

Both of oneDNN's verbose formats are read: 2.x ("onednn_verbose,exec,cpu,...",
"src_u8::blocked:...") and 3.x ("onednn_verbose,v1,primitive,exec,cpu,...",
"src:u8::blocked:...").
"""

import ctypes
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

PRODUCTS = ("convolution", "deconvolution", "inner_product", "matmul")
TIMED_ALONE = ("convolution", "matmul")  # the products ipex-shim-ceiling --shapes can time
# oneDNN's shared library, as a process maps it (Debian's torch and the shim link it).
LIBRARIES = ("libdnnl.so", "libmkldnn.so")
PRECISION_OF_TYPE = {"u8": "int8", "s8": "int8", "bf16": "bf16", "f32": "fp32"}
_SRC_TYPE = re.compile(r"(?:^|\s)src[_:]([a-z0-9]+):")
_FIELD = re.compile(r"([a-z]+)(\d+)")


def parse_exec_lines(text):
    """The verbose log's exec lines summed per (kind, implementation, src type, problem):
    a list of dicts with calls and ms."""
    sums = {}
    for line in text.splitlines():
        if not line.startswith("onednn_verbose,"):
            continue
        fields = line.split(",")
        if "exec" not in fields:
            continue
        at = fields.index("exec")
        # exec, engine, kind, implementation, prop_kind, memory descriptors, ..., problem, ms
        if len(fields) < at + 8:
            continue
        try:
            ms = float(fields[-1])
        except ValueError:
            continue
        match = _SRC_TYPE.search(fields[at + 5])
        key = (fields[at + 2], fields[at + 3], match.group(1) if match else "", fields[-2])
        entry = sums.setdefault(key, [0, 0.0])
        entry[0] += 1
        entry[1] += ms
    return [{"kind": k[0], "implementation": k[1], "src_type": k[2], "problem": k[3],
             "calls": calls, "ms": ms} for k, (calls, ms) in sums.items()]


def capture(run, passes, libraries):
    """Runs run() `passes` times with oneDNN's verbose log on; `libraries`: the paths of
    oneDNN's shared library mapped in this process (bench.mapped_libs(LIBRARIES)). Returns
    the worker's reply: {"available": True, "records": [...], "passes": n, ...} or
    {"available": False, "why": ...}."""
    if not libraries:
        return {"available": False,
                "why": "no shared oneDNN library in this process (a pip wheel links oneDNN "
                       "into libtorch, where its verbose switch cannot be reached)"}
    dnnl = ctypes.CDLL(libraries[0])
    libc = ctypes.CDLL(None)
    sys.stdout.flush()
    libc.fflush(None)
    with tempfile.TemporaryFile(mode="w+") as log:
        saved = os.dup(1)
        os.dup2(log.fileno(), 1)
        try:
            status = dnnl.dnnl_set_verbose(1)
            pass_ms = []
            if status == 0:
                for _ in range(passes):
                    start = time.perf_counter()
                    run()
                    pass_ms.append((time.perf_counter() - start) * 1e3)
        finally:
            libc.fflush(None)
            dnnl.dnnl_set_verbose(0)
            libc.fflush(None)
            os.dup2(saved, 1)
            os.close(saved)
        if status != 0:
            return {"available": False,
                    "why": "dnnl_set_verbose(1) returned status %d (%s built without its "
                           "verbose log?)" % (status, os.path.basename(libraries[0]))}
        log.seek(0)
        records = parse_exec_lines(log.read())
    return {"available": True, "records": records, "passes": passes, "pass_ms": pass_ms,
            "library": libraries[0]}


def product_flops(kind, problem):
    """FLOPs (2 per multiply-add) of one call of a product, from its verbose problem; None
    for anything this cannot read."""
    if kind == "matmul":
        # "AxK:KxB:AxB" (oneDNN 2.x), or without the result "AxK:KxB" (3.x).
        try:
            dims = [[int(v) for v in part.split("x")] for part in problem.split(":")]
        except ValueError:
            return None
        if len(dims) not in (2, 3) or len(dims[0]) < 2 or len(dims[0]) != len(dims[1]):
            return None
        a, b = dims[0], dims[1]
        flops = 2.0 * a[-1] * a[-2] * b[-1]
        for x, y in zip(a[:-2], b[:-2]):  # batch dimensions, one side may broadcast
            flops *= max(x, y)
        return flops
    fields = {}
    for key, value in _FIELD.findall(problem):
        fields[key] = int(value)
    if not all(k in fields for k in ("mb", "ic", "oc")):
        return None
    groups = fields.get("g", 1)
    if kind == "inner_product":
        spatial = 1
        for axis in "dhw":
            spatial *= fields.get("i" + axis, 1)
        return 2.0 * fields["mb"] * fields["oc"] * fields["ic"] * spatial
    axes = [a for a in "dhw" if "i" + a in fields]
    if not axes:
        return None
    flops = 2.0 * fields["mb"] * fields["oc"] * fields["ic"] / groups
    for axis in axes:
        # A convolution computes each output pixel from a kernel's window; a deconvolution
        # spreads each input pixel over one.
        pixels = fields.get(("o" if kind == "convolution" else "i") + axis, 1)
        flops *= pixels * fields.get("k" + axis, 1)
    return flops


def precision_of_record(record):
    return PRECISION_OF_TYPE.get(record["src_type"])


def standalone(tool, precision, problems, seconds, threads, cold=False, timeout=900):
    """ipex-shim-ceiling --shapes for these problems (--cold: operands flushed from the
    caches before each run): ({problem: row}, None) (row has ms, gflops, implementation, or
    unavailable), or ({}, why) when the tool could not run."""
    if not problems:
        return {}, None
    if not tool or not os.path.isfile(tool):
        return {}, "%s not found" % tool
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    env.pop("LD_PRELOAD", None)
    env.pop("ONEDNN_VERBOSE", None)
    try:
        proc = subprocess.run([tool, "--shapes", precision, str(seconds)]
                              + (["--cold"] if cold else []) + list(problems),
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as e:
        return {}, "%s: %s" % (os.path.basename(tool), e)
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or [""])[-1]
        return {}, "%s exited %d: %s" % (os.path.basename(tool), proc.returncode, tail)
    return {row["shape"]: row for row in json.loads(proc.stdout)["results"]}, None


def summarize(profile, precision, median_ms, ceiling_gflops, alone=None, cold=None):
    """One row's pass split as described in the module docstring. `alone`, `cold`:
    standalone()'s rows for this precision's problems, warm and cold (or None)."""
    passes = profile["passes"]
    per_pass = lambda ms: ms / passes
    own, other_products, other = [], 0.0, 0.0
    for r in profile["records"]:
        if r["kind"] in PRODUCTS and precision_of_record(r) == precision:
            own.append(r)
        elif r["kind"] in PRODUCTS:
            other_products += r["ms"]
        else:
            other += r["ms"]
    total = sum(r["ms"] for r in profile["records"])
    products_ms = sum(r["ms"] for r in own)
    flops = 0.0
    uncounted = 0
    shapes = []
    totals = {"alone": [0.0, 0], "cold": [0.0, 0]}  # ms a pass, shapes missing
    for r in own:
        f = product_flops(r["kind"], r["problem"])
        if f is None:
            uncounted += 1
        else:
            flops += f * r["calls"]
        shape = {"kind": r["kind"], "problem": r["problem"], "implementation": r["implementation"],
                 "calls_per_pass": r["calls"] / passes, "ms_per_pass": per_pass(r["ms"])}
        for name, timed in (("alone", alone), ("cold", cold)):
            a = (timed or {}).get(r["problem"]) if r["kind"] in TIMED_ALONE else None
            if a and "ms" in a:
                shape[name + "_ms_per_pass"] = a["ms"] * r["calls"] / passes
                shape[name + "_implementation"] = a["implementation"]
                totals[name][0] += shape[name + "_ms_per_pass"]
            else:
                totals[name][1] += 1
                if a and "unavailable" in a:
                    shape[name + "_unavailable"] = a["unavailable"]
        shapes.append(shape)
    shapes.sort(key=lambda s: -s["ms_per_pass"])
    gflops = flops / passes / 1e9 / (per_pass(products_ms) / 1e3) if products_ms else None
    summary = {
        "precision": precision, "passes": passes, "median_ms": median_ms,
        "onednn_ms": per_pass(total), "products_ms": per_pass(products_ms),
        "products_gflop": flops / passes / 1e9, "products_gflops": gflops,
        "products_uncounted": uncounted,
        "other_precision_products_ms": per_pass(other_products),
        "other_primitives_ms": per_pass(other),
        # The profiled passes' own time less oneDNN's in them (the timed rounds' median
        # can differ from these passes' by the machine's noise).
        "profiled_pass_ms": statistics.median(profile["pass_ms"]) if profile.get("pass_ms")
        else None,
        "shapes": shapes,
    }
    reference = summary["profiled_pass_ms"] if summary["profiled_pass_ms"] is not None \
        else median_ms
    summary["outside_ms"] = reference - summary["onednn_ms"] if reference is not None else None
    if ceiling_gflops and gflops:
        summary["products_ceiling_pct"] = 100.0 * gflops / ceiling_gflops
    for name, timed in (("alone", alone), ("cold", cold)):
        ms, missing = totals[name]
        if timed is None or not own:
            continue
        if missing:  # no total is claimed over part of the shapes
            summary[name + "_missing"] = missing
            continue
        summary[name + "_ms"] = ms
        summary[name + "_gflops"] = flops / passes / 1e9 / (ms / 1e3)
        if ceiling_gflops:
            summary[name + "_ceiling_pct"] = 100.0 * summary[name + "_gflops"] / ceiling_gflops
    return summary
