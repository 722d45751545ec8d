"""silu and hardswish computed by the convolution before them (shim/fusion.h), in the blocks
EfficientNet (silu) and MobileNetV3 (hardswish) are made of: conv -> batch_norm -> activation
chains, in place and out of place, a depthwise convolution whose result a squeeze-excitation
block reads twice (pooled, then multiplied by its gate), residual adds, in every mode.

Usage: activations.py OUT.pt silu|hardswish [inference_mode]
Each scenario builds the network afresh (same weights), runs two passes, then a third in
which some scenarios use the tensors differently from what passes 1 and 2 taught:
  plain          as learned
  bn_read        the stem's batch norm result read by the program before its activation
  bn_scaled      the stem's batch norm result multiplied (mul.Tensor) before its activation
  act_read       the stem's activation result read by the program before the next block
  act_changed    a block's expand activation result changed in place before the next conv
  se_read        the first block's squeeze-excitation product read before the projection
  se_changed     that product changed in place before the projection
  se_gate_wide   that block's gate expanded to a factor per element before the multiply
Saves {"results": {scenario: output of pass 3 (with what was read)}, "activations_per_pass":
n, "counters": {scenario: [status()["fusion"] with the count of fused activation calls (in
place or not) and of products computed on handed-over bytes, after passes 2 and 3]},
"int8": status()["int8"] at the end} (counters and "int8" only under the shim).
"""
import json
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F


class ConvBnAct(nn.Module):
    def __init__(self, cin, cout, kernel, stride=1, groups=1, activation=nn.SiLU, inplace=True):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(cout)
        self.act = activation(inplace=inplace)
        self.twist = None
        self.seen = None

    def forward(self, x):
        y = self.bn(self.conv(x))
        if self.twist == "bn_read":
            self.seen = y.sum().item()
        if self.twist == "bn_scaled":
            y = y * 2.0  # mul.Tensor (the number wrapped) on the batch norm's result
            y = y * torch.ones_like(y)  # and mul.Tensor of two full tensors
        y = self.act(y)
        if self.twist == "act_read":
            self.seen = y.sum().item()
        if self.twist == "act_changed":
            y.mul_(-1.0)
        return y


class SqueezeExcite(nn.Module):
    """torchvision's: pooled, reduced, activated, expanded, gated, multiplied."""

    def __init__(self, channels, squeezed, inner, gate):
        super().__init__()
        self.reduce = nn.Conv2d(channels, squeezed, 1)
        self.expand = nn.Conv2d(squeezed, channels, 1)
        self.inner = inner(inplace=True)
        self.gate = gate
        self.twist = None
        self.seen = None

    def forward(self, x):
        s = F.adaptive_avg_pool2d(x, 1)
        s = self.gate(self.expand(self.inner(self.reduce(s))))
        if self.twist == "se_gate_wide":
            # A factor per element, not per channel, made without reading x (its sizes are
            # not an op): the mul itself must find that it cannot take x's bytes.
            s = s.expand(-1, -1, x.shape[2], x.shape[3]).contiguous()
        y = x * s
        if self.twist == "se_read":
            # Magnitudes, not a sum of both signs: the products' own rounding (BF16) must
            # not be magnified by cancellation into the check.
            self.seen = y.abs().sum().item()
        if self.twist == "se_changed":
            y.mul_(-1.0)
        return y


