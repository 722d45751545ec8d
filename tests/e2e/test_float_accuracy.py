"""fp32 and bf16 modes: eval outputs of real models against stock PyTorch.

Models: torchvision resnet18, resnet50, mobilenet_v2, vgg11_bn (weights=None, seed 0, BatchNorm
statistics from 4 train-mode forwards under no_grad, classifier centred: see
scripts/bench_models.build_reference_model) on 64x64 synthetic images, and the BERT-shaped
encoder of scripts/bench_models.py reduced to 2 layers, hidden 256, 4 heads, ff 1024,
vocabulary 1000 (input: 8 sequences of 32 token ids = 256 output rows).

Rows compared (fits the 6-minute budget of the whole float suite on 2 cores):
resnet18 128 images, mobilenet_v2 128, resnet50 64, vgg11_bn 64, encoder 256 token rows.

A control run without the shim builds every model once, saves its state_dict and input, and
evaluates (with the BF16 references below only where bf16 mode runs BF16: on a CPU without
native BF16 it runs the fp32 kernels, and the bf16 accuracy test skips); runs under IPEX_MODE=bf16 and IPEX_MODE=fp32 load them and evaluate. Each saves
its outputs with torch.save; the tests compare them here.

Tolerances
  fp32 mode: max |shim - stock| <= 1e-4 * max(1, max |stock|), every model.
  bf16 mode, absolute (the target): cosine(flattened output) >= 0.999 and the same argmax
    for >= 99% of rows. Met by the encoder (cosine and top-1) and by resnet18 and vgg11_bn
    (cosine). NOT reachable by any BF16 implementation for random-weight mobilenet_v2 and
    resnet50, nor top-1 for the random CNNs: their logit margins are ~1e-4 while BF16
    rounding of weights and activations alone moves logits by ~1e-2. The control run
    therefore also computes, with stock PyTorch, (a) ideal BF16 inference ("emu": conv and
    linear weights and inputs rounded to BF16, conv outputs rounded to BF16, fp32 arithmetic,
    which is what the shim's BF16 oneDNN kernels with fp32 accumulation compute) and (b) stock torch.autocast(bfloat16). Every
    CNN must then be as accurate as BF16 allows:
      cosine(shim, emu) >= 0.999 (the shim computes BF16 inference, nothing worse);
      cosine(shim, stock) >= cosine(emu, stock) - 1e-3 and >= cosine(autocast, stock) - 1e-3;
      top-1 agreement(shim, stock) >= agreement(emu, stock) - 0.07.
"""
import pytest
import torch

from conftest import skip_without_kernels, cosine, describe, parse_report

MODELS = {"resnet18": 128, "mobilenet_v2": 128, "resnet50": 64, "vgg11_bn": 64, "encoder": 256}
CNNS = [m for m in MODELS if m != "encoder"]
# The brief's absolute bf16 targets, where a BF16 computation can meet them (see docstring).
ABSOLUTE_COSINE = {"resnet18", "vgg11_bn", "encoder"}
ABSOLUTE_TOP1 = {"encoder"}
HEAVY = {"conv2d": CNNS, "linear": list(MODELS), "matmul": ["encoder"]}


def rows(t):
    return t.reshape(-1, t.shape[-1]) if t.dim() > 2 else t



def top1(a, b):
    return (rows(a).argmax(-1) == rows(b).argmax(-1)).double().mean().item()


@pytest.fixture(scope="module")
def runs(run_py, shim, tmp_path_factory, cpu_plan):
    """{'control'|'bf16'|'fp32': (report, {model: saved outputs})}."""
    workdir = tmp_path_factory.mktemp("float_accuracy")
    program = shim.program("float_accuracy.py")
    specs = [f"{name}:{n}" for name, n in MODELS.items()]
    out = {}
    for tag, mode, preload in (("control", None, False), ("bf16", "bf16", True),
                               ("fp32", "fp32", True)):
        role = "control" if tag == "control" else "shim"
        # Stock defaults to half the cores; give it the shim's thread count (speed only).
        env = {"OMP_NUM_THREADS": "2"} if tag == "control" else None
        # Without native BF16, bf16 mode runs the fp32 kernels and its accuracy test skips:
        # the BF16 references are not needed, and stock emulates them slowly.
        if tag == "control" and not cpu_plan["native_bf16"]:
            env["FLOAT_ACCURACY_BF16_REFERENCES"] = "0"
        # A guard against a hang, not a speed limit: on the shared 2 cores at a load average
        # of 8-10 the control run took 357 s on torch 1.13 and 415 s on torch 2.6.
        proc = run_py(program, mode=mode, preload=preload, env=env,
                      args=(workdir, role, *specs), timeout=900)
        assert proc.returncode == 0, describe(proc)
        report = parse_report(proc.stdout)
        assert report["tag"] == tag, describe(proc)
        saved = {name: torch.load(workdir / f"{name}.{tag}.pt") for name in MODELS}
        out[tag] = (report, saved)
    for state in workdir.glob("*.state.pt"):  # ~700 MB, not needed by the tests
        state.unlink()
    return out


