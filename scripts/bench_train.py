#!/usr/bin/python3
"""Training-step benchmark: stock fp32, stock torch.autocast bf16, and the shim's modes.

    /usr/bin/python3 scripts/bench_train.py                  # resnet18 batch 32 and bert batch 8
    /usr/bin/python3 scripts/bench_train.py --model resnet18 --batch 32 --rounds 5
    /usr/bin/python3 scripts/bench_train.py --model resnet18 --channels-last
    /usr/bin/python3 scripts/bench_train.py --model resnet18 --lib-previous OLD/libipex_shim.so \
        --variants autocast_bf16,prev_bf16,shim_bf16

One training step = forward, loss, backward, SGD step, on fixed seeded data. Each variant
runs in its own process (the shim rows with LD_PRELOAD=<lib> IPEX_MODE=...), all built from
the same seed; the parent interleaves rounds across the processes (round r: every worker in
turn, order rotated by r, times --iters steps while the others wait idle), and reports the
median step time over all timed steps and its ratio to stock fp32 and to autocast.
The script being measured is the same unmodified training loop in every shim row; the
autocast row is that loop with `with torch.autocast("cpu", dtype=torch.bfloat16):` around
the forward and loss, the edit a user would make by hand.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
VARIANTS = ("stock_fp32", "autocast_bf16", "shim_fp32", "shim_bf16")
# The same modes under another build of the shim (--lib-previous): a change's before and after
# in one interleaved run.
PREVIOUS_VARIANTS = ("prev_fp32", "prev_bf16")


def build(name, batch, channels_last=False):
    import torch
    sys.path.insert(0, HERE)
    import bench_models
    torch.manual_seed(0)
    model = bench_models.build_skeleton(name)
    if bench_models.is_transformer(name):
        model.init_weights()
        inputs = bench_models.make_input(name, batch, 1)
        target = torch.randn(batch, inputs.shape[1], bench_models.BERT_HIDDEN)
        loss_fn = lambda out: torch.nn.functional.mse_loss(out.float(), target)
    else:
        inputs = bench_models.make_input(name, batch, 1, image_size=224)
        labels = torch.randint(0, 1000, (batch,), generator=torch.Generator().manual_seed(2))
        loss_fn = lambda out: torch.nn.functional.cross_entropy(out.float(), labels)
    if channels_last:  # the CNN and its images in channels-last memory format, every row
        model = model.to(memory_format=torch.channels_last)
        inputs = inputs.contiguous(memory_format=torch.channels_last)
    model.train()
    return model, inputs, loss_fn


def worker(args):
    import torch
    torch.set_num_threads(args.threads)
    model, inputs, loss_fn = build(args.model, args.batch, args.channels_last)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)
    autocast = args.variant == "autocast_bf16"

    def step():
        optimizer.zero_grad(set_to_none=True)
        if autocast:
            with torch.autocast("cpu", dtype=torch.bfloat16):
                loss = loss_fn(model(inputs))
        else:
            loss = loss_fn(model(inputs))
        loss.backward()
        optimizer.step()
        return loss.item()

    for _ in range(args.warmup):
        step()
    out = sys.stdout
    out.write("ready\n")
    out.flush()
    for line in sys.stdin:
        command = json.loads(line)
        if command["op"] == "quit":
            break
        times = []
        for _ in range(command["iters"]):
            start = time.perf_counter()
            loss = step()
            times.append(time.perf_counter() - start)
        status = None
        if hasattr(torch.ops.ipex_shim, "status"):
            status = json.loads(torch.ops.ipex_shim.status())["ops"]
        out.write(json.dumps({"times": times, "loss": loss, "ops": status}) + "\n")
        out.flush()


def start(variant, args):
    env = {k: v for k, v in os.environ.items() if not k.startswith("IPEX_") and k != "LD_PRELOAD"}
    env["OMP_NUM_THREADS"] = str(args.threads)
    for prefix, lib in (("shim_", args.lib), ("prev_", args.lib_previous)):
        if variant.startswith(prefix):
            env["LD_PRELOAD"] = lib
            env["IPEX_MODE"] = variant[len(prefix):]
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", "--variant", variant,
           "--model", args.model, "--batch", str(args.batch), "--threads", str(args.threads),
           "--warmup", str(args.warmup)] + (["--channels-last"] if args.channels_last else [])
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, text=True)
    if proc.stdout.readline().strip() != "ready":
        raise RuntimeError(f"{variant}: worker did not start")
    return proc


def run_model(args):
    asked = args.variants.split(",")
    unknown = [v for v in asked if v not in VARIANTS + PREVIOUS_VARIANTS]
    if unknown:
        raise SystemExit(f"unknown variants {unknown}; known: {VARIANTS + PREVIOUS_VARIANTS}")
    variants = [v for v in VARIANTS + PREVIOUS_VARIANTS if v in asked]
    for prefix, lib in (("shim_", args.lib), ("prev_", args.lib_previous)):
        if not lib or not os.path.exists(lib):
            if any(v.startswith(prefix) for v in variants):
                print(f"note: {lib or 'no --lib-previous given'}: not found; {prefix}* rows skipped")
            variants = [v for v in variants if not v.startswith(prefix)]
    workers = {v: start(v, args) for v in variants}
    times = {v: [] for v in variants}
    last = {}
    for r in range(args.rounds):
        order = variants[r % len(variants):] + variants[:r % len(variants)]
        for v in order:
            workers[v].stdin.write(json.dumps({"op": "time", "iters": args.iters}) + "\n")
            workers[v].stdin.flush()
            reply = json.loads(workers[v].stdout.readline())
            times[v].extend(reply["times"])
            last[v] = reply
    for proc in workers.values():
        proc.stdin.write(json.dumps({"op": "quit"}) + "\n")
        proc.stdin.flush()
        proc.wait()
    medians = {v: statistics.median(times[v]) for v in variants}
    layout = ", channels-last" if args.channels_last else ""
    print(f"\n{args.model} training step, batch {args.batch}{layout}, {args.threads} threads, "
          f"{args.rounds} rounds x {args.iters} steps, interleaved")
    print(f"{'variant':<16}{'median ms':>10}{'vs fp32':>9}{'vs autocast':>12}{'steps':>7}{'loss':>10}")
    for v in variants:
        vs_fp32 = medians["stock_fp32"] / medians[v] if "stock_fp32" in medians else float("nan")
        vs_ac = medians["autocast_bf16"] / medians[v] if "autocast_bf16" in medians else float("nan")
        print(f"{v:<16}{medians[v] * 1000:>10.1f}{vs_fp32:>8.2f}x{vs_ac:>11.2f}x"
              f"{len(times[v]):>7}{last[v]['loss']:>10.4f}")
    return {"model": args.model, "batch": args.batch, "channels_last": args.channels_last,
            "threads": args.threads,
            "times": times, "median_s": medians,
            "ops": {v: last[v]["ops"] for v in variants}}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help="resnet18 (default: resnet18 and bert)")
    parser.add_argument("--batch", type=int, default=None, help="default 32 for CNNs, 8 for bert")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--iters", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--channels-last", action="store_true",
                        help="CNNs: model and images in channels-last format (every row)")
    parser.add_argument("--lib", default=os.path.join(REPO, "build", "libipex_shim.so"))
    parser.add_argument("--lib-previous", default=None, metavar="LIB",
                        help="another build of the shim, for the prev_* rows")
    parser.add_argument("--json", default=os.path.join(REPO, "bench-out", "bench_train.json"))
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--variant", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args)
    results = []
    for model in ([args.model] if args.model else ["resnet18", "bert"]):
        run_args = argparse.Namespace(**vars(args))
        run_args.model = model
        run_args.batch = args.batch or (8 if model == "bert" else 32)
        results.append(run_model(run_args))
    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    with open(args.json, "w") as f:
        json.dump(results, f, indent=1)
    print(f"\nwrote {args.json}")


if __name__ == "__main__":
    sys.exit(main())
