"""Models, inputs and helpers shared by the int8cfg_*.py programs (INT8 config and calibration
end-to-end tests). Importable because a script's directory is first on sys.path; importing it
imports torch.

Every model is small, seeded and in eval mode, so that a run takes well under a second and two
processes that build the same model with the same seed get the same weights (and so the same
op identities in the shim, which digest the weights' bytes).
"""
import json

import torch
import torch.nn as nn
import torch.nn.functional as F

from e2e_util import report, shim_status  # noqa: F401  (re-exported for the programs)

# Printed by every program right after `import torch`: the shim's core starts during that
# import, so its start-time messages come before it, and a run that IPEX_STRICT=1 stops never
# prints it.
MARKER = "INT8CFG-PROGRAM-STARTS"

INPUT_SHAPE = (3, 16, 16)
# Shapes of the unrelated work (int8cfg_model.py --noise), unlike any layer of the models, so
# a test can tell the entries it produces from the model's.
UNRELATED_CONV_WEIGHT = (5, 3, 3, 3)
UNRELATED_LINEAR = (7, 9)  # in, out


def _randomise_batch_norm(bn, generator):
    """Running statistics and affine parameters that make batch norm far from identity."""
    with torch.no_grad():
        bn.running_mean.copy_(torch.randn(bn.num_features, generator=generator) * 0.2)
        bn.running_var.copy_(torch.rand(bn.num_features, generator=generator) + 0.5)
        bn.weight.copy_(torch.rand(bn.num_features, generator=generator) + 0.5)
        bn.bias.copy_(torch.randn(bn.num_features, generator=generator) * 0.1)


class ModelA(nn.Module):
    """conv -> bn -> relu -> maxpool -> conv -> relu -> adaptive pool -> linear."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 16, 3, padding=1)
        self.fc = nn.Linear(16, 10)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 2)
        x = F.relu(self.conv2(x))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


class ModelB(nn.Module):
    """Another architecture on the same input: conv5x5 -> relu -> avgpool -> conv -> relu ->
    adaptive pool -> linear."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 6, 5, padding=2)
        self.conv2 = nn.Conv2d(6, 12, 3, padding=1)
        self.fc = nn.Linear(12, 10)

    def forward(self, x):
        x = F.avg_pool2d(F.relu(self.conv1(x)), 2)
        x = F.relu(self.conv2(x))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


class ConvRelu(nn.Module):
    """conv -> relu: the two ops of the seed's README example config."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)

    def forward(self, x):
        return F.relu(self.conv(x))


class ModelFull(nn.Module):
    """Every op kind the INT8 config knows: conv, batch norm, relu, max and average pooling,
    a residual add, adaptive pooling, linear, and a matmul of a linear's result."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 16, 3, padding=1)
        self.conv3 = nn.Conv2d(8, 16, 1)
        self.fc1 = nn.Linear(16, 32)
        self.mix = nn.Parameter(torch.randn(32, 24) * 0.2)
        self.fc2 = nn.Linear(24, 10)

    def forward(self, x, seen=None):
        """`seen`, when a dict, receives the tensors a test checks the observed ranges with."""
        seen = {} if seen is None else seen
        seen["conv1_input"] = x
        y = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 2)
        seen["relu1_output"] = y
        z = F.relu(self.conv2(y)) + self.conv3(y)
        seen["add_output"] = z
        z = F.adaptive_avg_pool2d(F.avg_pool2d(z, 2), 1)
        h = self.fc1(torch.flatten(z, 1))
        m = torch.matmul(h, self.mix)
        seen["matmul_output"] = m
        return self.fc2(m)


ARCHITECTURES = {"a": ModelA, "b": ModelB, "conv_relu": ConvRelu, "full": ModelFull}


def build_model(arch, seed):
    torch.manual_seed(seed)
    model = ARCHITECTURES[arch]()
    generator = torch.Generator().manual_seed(seed + 1000)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            _randomise_batch_norm(module, generator)
    return model.eval()


def make_input(batch, seed, scale=1.0, clamp=None):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, *INPUT_SHAPE, generator=generator)
    if clamp is not None:
        x = x.clamp(-clamp, clamp)
    return x * scale


def weighted_signatures(model):
    """The shim's identity of each conv/linear layer up to the weight digest, in model order:
    "Convolution(w=8x3x3x3,s=1x1,p=1x1,d=1x1,g=1,b=1)" / "Linear(w=10x16,b=1)"."""
    out = []
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            pair = lambda v: "x".join(str(int(i)) for i in v)  # noqa: E731
            out.append(
                f"Convolution(w={pair(module.weight.shape)},s={pair(module.stride)},"
                f"p={pair(module.padding)},d={pair(module.dilation)},g={module.groups},"
                f"b={int(module.bias is not None)})")
        elif isinstance(module, nn.Linear):
            out.append(f"Linear(w={module.out_features}x{module.in_features},"
                       f"b={int(module.bias is not None)})")
    return out


def unrelated_work(generator):
    """Tensor work that is not the model: a conv and a linear with fresh random weights (and a
    relu of the conv), and matmuls of random tensors."""
    with torch.no_grad():
        weight = torch.randn(*UNRELATED_CONV_WEIGHT, generator=generator)
        image = torch.randn(2, UNRELATED_CONV_WEIGHT[1], 12, 12, generator=generator)
        F.relu(F.conv2d(image, weight))
        linear = nn.Linear(*UNRELATED_LINEAR)
        linear.weight.copy_(torch.randn(linear.weight.shape, generator=generator))
        linear(torch.randn(4, UNRELATED_LINEAR[0], generator=generator))
        a = torch.randn(6, 5, generator=generator)
        b = torch.randn(5, 4, generator=generator)
        torch.matmul(a, b)
        a @ b.t().t()


def compact_status(status=None):
    """What the tests read from the shim's status, or None without the shim: config_state,
    the int8 section, and the ops that were called."""
    status = shim_status() if status is None else status
    if status is None:
        return None
    return {
        "mode": status["mode"],
        "config_state": status["config_state"],
        "int8": status.get("int8"),
        "ops": {op: entry for op, entry in status["ops"].items() if entry},
    }


def write_config_now():
    """torch.ops.ipex_shim.write_config()'s message, or None without the shim."""
    try:
        op = torch.ops.ipex_shim.write_config
    except (AttributeError, RuntimeError):
        return None
    return op()


def dump(path, data):
    with open(path, "w") as out:
        json.dump(data, out, sort_keys=True)
