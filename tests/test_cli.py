"""``python -m fxlazy`` run as a separate process, as a user runs it."""

from __future__ import annotations


import pytest
import torch
from torch import nn

import fxlazy.__main__ as cli
from assertions import parse_report_table
from cli_runs import Finished, run_fxlazy_concurrently

# Each entry is one run of `python -m fxlazy` with these arguments.
RUNS = {
    "default": [],
    "dcgan": ["--example", "dcgan"],
}

# Timeout in seconds for one run. Importing torch alone takes several seconds on a slow machine.
RUN_TIMEOUT = 180


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Finished]:
    return run_fxlazy_concurrently(RUNS, tmp_path_factory.mktemp("cli"), RUN_TIMEOUT)


def test_default_prints_bundled_example(runs):
    run = runs["default"]
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines()[0] == "TransposedConvExample materialized for input shape(s) (1, 64, 8, 8)"

    table = parse_report_table(run.stdout)
    assert table.rows == [
        {
            "layer": "up",
            "call sites": "up",
            "class": "LazyConvTranspose2d -> ConvTranspose2d",
            "inferred": "in_channels=64",
            "from": "input dim 1",
            "output": "out_channels=32",
            "input shape": "(1, 64, 8, 8)",
            "output shape": "(1, 32, 17, 17)",
            "dtype": "float32",
            "params": "18,464",
        }
    ]
    assert table.total_layers == 1
    assert table.total_parameters == 64 * 32 * 3 * 3 + 32


def test_example_choice_dcgan(runs):
    run = runs["dcgan"]
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines()[0] == "DCGANGenerator materialized for input shape(s) (2, 100, 1, 1)"

    table = parse_report_table(run.stdout)
    rows = {row["layer"]: row for row in table.rows}
    assert table.total_layers == len(table.rows) == 9
    assert rows["main.0"]["inferred"] == "in_channels=100"
    assert rows["main.0"]["output shape"] == "(2, 512, 4, 4)"
    assert rows["main.1"]["class"] == "LazyBatchNorm2d -> BatchNorm2d"
    assert rows["main.12"]["inferred"] == "in_channels=64"
    assert rows["main.12"]["output shape"] == "(2, 3, 64, 64)"
    assert sum(int(row["params"].replace(",", "")) for row in table.rows) == table.total_parameters


# --help and invalid arguments stop in argparse before any model is built, so these tests
# call main in this process. The two runs above cover the `python -m fxlazy` entry point.


def test_help_lists_examples(capsys):
    with pytest.raises(SystemExit, match=r"^0$"):
        cli.main(["--help"])

    out = capsys.readouterr().out
    assert out.startswith("usage: python -m fxlazy")
    for name in ("transposed-conv", "dcgan", "unet", "resnet", "decoder-1024"):
        assert name in out, name
    assert "--tablefmt" in out


def test_unknown_example_rejected(capsys):
    with pytest.raises(SystemExit, match=r"^2$"):
        cli.main(["--example", "no-such-model"])

    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("usage: python -m fxlazy")
    assert "invalid choice: 'no-such-model'" in captured.err


class _NeverCallsLazy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.used = nn.LazyLinear(2)
        self.unused = nn.LazyLinear(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.used(x)


def test_materialize_error_exits_one(monkeypatch, capsys):
    # A user's model registered next to the bundled ones, so main's error path runs.
    monkeypatch.setitem(cli.EXAMPLES, "never-calls-lazy", lambda: (_NeverCallsLazy(), (torch.randn(1, 3),)))

    status = cli.main(["--example", "never-calls-lazy"])

    captured = capsys.readouterr()
    assert status == 1
    assert captured.out == ""
    assert captured.err.startswith("fxlazy: error: ")
    assert "'unused' (LazyLinear)" in captured.err


def test_tablefmt_option(capsys):
    status = cli.main(["--tablefmt", "github"])

    lines = capsys.readouterr().out.splitlines()
    assert status == 0
    header = next(line for line in lines if line.startswith("| layer"))
    row = next(line for line in lines if line.startswith("| up "))
    assert "params" in header
    assert [cell.strip() for cell in row.strip("|").split("|")][-1] == "18,464"
