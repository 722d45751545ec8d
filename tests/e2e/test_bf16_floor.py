"""scripts/bf16_floor.py, whose figures the README's cosine-floor table quotes: its emulated
BF16 layer is one rounding of input, weight and output around an fp32 product, it touches only
the layers it is given, it puts the weights back, and "first" means first called."""
import sys

import torch
import torch.nn as nn

from conftest import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / "scripts"))
import bf16_floor  # noqa: E402


def bf16(t):
    return t.to(torch.bfloat16).float()


class CalledOutOfOrder(nn.Module):
    """Registers `late` before `early` but calls `early` first."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.late = nn.Linear(16, 4)
        self.early = nn.Linear(8, 16)

    def forward(self, x):
        return self.late(torch.tanh(self.early(x)))


def test_call_order_not_registration_order():
    model = CalledOutOfOrder()
    order = bf16_floor.heavy_layers_in_call_order(model, torch.randn(2, 8))
    assert order == [model.early, model.late]


def test_emulated_layer_rounds_input_weight_and_output_once():
    model = CalledOutOfOrder().eval()
    x = torch.randn(3, 8) * 3 + 0.1
    weights = [p.detach().clone() for p in model.parameters()]
    with torch.no_grad():
        plain = model(x)
        by_hand_early = bf16(bf16(x) @ bf16(model.early.weight).t() + model.early.bias)
        by_hand = model.late(torch.tanh(by_hand_early))
    assert torch.equal(bf16_floor.run_emulated(model, x, []), plain)
    got = bf16_floor.run_emulated(model, x, [model.early])
    assert torch.allclose(got, by_hand, rtol=1e-6, atol=1e-6)
    # Rounding changed the result (so the check above is not plain fp32 twice) ...
    assert not torch.allclose(got, plain, rtol=1e-6, atol=1e-6)
    # ... and left the weights as they were, with no hook behind.
    for before, after in zip(weights, model.parameters()):
        assert torch.equal(before, after)
    assert torch.equal(model(x).detach(), plain)


def test_cosine_of_flattened_outputs():
    a = torch.tensor([[1.0, 0.0], [0.0, 0.0]])
    assert bf16_floor.cosine(a, a) == 1.0
    assert abs(bf16_floor.cosine(a, torch.tensor([[1.0, 1.0], [0.0, 0.0]])) - 2 ** -0.5) < 1e-12
