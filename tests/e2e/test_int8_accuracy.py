"""calibration and int8 modes: eval outputs of real models against stock PyTorch.

Models (programs/int8_models.py): torchvision resnet18, resnet50, mobilenet_v2 on 224x224
synthetic images (scripts/bench_models.synthetic_images), weights=None, seed 0, BatchNorm
statistics from train-mode forwards under no_grad, classifier centred
(scripts/bench_models.build_reference_model); and the BERT-shaped encoder of
scripts/bench_models.py with BERT-base's layer shape (hidden 768, 12 heads, ff 3072), 2
layers, vocabulary 8000.

The flow a user runs: the same unmodified program twice, first under IPEX_MODE=calibration
with IPEX_CONFIG=<file> on 8 seeded batches of 8 (sequences of 64 tokens for the encoder),
then under IPEX_MODE=int8 with the same IPEX_CONFIG on another seeded batch of 2 (sequences
of 48 tokens) that calibration never saw. A control run without the shim builds the models,
saves their state_dicts and inputs, and evaluates both input sets with stock PyTorch.

Why 64 calibration images: synthetic_images gives every image a random gain, so with the 12
images of 3 batches of 4 the test images exceeded the calibrated range at every layer of
resnet18 and ideal INT8 reached only a cosine of 0.927 (clipping, not rounding); with 64 it
reaches 0.999.

Tolerances
  calibration: outputs bit for bit those of stock PyTorch run in the same environment (it
    only observes).
  int8: cosine(int8 output, stock fp32 output) >= 0.99 (per_tensor: 0.98) for resnet18,
    resnet50 and the encoder where ideal INT8 reaches it, and >= 0.98 for them everywhere.
    Ideal INT8 quantises weights as the shim does on this CPU: within 127, or within 63
    where oneDNN has no VNNI (status()["on_this_cpu"]["int8_weight_bound"]; kernels/int8.h).
    NOT asserted for mobilenet_v2: no INT8 computation reaches it on random weights. Each
    of its layers amplifies the perturbation of the layers before (0.1% multiplicative noise
    on each conv input costs 2% of cosine at 160x160, BF16 rounding 6%); ideal INT8 reaches
    0.959 at 224x224 (0.46-0.53 at 160x160). So the control run also computes with stock
    PyTorch ideal INT8 inference ("ideal", programs/int8_models.ideal_int8_outputs: every
    conv/linear input fake-quantised with the range it had over the calibration batches, by
    the same algorithm, u8 where that range is non-negative and s8 otherwise; every
    conv/linear weight quantised to s8 per output channel or per tensor after folding its
    BatchNorm; fp32 arithmetic, and fp32 for every other op: static INT8 as IPEX computes
    it), and every CNN, mobilenet_v2 included, must be as accurate as INT8 allows:
      1 - cosine(shim, stock) <= 1.2 * (1 - cosine(ideal, stock)) + 0.005.
    (cosine(shim, ideal) is printed, not asserted: in a chaotic network two correct INT8
    computations that round a few values differently can end up far apart.)
  status: conv2d (CNNs) or linear (encoder) ran on onednn_int8 for >= 80% of its calls,
    every int8 config entry the program needed was found (int8.mismatched == 0), the config
    was applied.
"""
import json

import pytest
import torch

from conftest import cosine, describe, parse_report


CNNS = ["resnet18", "resnet50", "mobilenet_v2"]
MODELS = CNNS + ["encoder"]
DEFAULT = "mse/per_channel"  # the shim's defaults
VARIANT_MODEL = "resnet18"  # the model also calibrated with min_max, percentile, per_tensor
MIN_MAX = "min_max/per_channel"
PERCENTILE = "percentile/per_channel"
PER_TENSOR = "mse/per_tensor"
HEAVY_OP = {**{m: "conv2d" for m in CNNS}, "encoder": "linear"}
MIN_INT8_SHARE = 0.8
RELATIVE_SLACK = 0.2
ABSOLUTE_SLACK = 0.005
# The brief's absolute target, where ideal INT8 meets it (see the docstring), and the floor
# for every model but mobilenet_v2 on every CPU.
MIN_COSINE = {"resnet18": 0.99, "resnet50": 0.99, "encoder": 0.99}
FLOOR_COSINE = 0.98


@pytest.fixture(scope="module")
def control(run_py, shim, tmp_path_factory, cpu_plan):
    """WORKDIR with every model's state_dict, inputs and stock outputs."""
    workdir = tmp_path_factory.mktemp("int8_accuracy")
    specs = [f"{VARIANT_MODEL}:{DEFAULT}+{MIN_MAX}+{PERCENTILE}+{PER_TENSOR}"]
    specs += [m for m in MODELS if m != VARIANT_MODEL]
    # The same environment as the calibration run (no OMP_NUM_THREADS): calibration keeps
    # stock's thread count, so its outputs can be stock's bit for bit.
    proc = run_py(shim.program("int8_models.py"), preload=False,
                  env={"IDEAL_INT8_WEIGHT_BOUND": str(cpu_plan["int8_weight_bound"])},
                  args=("control", workdir, *specs), timeout=400)
    assert proc.returncode == 0, describe(proc)
    assert parse_report(proc.stdout)["status"] is None  # the control really ran stock
    yield workdir
    for state in workdir.glob("*.state.pt"):  # ~180 MB, not needed after the tests
        state.unlink()


