"""Transposed convolutions (nn.ConvTranspose1d/2d/3d) under fp32 and bf16 modes.

Without a gradient they run on the shim's oneDNN deconvolution; with a gradient they run
stock fp32 in both modes, because stock torch 1.13's BF16 transposed convolution on CPU
rejects valid shapes (so a BF16 autograd path would break training that works stock).
"""
import pytest

from conftest import skip_without_kernels, describe, parse_report

PROGRAM = r'''
import json, sys, torch
torch.manual_seed(0)
layers = {
    "conv_transpose1d": (torch.nn.ConvTranspose1d(6, 4, 3, stride=2, padding=1, output_padding=1), (2, 6, 15)),
    "conv_transpose2d.input": (torch.nn.ConvTranspose2d(8, 4, 4, stride=2, padding=1), (2, 8, 9, 9)),
    "conv_transpose3d.input": (torch.nn.ConvTranspose3d(3, 2, 3, stride=(2, 1, 2), padding=1, groups=1), (1, 3, 4, 5, 3)),
}
report = {}
for op, (layer, shape) in layers.items():
    x = torch.randn(shape)
    with torch.no_grad():
        y = layer(x)
    ref = torch.ops.aten.convolution(x.double(), layer.weight.detach().double(), layer.bias.detach().double(),
                                     layer.stride, layer.padding, layer.dilation, True,
                                     layer.output_padding, layer.groups)
    y_grad = layer(x)            # parameters require grad: the autograd path
    y_grad.square().sum().backward()
    report[op] = {
        "shape_ok": list(y.shape) == list(ref.shape),
        "dtype": str(y.dtype),
        "max_rel": ((y.double() - ref).abs().max() / ref.abs().max()).item(),
        "grad_ok": bool(torch.isfinite(layer.weight.grad).all()),
        "grad_out_rel": ((y_grad.detach().double() - ref).abs().max() / ref.abs().max()).item(),
    }
if hasattr(torch.ops.ipex_shim, "status"):
    ops = json.loads(torch.ops.ipex_shim.status())["ops"]
    for op in layers:
        report[op]["paths"] = ops[op]
print("E2E-REPORT:" + json.dumps(report))
'''


@pytest.mark.parametrize("mode,tolerance", [("fp32", 1e-5), ("bf16", 1.5e-2)])
def test_transposed_convolutions_run_on_the_kernel_and_train_stock(run_py, mode, tolerance, cpu_plan):
    skip_without_kernels(cpu_plan, mode)
    """Each transposed convolution: no-grad output fp32, right shape, within the mode's
    tolerance of a double-precision reference, counted on the mode's oneDNN path; the call
    with a gradient runs stock (fp32: exact to the reference's precision), backward works."""
    proc = run_py(PROGRAM, mode=mode)
    assert proc.returncode == 0, describe(proc)
    report = parse_report(proc.stdout)
    for op, result in report.items():
        assert result["shape_ok"] and result["dtype"] == "torch.float32", (op, result)
        assert result["max_rel"] <= tolerance, (op, result)
        assert result["grad_ok"], (op, result)
        assert result["grad_out_rel"] <= 1e-5, (op, result)
        assert result["paths"].get(f"onednn_{mode}") == 1, (op, result)
        # Stock: the call with a gradient, and the double-precision reference (aten::convolution
        # reaches the shim through aten::_convolution, counted under the public op).
        assert result["paths"].get("stock") == 2, (op, result)
        assert result["paths"]["fallback_reasons"] == {
            "gradient needed": 1, "input not a plain fp32 CPU tensor": 1}, (op, result)
