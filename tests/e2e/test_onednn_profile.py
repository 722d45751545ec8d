"""scripts/bench.py --onednn-profile and ipex-shim-ceiling --shapes.

The profile reads oneDNN's verbose log (both its 2.x and 3.x formats) and counts each
product's FLOPs from the problem it prints; those counts must agree with torch.profiler's,
taken from the model's own shapes, and a pass must split exactly into its parts. The
ceiling tool's --shapes form times a shape named the way the log names it, with the FLOPs
that shape has, and says what it cannot read instead of failing."""
import json
import statistics
import subprocess
import sys

import pytest

from conftest import REPO_ROOT, clean_env

sys.path.insert(0, str(REPO_ROOT / "scripts"))
import onednn_profile as op  # noqa: E402

LOG_2X = """\
onednn_verbose,info,oneDNN v2.6.3 (commit N/A)
onednn_verbose,exec,cpu,convolution,brgconv:avx512_core_amx_int8,forward_inference,src_u8::blocked:acdb:f0 wei_s8:p:blocked:AcdB64a4b:f0 bia_f32::blocked:a:f0 dst_u8::blocked:acdb:f0,attr-scratchpad:user attr-oscale:2 attr-post-ops:eltwise_relu ,alg:convolution_direct,mb16_ic64oc64_ih56oh56kh3sh1dh0ph1_iw56ow56kw3sw1dw0pw1,0.5
onednn_verbose,exec,cpu,convolution,brgconv:avx512_core_amx_int8,forward_inference,src_u8::blocked:acdb:f0 wei_s8:p:blocked:AcdB64a4b:f0 bia_f32::blocked:a:f0 dst_u8::blocked:acdb:f0,attr-scratchpad:user attr-oscale:2 attr-post-ops:eltwise_relu ,alg:convolution_direct,mb16_ic64oc64_ih56oh56kh3sh1dh0ph1_iw56ow56kw3sw1dw0pw1,0.25
onednn_verbose,exec,cpu,reorder,jit:uni,undef,src_f32::blocked:abcd:f0 dst_u8::blocked:acdb:f0,attr-oscale:0 ,,16x3x224x224,1.5
onednn_verbose,exec,cpu,convolution,jit:avx512_core_amx_bf16,forward_inference,src_bf16::blocked:acdb:f0 wei_bf16::blocked:aBedc16b:f0 bia_f32::blocked:a:f0 dst_bf16::blocked:acdb:f0,attr-scratchpad:user ,alg:convolution_direct,g2mb2_ic32oc64_ih8oh4kh3sh2dh0ph1_iw8ow4kw3sw2dw0pw1,0.125
onednn_verbose,exec,cpu,matmul,brg:avx512_core_bf16,undef,src_bf16::blocked:ab:f0 wei_bf16:p:blocked:BA16a64b2a:f0 bia_f32::blocked:ab:f0_mask2 dst_f32::blocked:ab:f0,attr-scratchpad:user ,,2x64:64x32:2x32,0.0625
"""

LOG_3X = """\
onednn_verbose,v1,info,oneDNN v3.7.2 (commit N/A)
onednn_verbose,v1,primitive,exec,cpu,convolution,brg_conv_fwd:avx512_core_amx,forward_inference,src:u8::blocked:acdb::f0 wei:s8:a:blocked:AcdB64a4b::f0 bia:f32::blocked:a::f0 dst:u8::blocked:acdb::f0,attr-scratchpad:user attr-scales:src0:0:f32+dst:0:f32+wei:1:f32 attr-post-ops:eltwise_relu,alg:convolution_direct,mb16_ic64oc64_ih56oh56kh3sh1dh0ph1_iw56ow56kw3sw1dw0pw1,0.5
onednn_verbose,v1,primitive,exec,cpu,matmul,brg_matmul:avx512_core_amx,undef,src:s8::blocked:abcd::f0 wei:s8::blocked:abdc::f0 dst:f32::blocked:abcd::f0,attr-scratchpad:user,,8x12x128x64:8x12x64x128,2.0
onednn_verbose,v1,primitive,exec,cpu,matmul,brg_matmul:avx512_core,undef,src:f32::blocked:ab::f0 wei:f32:ap:blocked:BA16a64b::f0 bia:f32::blocked:ab::f0_mask2 dst:f32::blocked:ab::f0,attr-scratchpad:user,,2x512:512x1000,0.141846
"""


def test_verbose_lines_of_both_formats_sum_per_problem():
    records = {(r["kind"], r["src_type"], r["problem"]): r for r in op.parse_exec_lines(LOG_2X)}
    conv = records[("convolution", "u8", "mb16_ic64oc64_ih56oh56kh3sh1dh0ph1_iw56ow56kw3sw1dw0pw1")]
    assert (conv["calls"], conv["ms"]) == (2, 0.75)
    assert conv["implementation"] == "brgconv:avx512_core_amx_int8"
    assert records[("reorder", "f32", "16x3x224x224")]["ms"] == 1.5
    assert records[("matmul", "bf16", "2x64:64x32:2x32")]["calls"] == 1
    assert len(records) == 4  # the info line is not an exec line

    records = {(r["kind"], r["src_type"]): r for r in op.parse_exec_lines(LOG_3X)}
    assert set(records) == {("convolution", "u8"), ("matmul", "s8"), ("matmul", "f32")}
    assert records[("convolution", "u8")]["implementation"] == "brg_conv_fwd:avx512_core_amx"
    assert records[("matmul", "s8")]["problem"] == "8x12x128x64:8x12x64x128"
    assert records[("matmul", "s8")]["ms"] == 2.0


