"""Calibration through a DataLoader with worker processes that do tensor work of their own.

usage: int8cfg_dataloader.py OUT.pt

Prints MARKER right after `import torch`. A dataset of 8 images whose __getitem__ runs a 1x1
conv (weight 3x3x1x1, unlike any layer of the model) and a relu on a seeded random image; a
DataLoader with 2 forked workers hands batches of 4 to model "a" (int8cfg_common.py). Saves
the outputs to OUT.pt and prints a report line: the worker pids seen, the batches, the
model's conv/linear signatures and the shim's compact status.
"""
import os
import sys

import torch

from int8cfg_common import MARKER

print(MARKER, flush=True)

import torch.nn.functional as F  # noqa: E402
from torch.utils.data import DataLoader, Dataset  # noqa: E402

from int8cfg_common import build_model, compact_status, report, weighted_signatures  # noqa: E402

WORKER_CONV_WEIGHT = (3, 3, 1, 1)


class ImageDataset(Dataset):
    def __len__(self):
        return 8

    def __getitem__(self, index):
        generator = torch.Generator().manual_seed(500 + index)
        image = torch.randn(1, 3, 16, 16, generator=generator)
        weight = torch.randn(*WORKER_CONV_WEIGHT, generator=generator) * 0.5
        with torch.no_grad():
            image = F.relu(F.conv2d(image, weight)) - 0.5
        return image[0], os.getpid()


def main():
    model = build_model("a", 0)
    loader = DataLoader(ImageDataset(), batch_size=4, num_workers=2)
    outputs, workers = [], set()
    with torch.no_grad():
        for images, pids in loader:
            outputs.append(model(images))
            workers.update(int(p) for p in pids)
    torch.save(outputs, sys.argv[1])
    report({
        "pid": os.getpid(),
        "workers": sorted(workers),
        "batches": len(outputs),
        "signatures": weighted_signatures(model),
        "status": compact_status(),
    })


if __name__ == "__main__":
    main()
