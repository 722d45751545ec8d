"""Helpers shared by the float_*.py helper programs (fp32/bf16 mode end-to-end tests).

Importable because a script's directory is first on sys.path. Importing it imports torch.
"""
import json
import os
import sys
from pathlib import Path

import torch

from e2e_util import report, shim_status  # noqa: F401  (re-exported for the programs)

REPO_ROOT = Path(__file__).resolve().parents[3]
HEAVY_OPS = ("conv1d", "conv2d", "conv3d", "linear", "matmul", "mm", "bmm", "addmm", "baddbmm")


def reset_stats():
    """Zero the shim's per-op counters (a no-op without the shim)."""
    try:
        torch.ops.ipex_shim.reset_stats()
    except (AttributeError, RuntimeError):
        pass


def op_counts(status=None):
    """{op: {path: count, ..., 'fallback_reasons': {...}}} for the heavy ops, or None
    without the shim. Ops with no calls are left out."""
    status = shim_status() if status is None else status
    if status is None:
        return None
    return {op: entry for op, entry in status["ops"].items() if op in HEAVY_OPS and entry}


def import_bench_models():
    """scripts/bench_models.py (the BERT-shaped encoder and seeded torchvision models)."""
    scripts = str(REPO_ROOT / "scripts")
    if scripts not in sys.path:
        sys.path.insert(0, scripts)
    import bench_models  # noqa: E402

    return bench_models


def small_encoder(bench_models, seed):
    """The BERT-shaped encoder reduced to 2 layers, hidden 256, 4 heads, ff 1024."""
    torch.manual_seed(seed)
    model = bench_models.BertEncoder(vocab=1000, max_pos=64, hidden=256, heads=4, layers=2,
                                     ffn=1024)
    model.init_weights()
    return model.eval()


def memory_format(tensor):
    """'channels_last', 'channels_last_3d', 'contiguous' or 'other' (in that order)."""
    if tensor.dim() == 4 and tensor.is_contiguous(memory_format=torch.channels_last) \
            and not tensor.is_contiguous():
        return "channels_last"
    if tensor.dim() == 5 and tensor.is_contiguous(memory_format=torch.channels_last_3d) \
            and not tensor.is_contiguous():
        return "channels_last_3d"
    if tensor.is_contiguous():
        return "contiguous"
    return "other"


def params_checksum(model):
    """An exact fingerprint of a model's parameters: sum and a position-weighted sum in
    float64, as strings (exact equality is meaningful between processes)."""
    total = 0.0
    weighted = 0.0
    for _, p in sorted(model.named_parameters()):
        flat = p.detach().double().flatten()
        total += float(flat.sum())
        weighted += float((flat * torch.arange(1, flat.numel() + 1, dtype=torch.float64)).sum())
    return f"{total!r}/{weighted!r}"


def write_json(path, data):
    with open(path, "w") as out:
        json.dump(data, out, sort_keys=True)


def env_summary():
    return {"pid": os.getpid(), "threads": torch.get_num_threads()}
