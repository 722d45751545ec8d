"""Runs one of int8cfg_common's models under no_grad and reports what the shim saw.

usage: int8cfg_model.py OUT.pt [--arch a|b|conv_relu|full] [--seed N] [--batch N]
           [--data-seed N] [--scale X] [--clamp X] [--passes N] [--noise] [--progress]
           [--write-config]

Prints MARKER right after `import torch`. Runs the model --passes times on the same input
(with --noise, unrelated convs, linears and matmuls with fresh random weights before and
between the passes; with --progress, a line "PASS <i>" after each pass, flushed), saves the
last output (and, for --arch full, the tensors whose ranges calibration observes) to OUT.pt,
and prints a report line: the shim's compact status (null without the shim), the model's
conv/linear signatures, the min/max of the tensors saved, torch's thread count, and with --write-config the message of
torch.ops.ipex_shim.write_config() called after the report's status was taken.
"""
import argparse

import torch

from int8cfg_common import MARKER

print(MARKER, flush=True)

from int8cfg_common import (  # noqa: E402
    build_model,
    compact_status,
    make_input,
    report,
    unrelated_work,
    weighted_signatures,
    write_config_now,
)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("--arch", default="a")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--data-seed", type=int, default=100)
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--clamp", type=float, default=None)
    parser.add_argument("--passes", type=int, default=1)
    parser.add_argument("--noise", action="store_true")
    parser.add_argument("--progress", action="store_true")
    parser.add_argument("--write-config", action="store_true")
    args = parser.parse_args()

    model = build_model(args.arch, args.seed)
    x = make_input(args.batch, args.data_seed, args.scale, args.clamp)
    noise = torch.Generator().manual_seed(4242)
    seen = {}
    with torch.no_grad():
        for index in range(args.passes):
            if args.noise:
                unrelated_work(noise)
            if args.arch == "full":
                out = model(x, seen)
            else:
                out = model(x)
            if args.progress:
                print(f"PASS {index}", flush=True)
        if args.noise:
            unrelated_work(noise)
    torch.save({"out": out, "seen": seen}, args.out)
    data = {
        "status": compact_status(),
        "signatures": weighted_signatures(model),
        "ranges": {name: [float(t.min()), float(t.max())] for name, t in seen.items()},
        "threads": torch.get_num_threads(),
    }
    if args.write_config:
        data["write_config"] = write_config_now()
    report(data)
    if args.progress:
        print("END", flush=True)


if __name__ == "__main__":
    main()
