"""The graph view of the shape report: one row per node, parameters per node, and grouping by depth."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import fxlazy
from fixture_models import CASES, ReportNet
from fxlazy import examples
from report_parsers import GRAPH_TOTALS, UNUSED_TOTALS, number, params_value, parse_text


class _Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.LazyLinear(6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.fc(x))


class RepeatedBlock(nn.Module):
    """One traced-through block called twice in a row, then a split into two outputs."""

    def __init__(self) -> None:
        super().__init__()
        self.block = _Block()
        self.scale = nn.Parameter(torch.ones(6))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.block(self.block(x)) * self.scale
        return x.view(x.shape[0], 2, 3).unbind(1)


def _report(model: nn.Module, *example: torch.Tensor) -> fxlazy.ShapeReport:
    torch.manual_seed(0)
    return fxlazy.shape_report(fxlazy.materialize(model, example, seed=0))


@pytest.fixture(scope="module")
def resnet_report() -> fxlazy.ShapeReport:
    return _report(examples.ResNetClassifier(classes=3, widths=(4, 8)), torch.randn(1, 3, 8, 8))


@pytest.fixture(scope="module")
def repeated_report() -> fxlazy.ShapeReport:
    return _report(RepeatedBlock(), torch.randn(2, 6))


def _rows_by_node(report: fxlazy.ShapeReport) -> dict[str, dict[str, str]]:
    return {row["node"]: row for row in parse_text(str(report)).rows}


def test_one_row_per_node(resnet_report):
    printed = parse_text(str(resnet_report.graph_view()))

    assert [row["node"] for row in printed.rows] == [node.name for node in resnet_report.nodes]
    assert len(printed.rows) == 25


def test_functional_ops_have_rows(resnet_report):
    rows = _rows_by_node(resnet_report.graph_view())

    assert rows["add"]["op"] == "call_function"
    assert rows["add"]["target"] == "operator.add"
    assert rows["add"]["output_shape"] == "(1, 4, 8, 8)"
    assert rows["flatten"]["target"] == "torch.flatten"
    assert rows["flatten"]["output_shape"] == "(1, 8)"
    assert rows["relu_3"]["module"] == "blocks.1"
    assert rows["blocks_1_shortcut_0"]["module"] == "blocks.1.shortcut"
    assert rows["blocks_1_shortcut_0"]["target"] == "blocks.1.shortcut.0 (Conv2d)"
    assert rows["head"]["module"] == "-"


def test_shared_module_counted_once():
    report = _report(ReportNet(), torch.randn(1, 16, 4, 4)).graph_view()
    printed = parse_text(str(report))
    rows = {row["node"]: row for row in printed.rows}

    assert rows["fc"]["params"] == "1,056"
    assert rows["fc_1"]["params"] == "shared"
    assert [node.shared for node in report.nodes if node.name.startswith("fc")] == [False, True]
    assert printed.footer[1].startswith("A module used by several nodes has its parameters counted at the first")


def test_unused_module_in_totals():
    model, example = CASES["mixed"].build()
    static = fxlazy.materialize(model, example)
    printed = parse_text(str(fxlazy.shape_report(static).graph_view()))
    totals = GRAPH_TOTALS.match(printed.footer[0])
    unused = UNUSED_TOTALS.match(printed.footer[1])
    row_sum = sum(params_value(row["params"]) for row in printed.rows)

    assert totals is not None, printed.footer
    assert unused is not None, printed.footer
    assert printed.footer[1].endswith("belong to modules no node uses: unused.")
    assert number(unused["parameters"]) == 4 * 4 + 4
    assert row_sum + number(unused["parameters"]) == number(totals["parameters"])
    assert number(totals["parameters"]) == sum(p.numel() for p in static.parameters())


def test_get_attr_parameter_counted(repeated_report):
    rows = _rows_by_node(repeated_report.graph_view())

    assert rows["scale"]["op"] == "get_attr"
    assert rows["scale"]["params"] == "6"
    assert rows["scale"]["output_shape"] == "(6,)"


def test_method_and_getattr_targets(repeated_report):
    rows = _rows_by_node(repeated_report.graph_view())

    assert rows["view"]["target"] == "Tensor.view"
    assert rows["view"]["output_shape"] == "(2, 2, 3)"
    assert rows["getattr_1"]["target"] == "getattr .shape"
    assert rows["getattr_1"]["output_shape"] == "-"
    assert rows["getattr_1"]["dtype"] == "-"


def test_several_outputs_in_one_cell(repeated_report):
    rows = _rows_by_node(repeated_report.graph_view())

    assert rows["unbind"]["output_shape"] == "(2, 3), (2, 3)"
    assert rows["unbind"]["dtype"] == "float32"
    assert rows["output"]["output_shape"] == "(2, 3), (2, 3)"


def test_depth_one_collapses_modules(resnet_report):
    printed = parse_text(str(resnet_report.graph_view(depth=1)))
    rows = {row["node"]: row for row in printed.rows}

    assert [row["node"] for row in printed.rows] == ["x", "stem", "blocks", "pool", "flatten", "head", "output"]
    assert rows["stem"]["op"] == "module"
    assert rows["stem"]["target"] == "Sequential (3 nodes)"
    assert rows["stem"]["params"] == "116"
    assert rows["blocks"]["target"] == "Sequential (17 nodes)"
    assert rows["blocks"]["output_shape"] == "(1, 8, 4, 4)"
    assert sum(params_value(row["params"]) for row in printed.rows) == 1391


def test_depth_two_indents_under_headers(resnet_report):
    lines = str(resnet_report.graph_view(depth=2)).splitlines()
    names = [line.split()[0] for line in lines[2:-1]]

    assert names == [
        "x", "stem", "stem_0", "stem_1", "stem_2", "blocks", "blocks.0", "blocks.1", "pool", "flatten", "head", "output",
    ]
    assert lines[3].startswith("stem ")
    assert lines[4].startswith("  stem_0 ")
    assert lines[8].startswith("  blocks.0 ")
    header = parse_text("\n".join(lines)).rows[1]
    assert header == {
        "node": "stem", "op": "module", "target": "Sequential", "module": "-", "output_shape": "", "dtype": "", "params": "",
    }


def test_deep_depth_equals_flat_rows(resnet_report):
    deep = parse_text(str(resnet_report.graph_view(depth=9)))
    node_rows = [row for row in deep.rows if row["op"] != "module"]

    assert [row["node"] for row in node_rows] == [node.name for node in resnet_report.nodes]
    assert {row["node"] for row in deep.rows if row["op"] == "module"} == {
        "stem", "blocks", "blocks.0", "blocks.1", "blocks.1.shortcut",
    }


def test_module_called_twice_two_rows(repeated_report):
    printed = parse_text(str(repeated_report.graph_view(depth=1)))
    blocks = [row for row in printed.rows if row["node"] == "block"]

    assert len(blocks) == 2
    assert [row["params"] for row in blocks] == ["42", "shared"]
    assert [row["target"] for row in blocks] == ["_Block (2 nodes)", "_Block (2 nodes)"]
    assert [row["output_shape"] for row in blocks] == ["(2, 6)", "(2, 6)"]


def test_node_rows_module_stack(repeated_report):
    stacks = {node.name: [(frame.key, frame.path, frame.class_name) for frame in node.module_stack] for node in repeated_report.nodes}

    assert stacks["block_fc"] == [("block", "block", "_Block")]
    assert stacks["block_fc_1"] == [("block@1", "block", "_Block")]
    assert stacks["scale"] == []
