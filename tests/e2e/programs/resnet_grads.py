"""Forward + backward of a torchvision resnet18 with a fixed seed.

usage: resnet_grads.py OUT.pt
Saves the output and every parameter gradient to OUT.pt and prints a report line with the
facts the off-mode test checks (does the shim's status op exist, which libraries are mapped).
"""
import sys

import torch
import torchvision

from e2e_util import interesting, mapped_paths, report, shim_status


def main():
    out_path = sys.argv[1]
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None)
    model.train()
    x = torch.randn(2, 3, 64, 64)
    target = torch.tensor([3, 7])
    out = model(x)
    loss = torch.nn.functional.cross_entropy(out, target)
    loss.backward()
    grads = {name: p.grad.detach().clone() for name, p in model.named_parameters()}
    assert all(g is not None for g in grads.values())
    torch.save({"output": out.detach().clone(), "loss": loss.detach().clone(), "grads": grads},
               out_path)
    report({
        "status": shim_status(),
        "mapped": interesting(mapped_paths()),
        "num_grads": len(grads),
    })


if __name__ == "__main__":
    main()
