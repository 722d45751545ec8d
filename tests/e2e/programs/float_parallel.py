"""Inference from a Python thread and from a DataLoader with worker processes.

usage: float_parallel.py OUT.pt

thread:     a conv+linear model evaluated under no_grad in the main thread, then in a
            threading.Thread (the main thread waits in join, so every op counted meanwhile
            ran in that thread); both outputs are saved.
dataloader: a Dataset whose __getitem__ builds a seeded image and smooths it with a fixed
            3x3 conv2d under no_grad (in the worker processes, num_workers=2); the main
            process feeds the batches to the model under no_grad. Outputs are saved in order;
            each sample also carries the worker's shim status (active, conv2d counts).
"""
import json
import os
import sys
import threading

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from float_common import op_counts, report, reset_stats, shim_status

N_SAMPLES = 64
BATCH = 16


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, padding=1)
        self.conv2 = nn.Conv2d(16, 32, 3, padding=1, stride=2)
        self.fc = nn.Linear(32 * 8 * 8, 10)

    def forward(self, x):
        x = F.relu(self.conv2(F.relu(self.conv1(x))))
        return self.fc(x.flatten(1))


class SmoothedImages(Dataset):
    def __init__(self):
        self.kernel = torch.full((3, 1, 3, 3), 1.0 / 9.0)

    def __len__(self):
        return N_SAMPLES

    def __getitem__(self, index):
        g = torch.Generator().manual_seed(1000 + index)
        image = torch.randn(1, 3, 16, 16, generator=g)
        with torch.no_grad():
            image = F.conv2d(image, self.kernel, padding=1, groups=3)[0] * 3.0
        status = shim_status()
        worker = {"pid": os.getpid(), "active": None, "conv2d_onednn": None}
        if status is not None:
            conv = status["ops"]["conv2d"]
            worker.update(active=status["active"],
                          conv2d_onednn=conv.get("onednn_bf16", 0) + conv.get("onednn_fp32", 0))
        return image, json.dumps(worker)


def main():
    out_path = sys.argv[1]
    torch.manual_seed(0)
    model = Net().eval()
    x = torch.randn(8, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    facts = {"main_pid": os.getpid()}

    reset_stats()
    with torch.no_grad():
        main_out = model(x)
    facts["main_ops"] = op_counts()

    box = {}

    def in_thread():
        status = shim_status()
        box["active"] = None if status is None else status["active"]
        with torch.no_grad():
            box["out"] = model(x)

    reset_stats()
    thread = threading.Thread(target=in_thread)
    thread.start()
    thread.join()
    facts["thread_ops"] = op_counts()
    facts["thread_active"] = box["active"]

    loader = DataLoader(SmoothedImages(), batch_size=BATCH, num_workers=2, shuffle=False)
    reset_stats()
    outs, workers = [], []
    with torch.no_grad():
        for images, infos in loader:
            outs.append(model(images))
            workers.extend(json.loads(i) for i in infos)
    facts["loader_ops"] = op_counts()
    facts["workers"] = workers
    torch.save({"main": main_out, "thread": box["out"], "loader": torch.cat(outs)}, out_path)
    report(facts)


if __name__ == "__main__":
    main()
