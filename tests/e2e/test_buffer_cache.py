"""The kernels' buffer cache (kernels/buffer_pool.h, IPEX_BUFFER_CACHE_MB): a second pass of
a model reuses the first pass's freed result buffers instead of mapping fresh memory; the
cache never keeps more than its limit; 0 keeps nothing; results are the same either way.
"""
import json

import pytest
import torch

from conftest import describe

PROGRAM = r"""
import json, sys
import torch, torchvision
torch.manual_seed(0)
model = torchvision.models.resnet18().eval()
x = torch.randn(8, 3, 160, 160)
with torch.no_grad():
    # The first pass learns the graph, the second runs it fused; the third may still need a
    # buffer the second kept alive (a fused result is released lazily).
    for _ in range(3):
        model(x)
    first = json.loads(torch.ops.ipex_shim.status())["buffer_cache"]
    for _ in range(2):
        y = model(x)
    second = json.loads(torch.ops.ipex_shim.status())["buffer_cache"]
torch.save(y, sys.argv[1])
print(json.dumps({"first": first, "second": second}))
"""


@pytest.fixture(scope="module")
def runs(run_py, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("buffer_cache")
    out = {}
    for tag, env in [("default", {}), ("none", {"IPEX_BUFFER_CACHE_MB": "0"}),
                     ("small", {"IPEX_BUFFER_CACHE_MB": "3"})]:
        path = tmp / f"{tag}.pt"
        proc = run_py(PROGRAM, mode="fp32", env=env, args=(str(path),))
        assert proc.returncode == 0, describe(proc)
        report = json.loads(proc.stdout.strip().splitlines()[-1])
        report["output"] = torch.load(path)
        out[tag] = report
    return out


def test_later_passes_reuse_the_first_passs_buffers(runs):
    first, second = runs["default"]["first"], runs["default"]["second"]
    assert first["limit_bytes"] == 1024 << 20
    assert first["allocated"] > 0 and first["cached_bytes"] > 0, first
    # Two more passes of the same shapes: served by kept buffers, nothing new. (Packed
    # weights are pool buffers too, alive for the whole run: in_use_bytes stays.)
    # (resnet18 at batch 8, 160x160 has a dozen results of 1 MiB or more a pass.)
    assert second["reused"] - first["reused"] >= 2 * 10, (first, second)
    assert second["allocated"] == first["allocated"], (first, second)
    assert second["in_use_bytes"] == first["in_use_bytes"], (first, second)


def test_the_limit_bounds_what_is_kept(runs):
    none = runs["none"]["second"]
    assert none["limit_bytes"] == 0 and none["cached_bytes"] == 0, none
    assert none["reused"] == 0, none
    small = runs["small"]["second"]
    assert small["limit_bytes"] == 3 << 20 and small["cached_bytes"] <= 3 << 20, small


def test_results_do_not_depend_on_the_cache(runs):
    assert torch.equal(runs["default"]["output"], runs["none"]["output"])
    assert torch.equal(runs["default"]["output"], runs["small"]["output"])