class Int8Flow:
    """One model calibrated with one variant, then run in int8 mode."""

    def __init__(self, run_py, program, workdir, model, variant):
        algorithm, granularity = variant.split("/")
        tag = f"{model}.{algorithm}.{granularity}"
        self.config_path = workdir / f"{tag}.json"
        env = {"IPEX_CONFIG": self.config_path}
        if variant != DEFAULT:  # the default run leaves the settings at their defaults
            env.update(IPEX_INT8_ALGORITHM=algorithm, IPEX_INT8_GRANULARITY=granularity)
        proc = run_py(program, mode="calibration", env=env,
                      args=("calibrate", workdir, model, workdir / f"{tag}.calibration.pt"))
        assert proc.returncode == 0, describe(proc)
        self.calibration_status = parse_report(proc.stdout)["status"]
        self.calibration_outputs = torch.load(workdir / f"{tag}.calibration.pt")
        assert self.config_path.is_file(), f"calibration wrote no config\n{describe(proc)}"
        with open(self.config_path) as config:
            self.entries = json.load(config)
        proc = run_py(program, mode="int8", env={"IPEX_CONFIG": self.config_path},
                      args=("infer", workdir, model, workdir / f"{tag}.int8.pt"))
        assert proc.returncode == 0, describe(proc)
        self.int8_stderr = proc.stderr
        self.status = parse_report(proc.stdout)["status"]
        self.output = torch.load(workdir / f"{tag}.int8.pt")
        control = torch.load(workdir / f"{model}.control.pt")
        self.stock_calibration = control["calibration"]
        self.stock = control["test"]
        self.ideal = control.get("ideal_int8", {}).get(variant)


@pytest.fixture(scope="module")
def flow(run_py, shim, control):
    """flow(model, variant=DEFAULT) -> Int8Flow, run once per (model, variant)."""
    done = {}

    def get(model, variant=DEFAULT):
        if (model, variant) not in done:
            done[model, variant] = Int8Flow(run_py, shim.program("int8_models.py"), control,
                                            model, variant)
        return done[model, variant]

    return get


def check_int8_kernels_ran(model, got):
    """conv2d/linear mostly on onednn_int8, every config entry found, the config applied."""
    status = got.status
    assert status is not None, "the int8 run has no ipex_shim.status()"
    op = HEAVY_OP[model]
    counts = status["ops"].get(op, {})
    calls = sum(v for k, v in counts.items() if isinstance(v, int))
    int8 = counts.get("onednn_int8", 0)
    assert calls > 0 and int8 >= MIN_INT8_SHARE * calls, f"{model} {op}: {counts}"
    summary = status["int8"]
    assert summary["mismatched"] == 0, f"{model}: {summary}\n{got.int8_stderr}"
    assert summary["matched"] > 0 and summary["entries"] == len(got.entries), summary
    assert status["config_state"] == "applied", status["config_state"]


def accuracy_figures(got):
    figures = {"cos": cosine(got.output, got.stock)}
    if got.ideal is not None:
        figures.update(cos_ideal_stock=cosine(got.ideal, got.stock),
                       cos_shim_ideal=cosine(got.output, got.ideal))
    return figures


def describe_figures(model, variant, figures):
    return f"{model} {variant}: " + ", ".join(f"{k}={v:.5f}" for k, v in figures.items())


def check_as_accurate_as_int8_allows(text, figures):
    """The shim's cosine distance to stock fp32 is at most ideal INT8's, give or take
    RELATIVE_SLACK of it and ABSOLUTE_SLACK."""
    ideal_distance = 1 - figures["cos_ideal_stock"]
    assert 1 - figures["cos"] <= (1 + RELATIVE_SLACK) * ideal_distance + ABSOLUTE_SLACK, text


