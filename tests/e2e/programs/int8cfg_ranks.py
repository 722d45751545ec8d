"""One rank of a torchrun calibration: each rank runs model "a" (int8cfg_common.py) on its own
data, rank r on inputs scaled by 10**r.

usage: torchrun ... int8cfg_ranks.py REPORT_DIR

Prints MARKER right after `import torch`, and END last. Writes REPORT_DIR/rank<r>.json with the rank, the
world size, the smallest and largest input value it ran, the passes and the model's
conv/linear signatures.
"""
import os
import sys

import torch

from int8cfg_common import MARKER

print(MARKER, flush=True)

from int8cfg_common import build_model, dump, make_input, weighted_signatures  # noqa: E402

PASSES = 2


def main():
    rank = int(os.environ["RANK"])
    model = build_model("a", 0)
    x = make_input(4, 100 + rank, scale=10.0 ** rank)
    with torch.no_grad():
        for _ in range(PASSES):
            model(x)
    dump(os.path.join(sys.argv[1], f"rank{rank}.json"), {
        "rank": rank,
        "world_size": int(os.environ["WORLD_SIZE"]),
        "input_min": float(x.min()),
        "input_max": float(x.max()),
        "passes": PASSES,
        "signatures": weighted_signatures(model),
    })
    print("END", flush=True)


if __name__ == "__main__":
    main()
