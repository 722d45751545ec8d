"""nn.MultiheadAttention and nn.TransformerEncoderLayer on PyTorch's fast path
(programs/attention.py): the shim runs their two ops as linear, matmul, softmax, layer_norm
and the activation, so the weights are packed once, bf16 and INT8 mode reach the products and
the feed-forward's activation is fused into its linear. Results must be stock's to the mode's
accuracy, with and without key padding masks and attention weights; the calls the parts do
not take (key and value not the query, a weight needing a gradient, an empty batch) must
run stock and be counted with their reason.
"""
import json
import re

import pytest
import torch

from conftest import bf16_path, cosine, describe, skip_without_kernels

MODES = ["fp32", "bf16", "int8"]
# Per mode: least cosine to stock, largest max-abs error relative to stock's largest value.
TOLERANCE = {"fp32": (0.999999, 1e-5), "bf16": (0.9999, 0.03), "int8": (0.995, 0.08)}
CASES = ["layer_relu", "layer_gelu_first", "layer_pad", "layer_pad_float", "stack", "mha",
         "mha_w", "mha_heads_w", "mha_no_w", "mha_cross", "mha_grad", "empty"]
# Each case runs three passes. Encoder layer calls the parts take: four single-layer cases
# and the two-layer stack; attention calls: mha (twice, for its output and its weights),
# mha_heads_w, mha_no_w.
LAYER_CALLS, ATTENTION_CALLS = 3 * (4 + 2), 3 * (2 + 1 + 1)


@pytest.fixture(scope="module")
def runs(tmp_path_factory, shim, torch_available):
    tmp = tmp_path_factory.mktemp("attention")
    program = shim.program("attention.py")
    conf = tmp / "conf.json"
    out = {}
    proc = shim.run_py(program, preload=False, args=(str(tmp / "stock.pt"), "infer"))
    assert proc.returncode == 0, describe(proc)
    out["stock"] = {"results": torch.load(tmp / "stock.pt")}
    proc = shim.run_py(program, mode="calibration", env={"IPEX_CONFIG": str(conf)},
                       args=(str(tmp / "calibration.pt"), "calibrate"))
    assert proc.returncode == 0 and conf.exists(), describe(proc)
    out["calibration"] = {"report": _report(proc)}
    out["int8_conf"] = conf
    for mode in MODES:
        env = {"IPEX_CONFIG": str(conf)} if mode == "int8" else {}
        path = tmp / f"{mode}.pt"
        proc = shim.run_py(program, mode=mode, env=env, args=(str(path), "infer"))
        assert proc.returncode == 0, describe(proc)
        assert "kernel failed" not in proc.stderr, proc.stderr
        out[mode] = {"results": torch.load(path), "report": _report(proc)}
    return out


def _report(proc):
    import json
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("case", CASES)
def test_results_are_stocks(runs, mode, case):
    got, ref = runs[mode]["results"][case], runs["stock"]["results"][case]
    assert got.shape == ref.shape and got.dtype == ref.dtype == torch.float32
    if ref.numel() == 0:
        return
    if case in ("mha_cross", "mha_grad"):  # stock ran them: the same bytes
        assert torch.equal(got, ref), case
        return
    least, largest = TOLERANCE[mode]
    assert cosine(got, ref) >= least, (case, cosine(got, ref))
    error = ((got - ref).abs().max() / ref.abs().max()).item()
    assert error <= largest, (case, error)


@pytest.mark.parametrize("mode", MODES + ["calibration"])
def test_the_parts_run_on_the_shim_and_the_rest_is_counted(runs, mode, cpu_plan):
    ops = runs[mode]["report"]["ops"]
    layer, attention = ops["_transformer_encoder_layer_fwd"], ops["_native_multi_head_attention"]
    assert layer.get("composed") == LAYER_CALLS, layer
    assert layer.get("stock") == 3 and layer["fallback_reasons"] == {"unsupported shape or arguments": 3}, layer
    assert attention.get("composed") == ATTENTION_CALLS, attention
    assert attention.get("stock") == 4, attention
    assert attention["fallback_reasons"] == {"unsupported shape or arguments": 3, "gradient needed": 1}, attention
    # Every layer makes four linears and two matmuls; every attention call two and two.
    linears = 4 * LAYER_CALLS + 2 * ATTENTION_CALLS
    matmuls = 2 * LAYER_CALLS + 2 * ATTENTION_CALLS
    if mode == "calibration":
        assert ops["linear"].get("observed") == linears, ops["linear"]
        return
    skip_without_kernels(cpu_plan, mode)
    path = {"fp32": "onednn_fp32", "bf16": bf16_path(cpu_plan), "int8": "onednn_int8"}[mode]
    assert ops["linear"].get(path) == linears, ops["linear"]
    assert sum(ops["matmul"].get(p, 0) for p in ("onednn_fp32", "onednn_bf16", "onednn_int8")) \
        == matmuls, ops["matmul"]
    # The feed-forward's activation runs inside its linear. In fp32 and bf16 mode the layer
    # calls the product kernels itself and fuses it from the first call: all 9 calls of the
    # relu layer (three cases) and of the three gelu layers (3 calls each). In int8 mode the
    # parts go through the dispatcher (their INT8 entries are the ops'), where a call teaches
    # the fusion first: 8 and 3 * 2.
    relu, gelu = ops["relu"], ops["gelu"]
    expected = (8, 3 * 2) if mode == "int8" else (9, 3 * 3)
    assert (relu.get("fused"), gelu.get("fused")) == expected, (relu, gelu)


