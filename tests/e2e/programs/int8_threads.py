"""The residual network of residual.py run from two Python threads at once.

Usage: int8_threads.py OUT.pt
The main thread runs three passes first (the first learns the graph, the next are fused);
then two threads run five passes each at the same time, on the same network and input.
Saves {"main": output of the main thread's third pass, "threads": [each thread's last
output], "errors": [...]}.
"""
import os
import sys
import threading

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from residual import build  # noqa: E402


def main():
    net = build()
    x = torch.randn(4, 3, 24, 24, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        for _ in range(3):
            main_out = net(x).clone()
    results, errors = [None, None], []

    def worker(slot):
        try:
            with torch.no_grad():
                for _ in range(5):
                    results[slot] = net(x).clone()
        except Exception as error:  # reported, not swallowed: the test fails on it
            errors.append(repr(error))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    torch.save({"main": main_out, "threads": results, "errors": errors}, sys.argv[1])


if __name__ == "__main__":
    main()
