"""IPEX_CONFIG in fp32/bf16 modes: keep_fp32 overrides, bad files, IPEX_STRICT=1.

programs/float_config.py evaluates a conv2d+linear model and a lone linear (256->64, 32 rows)
under no_grad after printing a marker right after `import torch`.
"""
import json

import pytest
import torch

from conftest import describe, parse_report, shim_lines

MARKER = "FLOAT-CONFIG-MODEL-STARTS"


@pytest.fixture(scope="module")
def reference(run_py, shim, tmp_path_factory):
    """Stock outputs and the bf16 outputs without a config."""
    workdir = tmp_path_factory.mktemp("float_config")
    out = {}
    for tag, mode, preload in (("stock", None, False), ("bf16", "bf16", True)):
        path = workdir / f"{tag}.pt"
        proc = run_py(shim.program("float_config.py"), mode=mode, preload=preload,
                      args=(path,))
        assert proc.returncode == 0, describe(proc)
        assert shim_lines(proc.stderr) == [], describe(proc)
        out[tag] = (parse_report(proc.stdout), torch.load(path))
    return out


def run_with_config(run_py, shim, tmp_path, config_path, strict=False):
    out = tmp_path / "out.pt"
    env = {"IPEX_CONFIG": str(config_path)}
    if strict:
        env["IPEX_STRICT"] = "1"
    proc = run_py(shim.program("float_config.py"), mode="bf16", env=env, args=(out,))
    return proc, out


def test_keep_fp32_linear(run_py, shim, tmp_path, reference, native_bf16):
    config = tmp_path / "keep.json"
    config.write_text(json.dumps({"keep_fp32": ["linear"]}))
    proc, out = run_with_config(run_py, shim, tmp_path, config)
    assert proc.returncode == 0, describe(proc)
    assert shim_lines(proc.stderr) == [], describe(proc)
    report = parse_report(proc.stdout)
    assert report["keep_fp32"] == ["linear"] and report["mode"] == "bf16"
    ops = report["ops"]
    assert ops["linear"] == {"onednn_fp32": 2}, ops
    assert ops["conv2d"] == {"onednn_bf16": 1}, ops
    got, stock = torch.load(out), reference["stock"][1]
    lone_err = (got["lone"] - stock["lone"]).abs().max().item()
    assert lone_err <= 1e-4 * max(1.0, stock["lone"].abs().max().item()), lone_err
    # Without the config the same linear is visibly BF16, so the check above means something.
    bf16_err = (reference["bf16"][1]["lone"] - stock["lone"]).abs().max().item()
    assert bf16_err > 10 * max(lone_err, 1e-6), (bf16_err, lone_err)
    assert reference["bf16"][0]["ops"]["linear"] == {"onednn_bf16": 2}


BAD_CONFIGS = {
    # name: (file content or None for a nonexistent path, text the warning must contain)
    "malformed_json": ('{"keep_fp32": [', "parse error"),
    "list_at_top_level": ('["linear"]', "top level: this is a list"),
    "nonexistent_path": (None, "cannot open: No such file or directory"),
    "unknown_op": ('{"keep_fp32": ["linaer"]}', "'linaer' is not an op the shim intercepts"),
    "unknown_field": ('{"keep_fp32": [], "fusoin": false}', "'fusoin': unknown field"),
}


@pytest.mark.parametrize("case", list(BAD_CONFIGS))
def test_bad_config_warns_once_and_runs_as_without(run_py, shim, tmp_path, reference, case):
    content, problem = BAD_CONFIGS[case]
    config = tmp_path / f"{case}.json"
    if content is not None:
        config.write_text(content)
    proc, out = run_with_config(run_py, shim, tmp_path, config)
    assert proc.returncode == 0, describe(proc)
    lines = shim_lines(proc.stderr)
    assert len(lines) == 1, describe(proc)
    prefix = f"ipex_shim: warning: IPEX_CONFIG={config}: "
    assert lines[0].startswith(prefix) and problem in lines[0], lines[0]
    if case not in ("unknown_op", "unknown_field"):
        assert lines[0].endswith("; running without it"), lines[0]
    assert MARKER in proc.stdout
    report = parse_report(proc.stdout)
    assert report["keep_fp32"] == []
    assert report["ops"] == reference["bf16"][0]["ops"]
    got, want = torch.load(out), reference["bf16"][1]
    assert torch.equal(got["model"], want["model"]) and torch.equal(got["lone"], want["lone"])


def test_strict_malformed_config_stops_before_the_model(run_py, shim, tmp_path):
    config = tmp_path / "bad.json"
    config.write_text('{"keep_fp32": [')
    proc, out = run_with_config(run_py, shim, tmp_path, config, strict=True)
    assert proc.returncode == 2, describe(proc)
    assert MARKER not in proc.stdout, describe(proc)
    assert not out.exists()
    lines = shim_lines(proc.stderr)
    errors = [l for l in lines if l.startswith("ipex_shim: error: ")]
    assert any(f"IPEX_CONFIG={config}: " in l and "parse error" in l for l in errors), \
        describe(proc)
    assert not any(l.startswith("ipex_shim: warning: ") for l in lines), describe(proc)


def test_strict_error_line_does_not_claim_to_run_on(run_py, shim, tmp_path):
    """Under IPEX_STRICT=1 the process stops, so no line may claim the run goes on."""
    config = tmp_path / "bad.json"
    config.write_text('{"keep_fp32": [')
    proc, _ = run_with_config(run_py, shim, tmp_path, config, strict=True)
    assert proc.returncode == 2, describe(proc)
    for line in shim_lines(proc.stderr):
        assert "running without it" not in line, line
