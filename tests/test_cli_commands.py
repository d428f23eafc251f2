"""`fxlazy report` and `fxlazy export` on a model file written into tmp_path, and their errors."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from assertions import parse_report_table
from cli_runs import Finished, run_fxlazy_concurrently
from fxlazy import cli

HAS_ONNX_EXTRA = all(importlib.util.find_spec(name) for name in ("onnx", "onnxruntime", "onnxscript"))

# Timeout in seconds for one run. Importing torch alone takes several seconds on a slow machine.
RUN_TIMEOUT = 300

MODEL_SOURCE = textwrap.dedent(
    """
    import torch
    from torch import nn


    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.LazyConv2d(8, 3, padding=1)
            self.norm = nn.LazyBatchNorm2d()
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.head = nn.LazyLinear(4)

        def forward(self, x):
            x = torch.relu(self.norm(self.conv(x)))
            return self.head(torch.flatten(self.pool(x), 1))


    class Noisy(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.LazyLinear(4)

        def forward(self, x):
            y = self.fc(x)
            return y + torch.randn_like(y)


    def build():
        return Net()


    def build_fails():
        raise RuntimeError("no weights configured")


    def not_a_model():
        return 42
    """
)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    """A folder with the model file and a checkpoint saved from an eager run of Net."""
    folder = tmp_path_factory.mktemp("cli-commands")
    (folder / "models.py").write_text(MODEL_SOURCE)

    spec = importlib.util.spec_from_file_location("cli_test_models", folder / "models.py")
    models = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(models)
    torch.manual_seed(4)
    trained = models.Net().eval()
    trained(torch.randn(2, 3, 16, 16))
    torch.save(trained.state_dict(), folder / "net.pt")
    torch.save(models.Net().state_dict(), folder / "never-run.pt")
    return folder


def _runs(workspace: Path) -> dict[str, list[str]]:
    return {
        "report": ["report", "models.py:build", "--input", "2,3,16,16"],
        "onnx": ["export", "models.py:Net", "--input", "1,3,16,16", "--to", "onnx", "-o", "net.onnx", "--dynamic", "batch"],
        "torchscript": ["export", "models.py:Net", "--input", "2,3,16,16", "--to", "torchscript", "-o", "net.ts", "--weights", "net.pt"],
        "program": ["export", "models.py:Net", "--input", "2,3,12,12", "--to", "exported-program", "-o", "net.pt2", "--dynamic", "batch", "--dynamic", "spatial"],
    }


@pytest.fixture(scope="module")
def runs(workspace) -> dict[str, Finished]:
    # TORCH_LOGS in the caller's environment would add torch's logging to stderr.
    environment = {key: value for key, value in os.environ.items() if not key.startswith("TORCH_LOGS")}
    return run_fxlazy_concurrently(_runs(workspace), workspace, RUN_TIMEOUT, env=environment)


def test_report_prints_table(runs):
    run = runs["report"]
    assert run.returncode == 0, run.stderr

    table = parse_report_table(run.stdout)
    rows = {row["layer"]: row for row in table.rows}
    assert list(rows) == ["conv", "norm", "head"]
    assert rows["conv"]["inferred"] == "in_channels=3"
    assert rows["norm"]["inferred"] == "num_features=8"
    assert rows["head"]["inferred"] == "in_features=8"
    assert rows["head"]["output shape"] == "(2, 4)"
    assert table.total_parameters == 3 * 8 * 9 + 8 + 2 * 8 + 8 * 4 + 4


def test_export_onnx_dynamic_batch(runs, workspace):
    run = runs["onnx"]
    if not HAS_ONNX_EXTRA:
        assert run.returncode == 1
        assert 'pip install "fxlazy[onnx]"' in run.stderr
        return

    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert lines[0] == "Net materialized for input shape(s) (1, 3, 16, 16)"
    assert lines[1] == "Exported onnx to net.onnx with torch.onnx dynamo."
    assert lines[2] == "Dynamic: x dims 0."
    assert lines[3] == "Parity check passed on 2 input set(s) within atol=1e-05, rtol=0.0001:"
    assert lines[4] == "example (1, 3, 16, 16):"
    assert lines[6] == "example at batch 3 (3, 3, 16, 16):"
    assert lines[7].startswith("  output (3, 4): max abs diff ")
    assert (workspace / "net.onnx").is_file()
    assert run.stderr == ""


def test_export_torchscript_with_weights(runs, workspace):
    run = runs["torchscript"]
    assert run.returncode == 0, run.stderr
    assert "Exported torchscript to net.ts with torch.jit.script." in run.stdout

    scripted = torch.jit.load(str(workspace / "net.ts"))
    trained = torch.load(workspace / "net.pt", weights_only=True)
    assert torch.equal(scripted.state_dict()["head.weight"], trained["head.weight"])


def test_export_program_dynamic_spatial(runs, workspace):
    run = runs["program"]
    assert run.returncode == 0, run.stderr
    assert "Dynamic: x dims 0, 2, 3." in run.stdout
    program = torch.export.load(str(workspace / "net.pt2"))
    assert program.module()(torch.randn(5, 3, 20, 9)).shape == (5, 4)


def test_console_script_installed():
    script = Path(sys.executable).with_name("fxlazy")
    if not script.exists():
        pytest.skip("the fxlazy console script is not installed next to this Python")
    finished = subprocess.run([str(script), "--version"], capture_output=True, text=True, timeout=RUN_TIMEOUT)
    assert finished.returncode == 0, finished.stderr
    assert finished.stdout.strip() == "fxlazy 0.1.0"


# Errors, run in this process: each stops before any export work.


@pytest.fixture
def in_workspace(workspace, monkeypatch):
    monkeypatch.chdir(workspace)
    # The CLI puts a model file's folder on sys.path, as `python file.py` does.
    monkeypatch.setattr(sys, "path", list(sys.path))
    return workspace


def _error_line(capsys) -> str:
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("fxlazy: error: ")
    return lines[0].removeprefix("fxlazy: error: ")


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("absent.py:build", "Model file absent.py not found. Check the path before the ':'."),
        ("no_such_package.models:build", "Module 'no_such_package.models' not found."),
        ("models.py:missing", "models.py has no attribute 'missing'. Classes and functions defined there: Net, Noisy, build, build_fails, not_a_model."),
        ("models.py:build_fails", "Calling models.py:build_fails() failed: RuntimeError: no weights configured."),
        ("models.py:not_a_model", "models.py:not_a_model() returned a value of type int, not a torch.nn.Module. Return the model."),
        ("models.py", "Invalid target 'models.py': write package.module:factory or path/to/file.py:factory"),
    ],
    ids=["missing-file", "missing-module", "missing-factory", "factory-fails", "not-a-model", "no-factory"],
)
def test_target_errors(target, message, in_workspace, capsys):
    status = cli.main(["report", target, "--input", "2,3,16,16"])

    assert status == 1
    assert message in _error_line(capsys)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["report", "models.py:Net", "--input", "2,3,a"], "argument -i/--input: invalid shape '2,3,a'"),
        (["report", "models.py:Net", "--input", "2,3:float99"], "unknown dtype 'float99'"),
        (["report", "models.py:Net"], "give --input for each tensor argument of forward"),
        (["report", "models.py:Net", "-i", "2,3,8,8", "--format", "yaml"], "unknown format 'yaml'"),
        (["export", "models.py:Net", "-i", "2,3,8,8", "--to", "torchscript", "-o", "x.pt", "--dynamic", "batch"], "--dynamic applies to onnx and exported-program"),
        (["export", "models.py:Net", "-i", "2,3,8,8", "--to", "onnx", "-o", "x.onnx", "--method", "trace"], "--method for onnx must be one of auto, dynamo, torchscript, got 'trace'"),
        (["export", "models.py:Net", "-i", "2,3,8,8", "--to", "onnx", "-o", "x.onnx", "--atol", "-1"], "argument --atol: must be a non-negative number, got -1"),
        (["export", "models.py:Net", "-i", "2,3,8,8", "-o", "x.onnx"], "the following arguments are required: -t/--to"),
        (["--example", "dcgan", "report", "models.py:Net", "-i", "2,3,8,8"], "--example apply only without a command"),
    ],
    ids=["bad-shape", "bad-dtype", "no-input", "bad-format", "dynamic-torchscript", "bad-method", "negative-atol", "no-format", "demo-option"],
)
def test_usage_errors_exit_two(arguments, message, in_workspace, capsys):
    with pytest.raises(SystemExit, match=r"^2$"):
        cli.main(arguments)

    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("usage: fxlazy")
    assert message in captured.err


def test_materialize_error_one_line(in_workspace, capsys):
    status = cli.main(["report", "models.py:Net", "--input", "2,3,16"])

    assert status == 1
    line = _error_line(capsys)
    forward_line = MODEL_SOURCE.splitlines().index("        x = torch.relu(self.norm(self.conv(x)))") + 1
    assert line.startswith("Shape propagation failed at node 'norm'")
    assert f"models.py:{forward_line} in forward" in line


def test_report_json(in_workspace, capsys):
    status = cli.main(["report", "models.py:Net", "-i", "2x3x16x16", "--format", "json"])

    assert status == 0
    report = json.loads(capsys.readouterr().out)
    assert report["model"] == "Net"
    assert [layer["name"] for layer in report["layers"]] == ["conv", "norm", "head"]


def test_report_markdown(in_workspace, capsys):
    status = cli.main(["report", "models.py:Net", "-i", "2x3x16x16", "--format", "markdown"])

    lines = capsys.readouterr().out.splitlines()
    assert status == 0
    assert lines[0].startswith("| layer ")
    assert any(line.startswith("| head ") for line in lines)


def test_export_parity_failure_one_line(in_workspace, capsys):
    status = cli.main(["export", "models.py:Noisy", "--input", "2,3", "--to", "exported-program", "-o", "noisy.pt2"])

    assert status == 1
    line = _error_line(capsys)
    assert line.startswith("Parity check failed for ExportedProgram 'noisy.pt2' (reloaded) on example (2, 3): output differs")
    assert "tolerance atol=1e-05, rtol=0.0001" in line
    assert (in_workspace / "noisy.pt2").is_file()


def test_uninitialized_checkpoint_error(in_workspace, capsys):
    status = cli.main(["report", "models.py:Net", "--input", "2,3,16,16", "--weights", "never-run.pt"])

    assert status == 1
    line = _error_line(capsys)
    assert "contains uninitialized entries 'conv.weight', 'conv.bias', 'norm.weight'" in line
    assert "Save the state_dict after materializing the model" in line


def test_checkpoint_width_disagreement(in_workspace, capsys):
    status = cli.main(["report", "models.py:Net", "--input", "2,5,16,16", "--weights", "net.pt"])

    assert status == 1
    assert _error_line(capsys).startswith(
        "Layer 'conv' (LazyConv2d): the example gives in_channels=5 (from input dim 1), but checkpoint "
        "entry 'conv.weight' of shape (8, 3, 3, 3) gives in_channels=3 (from 'conv.weight' dim 1)."
    )


def test_unexpected_error_suggests_debug(in_workspace, capsys, monkeypatch):
    def broken_report(static):
        raise RuntimeError("renderer crashed")

    monkeypatch.setattr(cli, "shape_report", broken_report)
    status = cli.main(["report", "models.py:Net", "--input", "2,3,16,16"])

    assert status == 1
    assert _error_line(capsys) == "RuntimeError: renderer crashed (run again with --debug for the traceback)"


def test_debug_shows_traceback(in_workspace, capsys):
    status = cli.main(["report", "models.py:Net", "--input", "2,3,16", "--debug"])

    captured = capsys.readouterr()
    assert status == 1
    assert captured.err.startswith("Traceback (most recent call last):")
    assert "fxlazy.errors.ShapePropagationError" in captured.err
    assert captured.err.splitlines()[-1].startswith("fxlazy: error: Shape propagation failed")


def test_version(capsys):
    with pytest.raises(SystemExit, match=r"^0$"):
        cli.main(["--version"])
    assert capsys.readouterr().out == "fxlazy 0.1.0\n"


def test_command_help_describes_options(capsys):
    with pytest.raises(SystemExit, match=r"^0$"):
        cli.main(["export", "--help"])

    out = capsys.readouterr().out
    assert out.startswith("usage: fxlazy export")
    for option in ("--input SHAPE[:DTYPE]", "--weights CKPT", "--to", "--dynamic", "--no-check", "--atol", "--rtol", "--debug"):
        assert option in out, option