def test_flops_from_problems():
    # 3x3, stride 1: every output pixel is 64 channels x 9 taps of multiply-adds.
    assert op.product_flops("convolution", "mb16_ic64oc64_ih56oh56kh3sh1dh0ph1_iw56ow56kw3sw1dw0pw1") \
        == 2 * 16 * 64 * 64 * 56 * 56 * 9
    # Two groups of 16 input channels each, stride 2 (4x4 outputs).
    assert op.product_flops("convolution", "g2mb2_ic32oc64_ih8oh4kh3sh2dh0ph1_iw8ow4kw3sw2dw0pw1") \
        == 2 * 2 * 64 * 16 * 4 * 4 * 9
    # A deconvolution spreads each of its inputs over the kernel.
    assert op.product_flops("deconvolution", "mb1_ic8oc4_ih5oh10kh2sh2dh0ph0_iw5ow10kw2sw2dw0pw0") \
        == 2 * 1 * 4 * 8 * 5 * 5 * 4
    assert op.product_flops("matmul", "8x12x128x64:8x12x64x128:8x12x128x128") \
        == 2 * 8 * 12 * 128 * 128 * 64
    # oneDNN 3.x leaves the result out; a batch dimension of 1 broadcasts.
    assert op.product_flops("matmul", "8x12x128x64:8x12x64x128") == 2 * 8 * 12 * 128 * 128 * 64
    assert op.product_flops("matmul", "8x128x64:1x64x32") == 2 * 8 * 128 * 32 * 64
    assert op.product_flops("matmul", "2x512:512x1000") == 2 * 2 * 512 * 1000
    assert op.product_flops("inner_product", "mb16ic2048oc1000") == 2 * 16 * 2048 * 1000
    assert op.product_flops("matmul", "not:a:product") is None
    assert op.product_flops("convolution", "16x3x224x224") is None


def test_summary_splits_a_pass_into_its_parts():
    profile = {"passes": 2, "records": op.parse_exec_lines(LOG_2X), "pass_ms": [9.0, 11.0]}
    conv = "mb16_ic64oc64_ih56oh56kh3sh1dh0ph1_iw56ow56kw3sw1dw0pw1"
    alone = {conv: {"ms": 0.25, "gflops": 1.0, "implementation": "brgconv:x"}}
    cold = {conv: {"ms": 1.0, "gflops": 1.0, "implementation": "brgconv:x"}}
    s = op.summarize(profile, "int8", median_ms=10.0, ceiling_gflops=2000.0, alone=alone,
                     cold=cold)
    assert s["products_ms"] == pytest.approx(0.375)  # 0.75 ms over 2 passes
    assert s["other_precision_products_ms"] == pytest.approx((0.125 + 0.0625) / 2)
    assert s["other_primitives_ms"] == pytest.approx(0.75)
    assert s["onednn_ms"] == pytest.approx(s["products_ms"] + s["other_precision_products_ms"]
                                          + s["other_primitives_ms"])
    # Outside oneDNN: the profiled passes' own median time less oneDNN's in them.
    assert s["profiled_pass_ms"] == 10.0
    assert s["outside_ms"] == pytest.approx(10.0 - s["onednn_ms"])
    assert op.summarize(dict(profile, pass_ms=[20.0]), "int8", 10.0, None)["outside_ms"] \
        == pytest.approx(20.0 - s["onednn_ms"])
    flops = 2 * 16 * 64 * 64 * 56 * 56 * 9
    assert s["products_gflops"] == pytest.approx(flops / 1e9 / 0.375e-3)
    assert s["products_ceiling_pct"] == pytest.approx(100 * s["products_gflops"] / 2000.0)
    # One call alone takes 0.25 ms, and a pass makes one call of it.
    assert s["alone_ms"] == pytest.approx(0.25)
    assert s["alone_ceiling_pct"] == pytest.approx(100 * flops / 1e9 / 0.25e-3 / 2000.0)
    assert s["cold_ms"] == pytest.approx(1.0)
    assert s["shapes"][0]["cold_ms_per_pass"] == pytest.approx(1.0)
    # Without that shape's standalone time, no total is claimed.
    s = op.summarize(profile, "int8", 10.0, 2000.0, alone={})
    assert "alone_ms" not in s and s["alone_missing"] == 1
    assert "cold_ms" not in s and "cold_missing" not in s  # cold not asked for


def test_capture_without_a_shared_onednn_says_why():
    """A process whose oneDNN is not a shared library of its own (a pip wheel links it into
    libtorch) gets no profile and the reason, and its passes are not run for nothing."""
    calls = []
    reply = op.capture(lambda: calls.append(1), 2, libraries=[])
    assert reply["available"] is False and "no shared oneDNN library" in reply["why"], reply
    assert calls == []


