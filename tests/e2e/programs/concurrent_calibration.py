"""Calibration fed by a DataLoader with worker processes and run by several threads at once.

usage: concurrent_calibration.py single|concurrent

The data: BATCHES seeded batches of (image, token ids), made in the Dataset without
intercepted ops. The models: residual.py's network and the reduced encoder (concurrency.py).
  single:     the main thread runs both models on every batch, in order, no workers;
  concurrent: a DataLoader (num_workers=2) yields the same batches to the main thread, which
              hands them to THREADS threads through a queue; each thread runs both models on
              each batch it takes, while the others run theirs.
Either way every batch passes through both models once, so a calibration of the two runs
has seen the same values. Reports the pids that made the batches, which thread ran each
batch and errors.
"""
import os
import queue
import sys
import threading

import torch
from torch.utils.data import DataLoader, Dataset

from concurrency import models
from e2e_util import report

BATCHES = 12
BATCH = 2
THREADS = 3


class Samples(Dataset):
    def __len__(self):
        return BATCHES * BATCH

    def __getitem__(self, index):
        g = torch.Generator().manual_seed(500 + index)
        image = torch.randn(3, 24, 24, generator=g) * (1.0 + index / 8.0)
        ids = torch.randint(0, 1000, (32,), generator=g)
        return image, ids, os.getpid()


def run_batch(nets, image, ids):
    with torch.no_grad():
        nets["cnn"][0](image)
        nets["encoder"][0](ids)


def main():
    how = sys.argv[1]
    nets = models()
    facts = {"pid": os.getpid(), "errors": [], "ran_by": {}}
    if how == "single":
        loader = DataLoader(Samples(), batch_size=BATCH, num_workers=0, shuffle=False)
        for number, (image, ids, pids) in enumerate(loader):
            run_batch(nets, image, ids)
            facts["ran_by"][number] = threading.get_ident()
        facts["made_by"] = sorted({int(p) for p in pids})
        report(facts)
        return
    work = queue.Queue()
    lock = threading.Lock()

    def worker():
        while True:
            item = work.get()
            if item is None:
                return
            number, image, ids = item
            try:
                run_batch(nets, image, ids)
                with lock:
                    facts["ran_by"][number] = threading.get_ident()
            except Exception as error:  # reported, not swallowed: the test fails on it
                facts["errors"].append(repr(error))

    threads = [threading.Thread(target=worker) for _ in range(THREADS)]
    for t in threads:
        t.start()
    made_by = set()
    loader = DataLoader(Samples(), batch_size=BATCH, num_workers=2, shuffle=False)
    for number, (image, ids, pids) in enumerate(loader):
        made_by.update(int(p) for p in pids)
        work.put((number, image, ids))
    for _ in threads:
        work.put(None)
    for t in threads:
        t.join()
    facts["made_by"] = sorted(made_by)
    report(facts)


if __name__ == "__main__":
    main()