class MBConv(nn.Module):
    def __init__(self, cin, cout, stride, act, se_inner, se_gate, depthwise_inplace):
        super().__init__()
        mid = cin * 4
        self.expand = ConvBnAct(cin, mid, 1, activation=act, inplace=False)
        self.depthwise = ConvBnAct(mid, mid, 3, stride, groups=mid, activation=act,
                                   inplace=depthwise_inplace)
        self.se = SqueezeExcite(mid, max(cin // 4, 4), se_inner, se_gate)
        self.project = nn.Sequential(nn.Conv2d(mid, cout, 1, bias=False), nn.BatchNorm2d(cout))
        self.residual = stride == 1 and cin == cout

    def forward(self, x):
        y = self.project(self.se(self.depthwise(self.expand(x))))
        return x + y if self.residual else y


class FusedMBConv(nn.Module):
    """EfficientNetV2's first stages: a 3x3 conv -> bn -> act, then a 1x1 projection."""

    def __init__(self, channels, act):
        super().__init__()
        self.expand = ConvBnAct(channels, channels * 4, 3, activation=act)
        self.project = nn.Sequential(nn.Conv2d(channels * 4, channels, 1, bias=False),
                                     nn.BatchNorm2d(channels))

    def forward(self, x):
        return x + self.project(self.expand(x))


class Net(nn.Module):
    def __init__(self, activation):
        super().__init__()
        if activation == "silu":  # EfficientNet
            act, se_inner, se_gate = nn.SiLU, nn.SiLU, torch.sigmoid
        else:  # MobileNetV3
            act, se_inner, se_gate = nn.Hardswish, nn.ReLU, F.hardsigmoid
        self.stem = ConvBnAct(3, 16, 3, 2, activation=act)
        self.fused = FusedMBConv(16, act)
        self.block1 = MBConv(16, 24, 2, act, se_inner, se_gate, depthwise_inplace=True)
        self.block2 = MBConv(24, 24, 1, act, se_inner, se_gate, depthwise_inplace=False)
        self.head = ConvBnAct(24, 64, 1, activation=act)
        self.fc = nn.Linear(64, 10)

    def forward(self, x):
        x = self.block2(self.block1(self.fused(self.stem(x))))
        features = self.head(x).mean((2, 3))
        return torch.cat([self.fc(features), features], 1)

    def trained_looking(self):
        # Batch norm statistics and affine parameters away from their defaults, as a trained
        # network's are: the fold into the convolution then changes every value.
        g = torch.Generator().manual_seed(3)
        for m in self.modules():
            if isinstance(m, nn.BatchNorm2d):
                n = m.num_features
                m.running_mean.copy_(torch.randn(n, generator=g) * 0.2)
                m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
                m.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
                m.bias.data.copy_(torch.randn(n, generator=g) * 0.2)
        return self


SCENARIOS = ["plain", "bn_read", "bn_scaled", "act_read", "act_changed", "se_read",
             "se_changed", "se_gate_wide"]


def twisted(net, scenario):
    if scenario in ("bn_read", "bn_scaled", "act_read"):
        return net.stem
    if scenario == "act_changed":
        return net.block1.expand
    if scenario.startswith("se_"):
        return net.block1.se
    return None


def main():
    out_path, activation = sys.argv[1], sys.argv[2]
    grad_mode = torch.inference_mode if sys.argv[3:] == ["inference_mode"] else torch.no_grad
    x = torch.randn(2, 3, 48, 48, generator=torch.Generator().manual_seed(1))
    try:
        status = torch.ops.ipex_shim.status
    except (RuntimeError, AttributeError):
        status = None  # stock PyTorch, no preload

    def counters():
        report = json.loads(status())
        fused = sum(report["ops"].get(name, {}).get("fused", 0)
                    for name in (activation, activation + "_"))
        mul = report["ops"].get("mul.Tensor", {})
        on_bytes = sum(mul.get(path, 0) for path in ("onednn_fp32", "onednn_bf16", "onednn_int8"))
        return dict(report["fusion"], activations_fused=fused, products_on_bytes=on_bytes,
                    products_int8=mul.get("onednn_int8", 0))

    calls = [0]
    results, recorded = {}, {}
    for scenario in SCENARIOS:
        torch.manual_seed(0)
        net = Net(activation).trained_looking().eval()
        act_type = nn.SiLU if activation == "silu" else nn.Hardswish
        for m in net.modules():
            if isinstance(m, act_type):
                m.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
        with grad_mode():
            net(x)
            calls[0] = 0
            net(x)
            per_pass = calls[0]
            after_two = counters() if status else None
            target = twisted(net, scenario)
            if target is not None:
                target.twist = scenario
            result = net(x).flatten()
            if target is not None and target.seen is not None:
                result = torch.cat([result, torch.tensor([target.seen])])
            results[scenario] = result.clone()
        if status is not None:
            recorded[scenario] = [after_two, counters()]
    saved = {"results": results, "activations_per_pass": per_pass, "counters": recorded}
    if status is not None:
        saved["int8"] = json.loads(status()).get("int8")
    torch.save(saved, out_path)


if __name__ == "__main__":
    main()
