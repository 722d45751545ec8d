"""The shim's own training kernels (max_pool2d forward/backward on oneDNN, batch_norm's
training forward) against stock on the same seeded inputs; saves everything to argv[1].

  stem        conv 7x7 s2 -> BatchNorm -> relu -> max_pool 3x3 s2 p1 -> conv -> BatchNorm ->
              relu_ -> average -> linear, two SGD steps: losses, every parameter's gradient
              at both steps, the input's gradient, running statistics at the end
  cl          max_pool2d 3x3 s2 p1 ceil_mode on a channels-last input with ties (relu'd,
              rounded values): output (values and strides) and input gradient
  nan         max_pool2d of an input holding NaN (stock returns NaN for its windows)
  double      a gradient penalty through max_pool2d and batch_norm (create_graph=True)
  no_affine   BatchNorm2d(affine=False) in training (stock runs it)
  no_grad     BatchNorm2d in train mode under no_grad
  heavy       convolutions (1-D, 2-D grouped/dilated/strided with bias, 3-D, a channels-last
              input) and linear layers (3-D input, no bias, a non-contiguous output
              gradient): outputs and gradients; the stock run also saves them under
              torch.autocast (key "autocast")
  heavy2      a gradient penalty (create_graph=True) through a convolution and a linear
ops[part]: the shim's per-op counts for max_pool2d, batch_norm, conv1d/2d/3d and linear in
that part (None stock).
"""
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F

from e2e_util import report, shim_status

torch.manual_seed(0)


def seeded(shape, seed, scale=1.0):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed)) * scale


def reset():
    if shim_status() is not None:
        torch.ops.ipex_shim.reset_stats()


def ops():
    status = shim_status()
    if status is None:
        return None
    return {op: status["ops"].get(op, {})
            for op in ("max_pool2d", "batch_norm", "conv1d", "conv2d", "conv3d", "linear")}


