"""fxlazy.shape_report: its rows, its printed table and its totals."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import fxlazy
from assertions import parse_report_table
from fixture_models import LazyChannelAffine
from fxlazy import LayerRow


class ReportNet(nn.Module):
    """Four lazy classes, one of them custom, and a LazyLinear called twice."""

    def __init__(self) -> None:
        super().__init__()
        self.up = nn.LazyConvTranspose2d(32, 3, stride=2)
        self.norm = nn.LazyBatchNorm2d()
        self.affine = LazyChannelAffine()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.LazyLinear(32)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.affine(self.norm(self.up(x)))
        x = torch.flatten(self.pool(x), 1)
        return self.fc(torch.relu(self.fc(x)))


LAYER_NAMES = ["up", "norm", "affine", "fc"]

EXPECTED_ROWS = (
    LayerRow(
        name="up",
        lazy_class="LazyConvTranspose2d",
        concrete_class="ConvTranspose2d",
        inferred={"in_channels": 16},
        source="input dim 1",
        output=("out_channels", 32),
        input_shapes=((1, 16, 4, 4),),
        output_shapes=((1, 32, 9, 9),),
        calls=1,
        parameters=16 * 32 * 3 * 3 + 32,
    ),
    LayerRow(
        name="norm",
        lazy_class="LazyBatchNorm2d",
        concrete_class="BatchNorm2d",
        inferred={"num_features": 32},
        source="input dim 1",
        output=("num_features", 32),
        input_shapes=((1, 32, 9, 9),),
        output_shapes=((1, 32, 9, 9),),
        calls=1,
        parameters=2 * 32,
    ),
    LayerRow(
        name="affine",
        lazy_class="LazyChannelAffine",
        concrete_class="ChannelAffine",
        inferred={"num_channels": 32},
        source="initialize_parameters",
        output=None,
        input_shapes=((1, 32, 9, 9),),
        output_shapes=((1, 32, 9, 9),),
        calls=1,
        parameters=2 * 32,
    ),
    LayerRow(
        name="fc",
        lazy_class="LazyLinear",
        concrete_class="Linear",
        inferred={"in_features": 32},
        source="last input dim",
        output=("out_features", 32),
        input_shapes=((1, 32),),
        output_shapes=((1, 32),),
        calls=2,
        parameters=32 * 32 + 32,
    ),
)


@pytest.fixture(scope="module")
def static() -> torch.fx.GraphModule:
    torch.manual_seed(0)
    return fxlazy.materialize(ReportNet(), torch.randn(1, 16, 4, 4))


def _materialized_parameters(gm: torch.fx.GraphModule) -> int:
    return sum(p.numel() for name in LAYER_NAMES for p in gm.get_submodule(name).parameters())


def test_rows(static):
    report = fxlazy.shape_report(static)
    assert report.rows == EXPECTED_ROWS
    assert len(report) == 4
    assert [row.name for row in report] == LAYER_NAMES


def test_class_change_text(static):
    report = fxlazy.shape_report(static)
    assert [row.class_change for row in report.rows] == [
        "LazyConvTranspose2d -> ConvTranspose2d",
        "LazyBatchNorm2d -> BatchNorm2d",
        "LazyChannelAffine -> ChannelAffine",
        "LazyLinear -> Linear",
    ]


def test_parameter_counts_match_layers(static):
    report = fxlazy.shape_report(static)
    for row in report.rows:
        module = static.get_submodule(row.name)
        assert row.parameters == sum(p.numel() for p in module.parameters()), row.name
    assert report.total_parameters == _materialized_parameters(static) == 5824


def test_printed_table_values(static):
    table = parse_report_table(str(fxlazy.shape_report(static)))

    assert table.headers == ["layer", "class", "inferred", "from", "output", "input shape", "output shape", "params"]
    assert [row["layer"] for row in table.rows] == ["up", "norm", "affine", "fc (2 calls)"]
    assert table.rows[0] == {
        "layer": "up",
        "class": "LazyConvTranspose2d -> ConvTranspose2d",
        "inferred": "in_channels=16",
        "from": "input dim 1",
        "output": "out_channels=32",
        "input shape": "(1, 16, 4, 4)",
        "output shape": "(1, 32, 9, 9)",
        "params": "4,640",
    }
    assert table.rows[2]["output"] == "-"
    assert table.rows[2]["from"] == "initialize_parameters"
    assert table.rows[3]["from"] == "last input dim"


def test_printed_params_sum_to_total(static):
    table = parse_report_table(str(fxlazy.shape_report(static)))
    printed = [int(row["params"].replace(",", "")) for row in table.rows]

    assert table.total_layers == 4
    assert sum(printed) == table.total_parameters
    assert table.total_parameters == _materialized_parameters(static)


def test_report_survives_deepcopy(static):
    report = fxlazy.shape_report(static)
    copied = fxlazy.shape_report(copy.deepcopy(static))

    assert copied.rows == report.rows
    assert copied.total_parameters == report.total_parameters


def test_report_text_survives_deepcopy(static):
    copied = fxlazy.shape_report(copy.deepcopy(static))
    assert copied.model_name == "ReportNet"
    assert str(copied) == str(fxlazy.shape_report(static))


def test_no_lazy_layers_empty_report():
    model = nn.Sequential(nn.Linear(2, 3), nn.ReLU())
    report = fxlazy.shape_report(fxlazy.materialize(model, torch.randn(1, 2)))

    assert len(report) == 0
    assert report.rows == ()
    assert report.total_parameters == 0
    assert str(report) == "Sequential: no lazy modules were materialized."


@pytest.mark.parametrize("tablefmt", ["github", "pipe"])
def test_to_string_pipe_formats(static, tablefmt):
    lines = fxlazy.shape_report(static).to_string(tablefmt).splitlines()
    table_lines = [line for line in lines if line.startswith("|")]
    rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in table_lines]

    assert rows[0] == ["layer", "class", "inferred", "from", "output", "input shape", "output shape", "params"]
    assert set(rows[1][0]) <= {"-", ":"}
    body = rows[2:]
    assert [row[0] for row in body] == ["up", "norm", "affine", "fc (2 calls)"]
    assert sum(int(row[-1].replace(",", "")) for row in body) == 5824
    assert lines[-1] == "ReportNet: 4 lazy layers materialized, 5,824 parameters in them."


def test_to_string_grid_format(static):
    text = fxlazy.shape_report(static).to_string("grid")
    assert text.splitlines()[0].startswith("+-")
    assert "| LazyLinear -> Linear" in text
    assert text != str(fxlazy.shape_report(static))
