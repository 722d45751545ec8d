"""Inference on models shared by several Python threads running at the same moment.

usage: concurrency.py OUT.pt

Two seeded models: residual.py's network (convolutions with batch norms folded, residual
adds, a max pool, a linear) and the BERT-shaped encoder reduced to 2 layers (float_common's
small_encoder). The main thread first runs each model alone, three passes (the first learns
the fusion sites, the next run fused), and keeps its third output: the single-thread result.
Then, each scenario starting all its threads at a barrier so that their passes overlap:
  cnn_x4:     four threads, PASSES passes each of the residual network;
  encoder_x4: four threads, PASSES passes each of the encoder;
  mixed:      one thread on each model at once.
Every output of every thread is kept. Saves {"single": {model: output}, "scenarios":
{scenario: {"outputs": [[model, output], ...], "errors": [...]}}} and reports, per scenario,
the heavy ops' counts over the scenario (status() counters, zeroed before it; null without
the shim) and the number of passes each model ran.
"""
import sys
import threading

import torch

from float_common import import_bench_models, op_counts, report, reset_stats, small_encoder
from residual import build

PASSES = 5
THREADS = 4


def models():
    cnn = build()
    encoder = small_encoder(import_bench_models(), seed=3)
    image = torch.randn(2, 3, 24, 24, generator=torch.Generator().manual_seed(1))
    ids = torch.randint(0, 1000, (2, 32), generator=torch.Generator().manual_seed(2))
    return {"cnn": (cnn, image), "encoder": (encoder, ids)}


def run_at_once(nets, assignment):
    """Runs one thread per entry of `assignment` (model names), started together."""
    barrier = threading.Barrier(len(assignment))
    outputs = [[] for _ in assignment]
    errors = []

    def worker(slot, name):
        model, data = nets[name]
        try:
            barrier.wait()
            with torch.no_grad():
                for _ in range(PASSES):
                    outputs[slot].append((name, model(data).clone()))
        except Exception as error:  # reported, not swallowed: the test fails on it
            errors.append(f"{name}: {error!r}")

    threads = [threading.Thread(target=worker, args=(i, name))
               for i, name in enumerate(assignment)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return [pair for per_thread in outputs for pair in per_thread], errors


def main():
    nets = models()
    single = {}
    with torch.no_grad():
        for name, (model, data) in nets.items():
            for _ in range(3):
                single[name] = model(data).clone()
    scenarios = {"cnn_x4": ["cnn"] * THREADS, "encoder_x4": ["encoder"] * THREADS,
                 "mixed": ["cnn", "encoder"]}
    saved, facts = {}, {}
    for scenario, assignment in scenarios.items():
        reset_stats()
        outputs, errors = run_at_once(nets, assignment)
        saved[scenario] = {"outputs": outputs, "errors": errors}
        facts[scenario] = {"ops": op_counts(),
                           "passes": {name: PASSES * assignment.count(name) for name in nets}}
    torch.save({"single": single, "scenarios": saved}, sys.argv[1])
    report(facts)


if __name__ == "__main__":
    main()
