"""A program that uses torch.autocast itself: inside its region the shim steps aside, so the
program gets what autocast gives (BF16 results, autocast's own choices), bit for bit as
without the preload; outside the region the same model runs on the shim's kernels again.
"""
import json

import pytest
import torch

from conftest import skip_without_kernels, describe

PROGRAM = r"""
import json, sys
import torch, torchvision
torch.manual_seed(0)
model = torchvision.models.resnet18().eval()
x = torch.randn(2, 3, 64, 64)
with torch.no_grad():
    with torch.autocast("cpu", dtype=torch.bfloat16):
        inside = [model(x) for _ in range(3)][-1]
    try:
        before = json.loads(torch.ops.ipex_shim.status())["ops"]["conv2d"]
    except (AttributeError, RuntimeError):
        before = {}
    outside = [model(x) for _ in range(2)][-1]
torch.save({"inside": inside, "outside": outside}, sys.argv[1])
try:
    after = json.loads(torch.ops.ipex_shim.status())["ops"]["conv2d"]
except (AttributeError, RuntimeError):
    after = {}
print(json.dumps({"before": before, "after": after}))
"""
ENV = {"OMP_NUM_THREADS": "2"}  # the same thread count with and without the shim


@pytest.fixture(scope="module")
def runs(run_py, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("autocast")
    out = {}
    for tag, mode in [("stock", None), ("fp32", "fp32"), ("bf16", "bf16")]:
        path = tmp / f"{tag}.pt"
        proc = run_py(PROGRAM, mode=mode, env=ENV, preload=mode is not None, args=(str(path),))
        assert proc.returncode == 0, describe(proc)
        out[tag] = dict(torch.load(path), **json.loads(proc.stdout.strip().splitlines()[-1]))
    return out


@pytest.mark.parametrize("mode", ["fp32", "bf16"])
def test_inside_autocast_the_program_gets_autocasts_results(runs, mode):
    stock, shim = runs["stock"]["inside"], runs[mode]["inside"]
    assert stock.dtype == torch.bfloat16 and shim.dtype == torch.bfloat16
    assert torch.equal(shim, stock)
    before = runs[mode]["before"]
    assert before.get("stock") == 3 * 20, before  # resnet18: 20 conv2d calls a pass
    assert before["fallback_reasons"] == {"torch.autocast region": 60}, before


@pytest.mark.parametrize("mode", ["fp32", "bf16"])
def test_outside_the_region_the_shim_runs_again(runs, mode, cpu_plan):
    skip_without_kernels(cpu_plan, mode)
    after = runs[mode]["after"]
    assert after.get(f"onednn_{mode}") == 2 * 20, after
    shim, stock = runs[mode]["outside"], runs["stock"]["outside"]
    assert shim.dtype == torch.float32
    cosine = torch.nn.functional.cosine_similarity(shim.flatten(), stock.flatten(), dim=0)
    assert cosine >= (0.99999 if mode == "fp32" else 0.999), cosine