def ceiling_tool(shim, *args):
    tool = shim.build_dir / "ipex-shim-ceiling"
    if not tool.is_file():
        pytest.skip("ipex-shim-ceiling is not built in %s" % shim.build_dir)
    env = clean_env()
    env["OMP_NUM_THREADS"] = "2"
    return subprocess.run([str(tool)] + list(args), env=env, capture_output=True, text=True,
                          timeout=300)


def test_ceiling_tool_times_shapes_as_the_log_names_them(shim):
    conv = "g2mb2_ic32oc64_ih8oh4kh3sh2dh0ph1_iw8ow4kw3sw2dw0pw1"
    matmul = "3x64:64x48:3x48"
    batched = "4x3x64:1x64x48"  # oneDNN 3.x's form, B broadcast over the batch
    bad = "mb2_ic32"
    proc = ceiling_tool(shim, "--shapes", "fp32", "0.05", conv, matmul, batched, bad)
    assert proc.returncode == 0, proc.stderr
    rows = {r["shape"]: r for r in json.loads(proc.stdout)["results"]}
    for shape, kind in ((conv, "convolution"), (matmul, "matmul"), (batched, "matmul")):
        row = rows[shape]
        assert row["ms"] > 0 and row["implementation"], row
        # The tool's GFLOP/s are its FLOPs over its time: the same FLOPs the profile counts.
        assert row["gflops"] * 1e9 * row["ms"] / 1e3 == pytest.approx(
            op.product_flops(kind, shape), rel=1e-9)
    assert "incomplete convolution descriptor" in rows[bad]["unavailable"], rows[bad]

    # --cold: the same shapes, their operands flushed from the caches before each run.
    proc = ceiling_tool(shim, "--shapes", "fp32", "0.05", "--cold", conv, matmul)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["cold"] is True
    assert [r["shape"] for r in report["results"]] == [conv, matmul]
    assert all(r["ms"] > 0 for r in report["results"]), report

    for argv in (("--shapes", "fp16", "0.1", conv), ("--shapes", "int8", "soon", conv),
                 ("--shapes",), ("0.1", "extra")):
        proc = ceiling_tool(shim, *argv)
        assert proc.returncode == 2 and "usage:" in proc.stderr, (argv, proc.stderr)


def test_bench_profile_counts_the_profilers_flops(shim, tmp_path):
    """A quick resnet18 run with --onednn-profile: in fp32 and int8 mode every convolution
    and the classifier run on oneDNN, so the FLOPs of the products its log shows (all
    precisions) are the model's, as torch.profiler counted them from the model's shapes."""
    out = tmp_path / "bench.json"
    argv = [sys.executable, str(REPO_ROOT / "scripts" / "bench.py"), "--quick",
            "--model", "resnet18", "--image-size", "64", "--batch", "2",
            "--variants", "stock_fp32,shim_fp32,shim_int8", "--lib", str(shim.lib),
            "--python", sys.executable, "--json", str(out), "--png", str(tmp_path / "b.png"),
            "--onednn-profile", "2", "--profile-seconds", "0.05"]
    proc = subprocess.run(argv, env=clean_env(), capture_output=True, text=True, timeout=1500)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    result = json.loads(out.read_text())["results"][0]
    rows = {r["variant"]: r for r in result["rows"]}
    for v in ("shim_fp32", "shim_int8"):
        row = rows[v]
        assert row["state"] == "ok", row
        capture = row["onednn_capture"]
        assert capture["available"] and capture["passes"] == 2, capture
        flops = sum(op.product_flops(r["kind"], r["problem"]) * r["calls"]
                    for r in capture["records"] if r["kind"] in op.PRODUCTS) / 2
        assert flops == pytest.approx(result["flops"], rel=1e-6), (v, flops, result["flops"])
        prof = row["onednn_profile"]
        assert prof["products_ms"] > 0 and prof["products_gflops"] > 0, prof
        assert prof["onednn_ms"] == pytest.approx(
            prof["products_ms"] + prof["other_precision_products_ms"]
            + prof["other_primitives_ms"])
        assert len(capture["pass_ms"]) == 2
        assert prof["outside_ms"] == pytest.approx(
            statistics.median(capture["pass_ms"]) - prof["onednn_ms"])
        # The profiled passes hold oneDNN's time in them.
        assert prof["profiled_pass_ms"] > prof["onednn_ms"], prof
        # Every product shape of the row's precision was timed alone, warm and cold.
        for name in ("alone", "cold"):
            assert prof[name + "_ms"] > 0, prof
            assert all(name + "_ms_per_pass" in s for s in prof["shapes"]
                       if s["kind"] in op.TIMED_ALONE), prof
        lines = proc.stdout.splitlines()
        table = lines[next(i for i, l in enumerate(lines) if l.startswith("Inside oneDNN:")):]
        line = next(l for l in table if l.startswith(v + " "))
        assert line.split()[4] == format(prof["products_ms"], ".1f"), line
    assert rows["shim_int8"]["onednn_profile"]["precision"] == "int8"