@pytest.mark.parametrize("model", list(MODELS))
def test_fp32_mode_matches_stock(runs, model):
    ref = runs["control"][1][model]["output"]
    got = runs["fp32"][1][model]["output"]
    assert got.dtype == torch.float32 and got.shape == ref.shape
    diff = (got - ref).abs().max().item()
    bound = 1e-4 * max(1.0, ref.abs().max().item())
    assert diff <= bound, f"{model}: max abs diff {diff:.3g} > {bound:.3g}"


@pytest.mark.parametrize("model", list(MODELS))
def test_bf16_mode_accuracy(runs, model, native_bf16):
    control = runs["control"][1][model]
    ref = control["output"]
    got = runs["bf16"][1][model]["output"]
    assert got.dtype == torch.float32 and got.shape == ref.shape
    figures = {"cos": cosine(got, ref), "top1": top1(got, ref), "rows": rows(ref).shape[0]}
    if "emu" in control:
        emu, autocast = control["emu"], control["autocast"]
        figures.update(cos_emu_ref=cosine(emu, ref), top1_emu_ref=top1(emu, ref),
                       cos_autocast_ref=cosine(autocast, ref),
                       top1_autocast_ref=top1(autocast, ref),
                       cos_shim_emu=cosine(got, emu), top1_shim_emu=top1(got, emu))
    text = f"{model}: " + ", ".join(
        f"{k}={v:.6f}" if isinstance(v, float) else f"{k}={v}" for k, v in figures.items())
    print(text)
    if model in ABSOLUTE_COSINE:
        assert figures["cos"] >= 0.999, text
    if model in ABSOLUTE_TOP1:
        assert figures["top1"] >= 0.99, text
    if "emu" in control:
        assert figures["cos_shim_emu"] >= 0.999, text
        assert figures["cos"] >= figures["cos_emu_ref"] - 1e-3, text
        assert figures["cos"] >= figures["cos_autocast_ref"] - 1e-3, text
        assert figures["top1"] >= figures["top1_emu_ref"] - 0.07, text


@pytest.mark.parametrize("mode", ["bf16", "fp32"])
def test_heavy_ops_ran_on_shim_kernels(runs, mode, cpu_plan):
    skip_without_kernels(cpu_plan, mode)
    """status() per model: conv2d/linear/matmul ran on the mode's oneDNN path, never stock;
    outputs are fp32 in the stock memory format."""
    report = runs[mode][0]
    control = runs["control"][0]
    path = f"onednn_{mode}"
    for op, models in HEAVY.items():
        for model in models:
            counts = report["models"][model]["ops"].get(op, {})
            assert counts.get(path, 0) > 0, f"{model} {op}: {counts}"
            assert counts.get("stock", 0) == 0, f"{model} {op} fell back: {counts}"
            assert counts.get("autograd_bf16", 0) == 0, f"{model} {op}: {counts}"
            assert counts.get("autograd_shim", 0) == 0, f"{model} {op}: {counts}"
    for model in MODELS:
        facts, stock = report["models"][model], control["models"][model]
        assert facts["dtype"] == "torch.float32", facts
        assert facts["format"] == stock["format"], (facts, stock)
        assert facts["shape"] == stock["shape"]
        assert control["models"][model]["ops"] is None  # the control really ran stock


@pytest.mark.parametrize("mode", ["bf16", "fp32"])
def test_channels_last_input_keeps_stock_memory_format(runs, mode):
    """resnet18 fed a channels_last batch: every conv output has the memory format stock
    gives it (channels_last), and the logits match stock within the mode's tolerance."""
    facts = runs[mode][0]["models"]["resnet18"]
    stock = runs["control"][0]["models"]["resnet18"]
    assert facts["cl_conv_formats"] == stock["cl_conv_formats"]
    assert set(stock["cl_conv_formats"]) == {"channels_last"}
    assert facts["cl_output_format"] == stock["cl_output_format"]
    assert facts["cl_dtype"] == "torch.float32"
    ref = runs["control"][1]["resnet18"]["output_cl"]
    got = runs[mode][1]["resnet18"]["output_cl"]
    if mode == "fp32":
        assert (got - ref).abs().max().item() <= 1e-4 * max(1.0, ref.abs().max().item())
    else:
        assert cosine(got, ref) >= 0.999
