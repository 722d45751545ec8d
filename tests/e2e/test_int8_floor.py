"""scripts/int8_floor.py, whose figures the README's INT8 floor paragraph quotes: its
emulated INT8 layer rounds the input to the range's steps in the shim's scheme (or torch.ao's
affine one) and the batch-norm-folded weight per output channel, it touches only the layers
it is given and puts their weights back, and its ranges are the calibration batches' widest
values or torch.ao's HistogramObserver's."""
import sys

import pytest
import torch
import torch.nn as nn

from conftest import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / "scripts"))
import int8_floor  # noqa: E402


class ConvBnLinear(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 4, 3)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4 * 6 * 6, 5)
        with torch.no_grad():
            self.bn.running_mean.uniform_(-0.5, 0.5)
            self.bn.running_var.uniform_(0.5, 2.0)
            self.bn.weight.uniform_(0.2, 3.0)

    def forward(self, x):
        return self.fc(torch.relu(self.bn(self.conv(x))).flatten(1))


def test_layers_are_the_convolutions_and_linears():
    model = ConvBnLinear()
    assert int8_floor.quantisable(model) == [model.conv, model.fc]


def test_symmetric_and_affine_rounding():
    x = torch.tensor([-1.0, -0.3, 0.0, 0.26, 2.0, 5.0])
    # Never negative: u8, 255 steps up to hi; values above hi clamp.
    got = int8_floor.fake_quantise(x.clamp_min(0), 0.0, 2.0)
    step = 2.0 / 255
    assert torch.allclose(got, torch.tensor([0.0, 0.0, 0.0, round(0.26 / step) * step, 2.0, 2.0]))
    # Signed: s8, 127 steps a side of the larger magnitude.
    got = int8_floor.fake_quantise(x, -1.0, 2.0)
    step = 2.0 / 127
    want = torch.clamp(torch.round(x / step), -128, 127) * step
    assert torch.allclose(got, want)
    # Affine: 255 steps over [lo, hi] with a zero point, finer than s8 on a lopsided range.
    got = int8_floor.fake_quantise(x, -1.0, 2.0, affine=True)
    step = 3.0 / 255
    inside = (x >= -1.0) & (x <= 2.0)
    assert (got[inside] - x[inside]).abs().max() <= step / 2 + 1e-6
    assert (got[inside] - x[inside]).abs().max() < 1.0 / 127
    assert got[-1].item() == pytest.approx(2.0, abs=step)


def test_weight_is_rounded_per_output_channel_as_after_folding_the_batch_norm():
    model = ConvBnLinear()
    w = model.conv.weight.detach()
    got = int8_floor.quantised_weight(w)
    steps = got / (w.abs().flatten(1).amax(1).view(-1, 1, 1, 1) / 127)
    # Whole steps of each channel's own scale, each channel's largest at 127 ...
    assert torch.allclose(steps, steps.round(), atol=1e-4)
    assert torch.equal(steps.abs().flatten(1).amax(1).round(), torch.full((4,), 127.0))
    # ... the same weight as rounding with the batch norm folded in (the shim's kernel) and
    # unfolding again, as the script's docstring says ...
    fold = (model.bn.weight / torch.sqrt(model.bn.running_var + model.bn.eps)).detach()
    fold[0] = -fold[0]  # a negative batch-norm weight too
    folded = int8_floor.quantised_weight(w * fold.view(-1, 1, 1, 1)) / fold.view(-1, 1, 1, 1)
    assert torch.allclose(folded, got, rtol=1e-5, atol=1e-7)
    # ... and not one scale for the whole tensor.
    per_tensor_step = w.abs().max() / 127
    assert not torch.allclose(got / per_tensor_step, (got / per_tensor_step).round(), atol=1e-3)


def test_emulated_run_matches_by_hand_and_restores_the_model():
    model = ConvBnLinear().eval()
    x = torch.randn(2, 3, 8, 8) * 2 + 0.5
    before = [p.detach().clone() for p in model.parameters()]
    layers = int8_floor.quantisable(model)
    ranges = int8_floor.input_ranges(model, layers, [x], "min_max")
    with torch.no_grad():
        plain = model(x)
        h = torch.relu(model.bn(nn.functional.conv2d(
            int8_floor.fake_quantise(x, x.min().item(), x.max().item()),
            int8_floor.quantised_weight(model.conv.weight), model.conv.bias))).flatten(1)
        by_hand = nn.functional.linear(int8_floor.fake_quantise(h, *ranges[1]),
                                       int8_floor.quantised_weight(model.fc.weight),
                                       model.fc.bias)
    assert ranges[0] == (x.min().item(), x.max().item()) and ranges[1][0] == 0.0
    got = int8_floor.run_emulated(model, x, layers, ranges)
    assert torch.allclose(got, by_hand, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(got, plain, rtol=1e-4, atol=1e-4)
    for old, new in zip(before, model.parameters()):
        assert torch.equal(old, new)
    assert torch.equal(model(x).detach(), plain)


def test_torch_ao_ranges_are_its_histogram_observers_and_clip_a_long_tail():
    from torch.ao.quantization.observer import HistogramObserver
    model = nn.Sequential(nn.Linear(64, 8)).eval()
    torch.manual_seed(1)
    x = torch.relu(torch.randn(4096, 64)) ** 4  # never negative, with a long tail
    batches = [x[:2048], x[2048:]]
    layer = [model[0]]
    (lo, hi), = int8_floor.input_ranges(model, layer, batches, "min_max")
    assert (lo, hi) == (0.0, x.max().item())
    (ao_lo, ao_hi), = int8_floor.input_ranges(model, layer, batches, "torch_ao")
    observer = HistogramObserver(reduce_range=False)
    for batch in batches:
        observer(batch)
    scale, zero_point = (t.item() for t in observer.calculate_qparams())
    assert (ao_lo, ao_hi) == (-zero_point * scale, (255 - zero_point) * scale)
    # torch 1.13 clips this tail to 0.53 of the largest value, torch 2.6 to 0.65.
    assert ao_lo == 0.0 and ao_hi < 0.8 * hi, (ao_lo, ao_hi, hi)
