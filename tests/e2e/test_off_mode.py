"""Mode off (the default) must be indistinguishable from running without the shim.

The bootstrap is preloaded (its own mapping proves it), but it must load no core, register
nothing and change no result: a resnet18 forward+backward gives bit-identical outputs and
gradients to a control run without LD_PRELOAD.
"""
import pytest

from conftest import describe, parse_report


def _run_resnet(shim, run_py, tmp_path, name, preload, mode):
    out = tmp_path / f"{name}.pt"
    proc = run_py(shim.program("resnet_grads.py"), mode=mode, preload=preload, args=[out])
    assert proc.returncode == 0, describe(proc)
    return proc, parse_report(proc.stdout), out


@pytest.fixture(scope="module")
def resnet_runs(shim, run_py, tmp_path_factory):
    """The resnet18 program run three ways: no preload (control), preload + IPEX_MODE=off,
    preload with IPEX_MODE unset (the default, off)."""
    tmp = tmp_path_factory.mktemp("resnet")
    return {
        "control": _run_resnet(shim, run_py, tmp, "control", preload=False, mode=None),
        "off": _run_resnet(shim, run_py, tmp, "off", preload=True, mode="off"),
        "unset": _run_resnet(shim, run_py, tmp, "unset", preload=True, mode=None),
    }


def _load(path):
    import torch  # only here: the comparison needs it, the rest of the suite does not

    return torch.load(path)


@pytest.mark.parametrize("variant", ["off", "unset"])
def test_off_mode_preload_was_in_effect_but_core_not_loaded(resnet_runs, shim, variant):
    """With LD_PRELOAD and mode off (explicit or by default) the bootstrap is mapped, while
    libipex_shim_core.so is not (and the control has neither)."""
    _, control, _ = resnet_runs["control"]
    _, report, _ = resnet_runs[variant]
    assert str(shim.lib) in report["mapped"], report["mapped"]
    assert str(shim.core) not in report["mapped"], report["mapped"]
    assert not any("ipex_shim" in p for p in control["mapped"]), control["mapped"]
    # libtorch is mapped in both: the program really used torch.
    assert any("libtorch_cpu" in p for p in report["mapped"])


@pytest.mark.parametrize("variant", ["off", "unset"])
def test_off_mode_has_no_status_op(resnet_runs, variant):
    """In mode off nothing is registered: torch.ops.ipex_shim.status does not exist."""
    _, report, _ = resnet_runs[variant]
    assert report["status"] is None


@pytest.mark.parametrize("variant", ["off", "unset"])
def test_off_mode_prints_nothing_extra(resnet_runs, variant):
    """Mode off writes nothing: stderr is the same as the control's."""
    control_proc, _, _ = resnet_runs["control"]
    proc, _, _ = resnet_runs[variant]
    assert proc.stderr == control_proc.stderr


def test_off_mode_resnet18_output_and_grads_bit_identical(resnet_runs):
    """resnet18 forward+backward under LD_PRELOAD + IPEX_MODE=off gives bit-identical output,
    loss and every parameter gradient to the control run without the preload."""
    import torch

    control = _load(resnet_runs["control"][2])
    off = _load(resnet_runs["off"][2])
    assert torch.equal(control["output"], off["output"])
    assert torch.equal(control["loss"], off["loss"])
    assert control["grads"].keys() == off["grads"].keys()
    assert len(control["grads"]) == 62  # every resnet18 parameter has a gradient
    different = [n for n in control["grads"] if not torch.equal(control["grads"][n],
                                                               off["grads"][n])]
    assert not different, f"gradients differ for {different}"


def test_default_mode_resnet18_output_bit_identical(resnet_runs):
    """IPEX_MODE unset is off: output and gradients are bit-identical to the control too."""
    import torch

    control = _load(resnet_runs["control"][2])
    unset = _load(resnet_runs["unset"][2])
    assert torch.equal(control["output"], unset["output"])
    assert all(torch.equal(control["grads"][n], unset["grads"][n]) for n in control["grads"])
