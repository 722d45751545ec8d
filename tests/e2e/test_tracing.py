"""torch.jit.trace of an unmodified model must still give a correct TorchScript module.

A program that traces its model under the shim gets a graph of whatever ops the tracer saw.
The shim's key sits above the Tracer key: if the shim computed an op with its own kernel
while tracing, the tracer would see only the allocation of the output (aten::empty) and the
traced module would return uninitialised memory. So while tracing the shim runs stock ops.
The traced module, run on a new input, must match eager mode on that input. Running it is
not tracing: its convolutions (aten::_convolution in the graph) get the shim's kernels and
fusion, as in eager mode.
"""
import pytest

from conftest import skip_without_kernels, describe, parse_report

def _run(run_py, shim, mode, preload=True):
    proc = run_py(shim.program("trace_check.py"), mode=mode, preload=preload)
    assert proc.returncode == 0, describe(proc)
    return parse_report(proc.stdout)


def test_traced_module_matches_eager_without_shim(run_py, shim):
    """Control: without the preload the traced module equals eager mode (the check works)."""
    report = _run(run_py, shim, None, preload=False)
    assert report["mode"] is None
    assert report["max_abs_diff"] <= 1e-5 * max(1.0, report["eager_max_abs"]), report
    assert "aten::empty" not in report["graph_ops"], report["graph_ops"]


@pytest.mark.parametrize("mode,tolerance", [("fp32", 1e-4), ("bf16", 2e-2)])
def test_traced_module_matches_eager_under_shim(run_py, shim, mode, tolerance):
    """Under IPEX_MODE=fp32/bf16 the module traced with torch.jit.trace gives the same result
    as eager mode in that mode, on an input not seen before, and its graph holds the real ops
    (the trace itself ran stock, counted as "jit tracing")."""
    report = _run(run_py, shim, mode)
    assert report["mode"] == mode
    assert "aten::empty" not in report["graph_ops"], report["graph_ops"]
    scale = max(1.0, report["eager_max_abs"])
    assert report["max_abs_diff"] <= tolerance * scale, report


@pytest.mark.parametrize("mode,tolerance", [("fp32", 1e-4), ("bf16", 2e-2)])
def test_traced_modules_run_on_the_shims_kernels_with_fusion(run_py, shim, mode, tolerance, cpu_plan):
    skip_without_kernels(cpu_plan, mode)
    """The traced modules' convolutions run on the shim's kernel (counted under conv2d; the
    traces themselves ran stock), and a traced residual
    block is fused (conv -> batch_norm -> relu_, `out += x`) without mispredictions, with
    eager mode's values."""
    report = _run(run_py, shim, mode)
    conv = report["ops"]["conv2d"]
    # Traced: the model's 1 convolution and the block's 2, stock. On the shim's kernel: the
    # traced model once and eager once (2), the traced block 3 times and eager once (8).
    assert conv.get(f"onednn_{mode}") == 10 and conv.get("stock") == 3, conv
    assert conv["fallback_reasons"] == {"jit tracing": 3}, conv
    fusion = report["block_fusion"]
    assert fusion["fused_convolutions"] >= 2 and fusion["mispredictions"] == 0, fusion
    scale = max(1.0, report["block_eager_max_abs"])
    assert report["block_max_abs_diff"] <= tolerance * scale, report