def test_int8_entries_cover_every_linear_and_are_all_found(runs, cpu_plan):
    skip_without_kernels(cpu_plan, "int8")
    int8 = runs["int8"]["report"]["int8"]
    assert int8["identified_ops"] == int8["entries"] and int8["mismatched"] == 0, int8


# bf16 mode with one of the two products held at fp32 by IPEX_CONFIG, and with fusion off. A
# product hands its result on in BF16 only to a product that computes in BF16; with fusion
# off the layer's parts go through the dispatcher as in int8 mode.
VARIANTS = {"keep_matmul": {"keep_fp32": ["matmul"]}, "keep_linear": {"keep_fp32": ["linear"]},
            "no_fusion": {"fusion": False}}


@pytest.fixture(scope="module")
def variant_runs(runs, tmp_path_factory, shim):
    import json
    tmp = tmp_path_factory.mktemp("attention_variants")
    out = {}
    for name, config in VARIANTS.items():
        conf = tmp / f"{name}.json"
        conf.write_text(json.dumps(config))
        path = tmp / f"{name}.pt"
        proc = shim.run_py(shim.program("attention.py"), mode="bf16",
                           env={"IPEX_CONFIG": str(conf)}, args=(str(path), "infer"))
        assert proc.returncode == 0, describe(proc)
        assert "kernel failed" not in proc.stderr, proc.stderr
        out[name] = {"results": torch.load(path), "report": _report(proc)}
    return out


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_bf16_variants_give_stocks_results(runs, variant_runs, variant):
    least, largest = TOLERANCE["bf16"]
    for case in CASES:
        got, ref = variant_runs[variant]["results"][case], runs["stock"]["results"][case]
        assert got.shape == ref.shape and got.dtype == torch.float32, case
        if ref.numel() == 0:
            continue
        assert cosine(got, ref) >= least, (variant, case, cosine(got, ref))
        error = ((got - ref).abs().max() / ref.abs().max()).item()
        assert error <= largest, (variant, case, error)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_bf16_variants_count_each_product_at_its_own_precision(variant_runs, variant, cpu_plan):
    ops = variant_runs[variant]["report"]["ops"]
    linears = 4 * LAYER_CALLS + 2 * ATTENTION_CALLS
    matmuls = 2 * LAYER_CALLS + 2 * ATTENTION_CALLS
    assert ops["_transformer_encoder_layer_fwd"].get("composed") == LAYER_CALLS
    lower = bf16_path(cpu_plan)
    linear_path = "onednn_fp32" if variant == "keep_linear" else lower
    matmul_path = "onednn_fp32" if variant == "keep_matmul" else lower
    assert ops["linear"].get(linear_path) == linears, ops["linear"]
    assert ops["matmul"].get(matmul_path) == matmuls, ops["matmul"]
    relu, gelu = ops["relu"], ops["gelu"]
    fused = (None, None) if variant == "no_fusion" else (9, 3 * 3)
    assert (relu.get("fused"), gelu.get("fused")) == fused, (relu, gelu)


# int8 mode folds two steps of the composed attention into its INT8 products: q's 1/sqrt(head
# size) into q's quantisation, and the softmax into the u8 bytes of the probabilities (no fp32
# probabilities, no reorder). With IPEX_FUSION=0 both run as separate steps, on the same
# config entries. The two runs quantise the same values with the same scales, so they must
# agree far more closely than either agrees with stock; a factor applied twice or not at all,
# or probabilities in the wrong scale, would be off by the factor's or the scale's error.
@pytest.fixture(scope="module")
def int8_unfolded(runs, tmp_path_factory, shim, cpu_plan):
    skip_without_kernels(cpu_plan, "int8")
    tmp = tmp_path_factory.mktemp("attention_unfolded")
    conf = runs["int8_conf"]
    out = {}
    for name, env in (("folded", {"ONEDNN_VERBOSE": "1"}), ("unfolded", {"IPEX_FUSION": "0"})):
        path = tmp / f"{name}.pt"
        proc = shim.run_py(shim.program("attention.py"), mode="int8",
                           env={"IPEX_CONFIG": str(conf), **env}, args=(str(path), "infer"))
        assert proc.returncode == 0, describe(proc)
        assert "kernel failed" not in proc.stderr, proc.stderr
        report = json.loads([l for l in proc.stdout.splitlines() if l.startswith("{")][-1])
        out[name] = {"results": torch.load(path), "report": report, "stdout": proc.stdout}
    return out


def test_int8_folds_give_the_unfolded_products(runs, int8_unfolded):
    folded, unfolded = int8_unfolded["folded"], int8_unfolded["unfolded"]
    for case in CASES:
        got, ref = folded["results"][case], unfolded["results"][case]
        assert got.shape == ref.shape, case
        if ref.numel() == 0:
            continue
        error = ((got - ref).abs().max() / ref.abs().max()).item()
        assert error <= 2e-3, (case, error)
    matmuls = 2 * LAYER_CALLS + 2 * ATTENTION_CALLS
    for report in (folded["report"], unfolded["report"]):
        assert report["int8"]["mismatched"] == 0, report["int8"]
        assert report["ops"]["matmul"].get("onednn_int8") == matmuls, report["ops"]["matmul"]
    # The probabilities are written as u8 by the softmax itself (oneDNN 2 and 3 spell the
    # type dst_u8 and dst:u8 in the verbose log).
    softmaxes = [l for l in folded["stdout"].splitlines() if re.search(r"exec,cpu,softmax", l)]
    assert any(re.search(r"dst[_:]u8", l) for l in softmaxes), "\n".join(softmaxes[:5])