@pytest.mark.parametrize("model", MODELS)
def test_calibration_run_matches_stock_bit_for_bit(flow, model):
    """Calibration observes only: every output is stock's, bit for bit; the ops it
    quantises were observed and the config it wrote has the default algorithm."""
    got = flow(model)
    assert len(got.calibration_outputs) == len(got.stock_calibration)
    for i, (out, ref) in enumerate(zip(got.calibration_outputs, got.stock_calibration)):
        assert out.dtype == ref.dtype and out.shape == ref.shape, i
        assert torch.equal(out, ref), \
            f"{model} batch {i}: max |diff| {(out - ref).abs().max().item():.3g}"
    observed = got.calibration_status["ops"][HEAVY_OP[model]]
    assert observed.get("observed", 0) > 0, observed
    assert got.entries, "empty config"
    weighted = [e for e in got.entries if e["name"] in ("Convolution", "Linear")]
    assert weighted, [e["name"] for e in got.entries]
    assert {e["algorithm"] for e in got.entries} == {"mse"}
    assert {e["weight_granularity"] for e in weighted} == {"per_channel"}


@pytest.mark.parametrize("model", MODELS)
def test_int8_accuracy(flow, model):
    """INT8 inference of images/tokens calibration never saw, against stock fp32."""
    got = flow(model)
    assert got.output.dtype == torch.float32 and got.output.shape == got.stock.shape
    figures = accuracy_figures(got)
    text = describe_figures(model, DEFAULT, figures)
    print(text)
    if model in MIN_COSINE:
        assert figures["cos"] >= FLOOR_COSINE, text
        if figures.get("cos_ideal_stock", 1.0) >= MIN_COSINE[model]:
            assert figures["cos"] >= MIN_COSINE[model], text
    if model in CNNS:
        check_as_accurate_as_int8_allows(text, figures)


@pytest.mark.parametrize("model", MODELS)
def test_int8_kernels_ran(flow, model):
    """status() of the int8 run: the INT8 kernels did the heavy work."""
    check_int8_kernels_ran(model, flow(model))


def scales_by_key(entries):
    return {e["key"]: e["inputs_scale"] + e["outputs_scale"] for e in entries}


@pytest.mark.parametrize("variant", [PERCENTILE, DEFAULT])
def test_clipping_calibration(flow, variant):
    """IPEX_INT8_ALGORITHM=percentile (clips the rarest 0.01%) and mse, the default (clips
    where the squared error of quantising all calls' values is smallest): the config names
    the algorithm, every range is min_max's (IPEX_INT8_ALGORITHM=min_max, the seed's) or
    clipped inside it, so every scale is at least min_max's and some are larger, and int8
    inference is as accurate as ideal INT8 with the same algorithm's ranges (the control's
    own clipping: programs/int8_models.tensor_range and pooled_clip)."""
    algorithm = variant.split("/")[0]
    got = flow(VARIANT_MODEL, variant)
    algorithms = sorted({e["algorithm"] for e in got.entries})
    assert algorithms == [algorithm], \
        f"calibration under IPEX_INT8_ALGORITHM={algorithm} wrote algorithm {algorithms}"
    clipped = scales_by_key(got.entries)
    min_max = scales_by_key(flow(VARIANT_MODEL, MIN_MAX).entries)
    assert clipped.keys() == min_max.keys()
    larger = 0
    for key, scales in clipped.items():
        for c, m in zip(scales, min_max[key]):
            assert c >= m * (1 - 1e-9), (key, scales, min_max[key])
            larger += c > m * 1.0001
    assert larger > 0, f"{algorithm} calibration gave the very scales of min_max"
    figures = accuracy_figures(got)
    text = describe_figures(VARIANT_MODEL, variant, figures)
    print(text)
    assert figures["cos"] >= 0.99, text
    check_as_accurate_as_int8_allows(text, figures)
    check_int8_kernels_ran(VARIANT_MODEL, got)


def test_per_tensor_weights(flow):
    """IPEX_INT8_GRANULARITY=per_tensor: Convolution and Linear entries say so, inference
    uses it (other results than per_channel) and is as accurate as ideal per-tensor INT8.
    The absolute bound is looser (0.98) than per_channel's: one scale for a whole weight
    tensor is set by its largest output channel, and after BatchNorm folding channels differ
    by orders of magnitude, so the others keep few int8 levels (on these random weights the
    loss happens to be small; on trained ones it often is not). The relative bound needs no
    loosening: its reference, ideal per-tensor INT8, loses the same."""
    got = flow(VARIANT_MODEL, PER_TENSOR)
    weighted = [e for e in got.entries if e["name"] in ("Convolution", "Linear")]
    assert weighted
    granularities = sorted({e["weight_granularity"] for e in weighted})
    assert granularities == ["per_tensor"], ("calibration under IPEX_INT8_GRANULARITY="
                                             f"per_tensor wrote {granularities} weights")
    per_channel = flow(VARIANT_MODEL)
    assert not torch.equal(got.output, per_channel.output), \
        "per_tensor int8 output is identical to per_channel's"
    figures = accuracy_figures(got)
    text = describe_figures(VARIANT_MODEL, PER_TENSOR, figures)
    print(text)
    assert figures["cos"] >= 0.98, text
    check_as_accurate_as_int8_allows(text, figures)
    check_int8_kernels_ran(VARIANT_MODEL, got)