class Stem(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(3, 16, 7, stride=2, padding=3, bias=False), nn.BatchNorm2d(16)
        self.conv2, self.bn2 = nn.Conv2d(16, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32)
        self.fc = nn.Linear(32, 10)

    def forward(self, x):
        x = F.max_pool2d(torch.relu(self.bn1(self.conv1(x))), 3, 2, 1)
        x = self.bn2(self.conv2(x)).relu_()
        return self.fc(x.mean((2, 3)))


def part_stem(out, facts):
    model = Stem().train()
    with torch.no_grad():  # BN parameters away from their defaults
        for bn in (model.bn1, model.bn2):
            bn.weight.uniform_(0.5, 1.5, generator=torch.Generator().manual_seed(3))
            bn.bias.uniform_(-0.5, 0.5, generator=torch.Generator().manual_seed(4))
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    labels = torch.randint(0, 10, (8,), generator=torch.Generator().manual_seed(5))
    reset()
    steps = []
    for step in range(2):
        x = seeded((8, 3, 64, 64), 10 + step).requires_grad_()
        opt.zero_grad()
        loss = F.cross_entropy(model(x), labels)
        loss.backward()
        steps.append({"loss": loss.detach(), "input_grad": x.grad.clone(),
                      "grads": {n: p.grad.clone() for n, p in model.named_parameters()}})
        opt.step()
    facts["ops"]["stem"] = ops()
    out["stem"] = {"steps": steps, "buffers": {n: b.clone() for n, b in model.named_buffers()}}


def part_cl(out, facts):
    x = seeded((4, 8, 17, 17), 20).relu().round(decimals=1)
    x = x.contiguous(memory_format=torch.channels_last).requires_grad_()
    reset()
    y = F.max_pool2d(x, 3, 2, 1, ceil_mode=True)
    y.backward(seeded(y.shape, 21))
    facts["ops"]["cl"] = ops()
    out["cl"] = {"y": y.detach(), "stride": list(y.stride()), "grad": x.grad,
                 "grad_stride": list(x.grad.stride())}


def part_nan(out, facts):
    x = seeded((2, 4, 8, 8), 30)
    x[0, 1, 3, 3] = float("nan")
    x.requires_grad_()
    reset()
    y = F.max_pool2d(x, 2)
    y.backward(torch.ones_like(y))
    facts["ops"]["nan"] = ops()
    out["nan"] = {"y": y.detach(), "grad": x.grad}


def part_double(out, facts):
    x = seeded((4, 6, 12, 12), 40).requires_grad_()
    weight = (seeded((6,), 41) * 0.1 + 1).requires_grad_()
    bias = seeded((6,), 42).requires_grad_()
    reset()
    y = F.batch_norm(F.max_pool2d(x, 2), None, None, weight, bias, training=True)
    loss = (y * seeded(y.shape, 43)).pow(2).sum()
    (gx,) = torch.autograd.grad(loss, x, create_graph=True)
    gx.pow(2).sum().backward()
    facts["ops"]["double"] = ops()
    out["double"] = {"gx": gx.detach(), "weight": weight.grad, "bias": bias.grad}


def part_no_affine(out, facts):
    bn = nn.BatchNorm2d(8, affine=False).train()
    x = seeded((4, 8, 10, 10), 50).requires_grad_()
    reset()
    y = bn(x)
    y.backward(seeded(y.shape, 51))
    facts["ops"]["no_affine"] = ops()
    out["no_affine"] = {"y": y.detach(), "grad": x.grad, "mean": bn.running_mean.clone()}


def part_no_grad(out, facts):
    bn = nn.BatchNorm2d(8).train()
    x = seeded((4, 8, 10, 10), 60)
    reset()
    with torch.no_grad():
        y = bn(x)
    facts["ops"]["no_grad"] = ops()
    out["no_grad"] = {"y": y, "mean": bn.running_mean.clone(), "var": bn.running_var.clone()}


HEAVY = [  # (name, input shape, op, weight shape, bias, kwargs, channels_last)
    ("conv2d_bias_stride", (4, 16, 20, 20), F.conv2d, (32, 16, 3, 3), True,
     dict(stride=2, padding=1), False),
    ("conv2d_groups_dilation", (2, 32, 15, 15), F.conv2d, (32, 8, 3, 3), True,
     dict(padding=2, dilation=2, groups=4), False),
    ("conv2d_stem", (2, 3, 33, 31), F.conv2d, (16, 3, 7, 7), False,
     dict(stride=2, padding=3), False),
    ("conv2d_channels_last", (2, 16, 12, 12), F.conv2d, (16, 16, 3, 3), False,
     dict(padding=1), True),
    ("conv1d", (2, 6, 40), F.conv1d, (12, 3, 5), True, dict(stride=2, padding=2, groups=2),
     False),
    ("conv3d", (2, 4, 6, 7, 8), F.conv3d, (8, 4, 3, 3, 3), False, dict(padding=1), False),
    ("linear_3d", (4, 7, 32), F.linear, (16, 32), True, {}, False),
    ("linear_no_bias", (9, 24), F.linear, (5, 24), False, {}, False),
]


def heavy_run(autocast):
    results = {}
    for i, (name, shape, op, wshape, has_bias, kwargs, channels_last) in enumerate(HEAVY):
        x = seeded(shape, 70 + i)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        x.requires_grad_()
        w = (seeded(wshape, 80 + i) * 0.1).requires_grad_()
        b = seeded((wshape[0],), 90 + i).requires_grad_() if has_bias else None
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            y = op(x, w, b, **kwargs)
        y = y.float()
        # A gradient with other strides than the output's (transposed and back).
        grad = seeded(y.shape, 100 + i).transpose(0, -1).contiguous().transpose(0, -1)
        y.backward(grad)
        results[name] = {"y": y.detach(), "stride": list(y.stride()), "x": x.grad, "w": w.grad,
                         "b": b.grad if has_bias else None}
    return results


def part_heavy(out, facts):
    reset()
    out["heavy"] = heavy_run(False)
    facts["ops"]["heavy"] = ops()
    if facts["ops"]["heavy"] is None:  # stock: the autocast reference too
        out["heavy_autocast"] = heavy_run(True)


def part_heavy2(out, facts):
    x = seeded((2, 8, 10, 10), 110).requires_grad_()
    w = (seeded((16, 8, 3, 3), 111) * 0.1).requires_grad_()
    lw = (seeded((4, 16), 112) * 0.1).requires_grad_()
    reset()
    y = F.linear(F.conv2d(x, w, padding=1).mean((2, 3)), lw)
    (gx,) = torch.autograd.grad(y.pow(2).sum(), x, create_graph=True)
    gx.pow(2).sum().backward()
    facts["ops"]["heavy2"] = ops()
    out["heavy2"] = {"gx": gx.detach(), "w": w.grad, "lw": lw.grad}


def main():
    out, facts = {}, {"ops": {}}
    for part in (part_stem, part_cl, part_nan, part_double, part_no_affine, part_no_grad,
                 part_heavy, part_heavy2):
        part(out, facts)
    torch.save(out, sys.argv[1])
    facts["stock"] = shim_status() is None
    report(facts)


if __name__ == "__main__":
    main()
