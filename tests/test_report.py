"""fxlazy.shape_report: its rows, its printed table, its totals, and the settings it rejects."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import fxlazy
from assertions import assert_model_unchanged, parse_report_table, snapshot_model
from fixture_models import CASES, KeywordNet, ReportNet
from fxlazy import LayerRow

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
        call_sites=("up",),
        dtype="float32",
        parameter_bytes=(16 * 32 * 3 * 3 + 32) * 4,
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
        call_sites=("norm",),
        dtype="float32",
        parameter_bytes=2 * 32 * 4,
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
        call_sites=("affine",),
        dtype="float32",
        parameter_bytes=2 * 32 * 4,
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
        call_sites=("fc", "fc_1"),
        dtype="float32",
        parameter_bytes=(32 * 32 + 32) * 4,
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

    assert table.headers == [
        "layer", "call sites", "class", "inferred", "from", "output", "input shape", "output shape", "dtype", "params",
    ]
    assert [row["layer"] for row in table.rows] == LAYER_NAMES
    assert table.rows[0] == {
        "layer": "up",
        "call sites": "up",
        "class": "LazyConvTranspose2d -> ConvTranspose2d",
        "inferred": "in_channels=16",
        "from": "input dim 1",
        "output": "out_channels=32",
        "input shape": "(1, 16, 4, 4)",
        "output shape": "(1, 32, 9, 9)",
        "dtype": "float32",
        "params": "4,640",
    }
    assert table.rows[2]["output"] == "-"
    assert table.rows[2]["from"] == "initialize_parameters"
    assert table.rows[3]["from"] == "last input dim"
    assert table.rows[3]["call sites"] == "fc, fc_1"


def test_printed_params_sum_to_total(static):
    table = parse_report_table(str(fxlazy.shape_report(static)))
    printed = [int(row["params"].replace(",", "")) for row in table.rows]

    assert table.total_layers == 4
    assert sum(printed) == table.total_parameters
    assert table.total_parameters == _materialized_parameters(static)
    assert table.total_bytes == 4 * table.total_parameters
    assert table.model_parameters == sum(p.numel() for p in static.parameters())
    assert table.model_bytes == sum(p.numel() * p.element_size() for p in static.parameters())


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
    assert str(report) == "Sequential: no lazy modules were materialized.\nWhole model: 9 parameters (36 bytes)."


@pytest.mark.parametrize("tablefmt", ["github", "pipe"])
def test_to_string_pipe_formats(static, tablefmt):
    lines = fxlazy.shape_report(static).to_string(tablefmt).splitlines()
    table_lines = [line for line in lines if line.startswith("|")]
    rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in table_lines]

    assert rows[0] == [
        "layer", "call sites", "class", "inferred", "from", "output", "input shape", "output shape", "dtype", "params",
    ]
    assert set(rows[1][0]) <= {"-", ":"}
    body = rows[2:]
    assert [row[0] for row in body] == LAYER_NAMES
    assert sum(int(row[-1].replace(",", "")) for row in body) == 5824
    assert lines[-2] == "ReportNet: 4 lazy layers materialized, 5,824 parameters (23,296 bytes) in them."
    assert lines[-1] == "Whole model: 5,824 parameters (23,296 bytes)."


def test_to_string_grid_format(static):
    text = fxlazy.shape_report(static).to_string("grid")
    assert text.splitlines()[0].startswith("+-")
    assert "| LazyLinear -> Linear" in text
    assert text != str(fxlazy.shape_report(static))


def test_model_and_example_report(static):
    torch.manual_seed(0)
    model = ReportNet()
    example = torch.randn(1, 16, 4, 4)
    before = snapshot_model(model)
    rng_before = torch.get_rng_state()

    report = fxlazy.shape_report(model, example)

    assert_model_unchanged(model, before)
    assert torch.equal(torch.get_rng_state(), rng_before)
    assert report.to_dict() == fxlazy.shape_report(static).to_dict()


def test_example_kwargs_report():
    report = fxlazy.shape_report(KeywordNet(), torch.randn(2, 3), example_kwargs={"mask": torch.ones(2, 3)})

    assert [row.name for row in report.rows] == ["proj"]
    assert report.rows[0].input_shapes == ((2, 3),)
    assert [node.name for node in report.nodes if node.op == "placeholder"] == ["x", "mask"]


def test_report_same_after_training(static):
    before = fxlazy.shape_report(static)
    trained = copy.deepcopy(static).train()
    optimizer = torch.optim.SGD(trained.parameters(), lr=0.1)
    trained(torch.randn(3, 16, 4, 4)).square().mean().backward()
    optimizer.step()

    after = fxlazy.shape_report(trained)
    assert after.to_dict() == before.to_dict()
    assert str(after.graph_view()) == str(before.graph_view())


def test_lazy_totals_apart_from_model():
    model, example = CASES["mixed"].build()
    static = fxlazy.materialize(model, example)
    report = fxlazy.shape_report(static)
    table = parse_report_table(str(report))
    lazy_parameters = sum(p.numel() for name in ("lazy_conv", "affine", "head") for p in static.get_submodule(name).parameters())

    assert table.total_parameters == lazy_parameters == report.total_parameters
    assert table.model_parameters == sum(p.numel() for p in static.parameters())
    assert table.model_parameters > table.total_parameters


def test_view_repr(static):
    report = fxlazy.shape_report(static)

    assert repr(report) == "ShapeReport(model_name='ReportNet', rows=4, nodes=10, view='lazy')"
    assert repr(report.graph_view(depth=2)) == "ShapeReport(model_name='ReportNet', rows=4, nodes=10, view='graph', depth=2)"


def test_selected_columns_in_order(static):
    report = fxlazy.shape_report(static).lazy_view(columns=["params", "layer", "inferred"])
    table = parse_report_table(str(report))

    assert report.columns == ("params", "layer", "inferred")
    assert table.headers == ["params", "layer", "inferred"]
    assert table.rows[0] == {"params": "4,640", "layer": "up", "inferred": "in_channels=16"}
    assert report.table_rows()[3] == ["1,056", "fc", "in_features=32"]


def test_view_switch_keeps_rows(static):
    report = fxlazy.shape_report(static)
    graph = report.graph_view(columns=["node"])

    assert graph.rows == report.rows
    assert graph.nodes == report.nodes
    assert graph.lazy_view().columns == report.columns


def test_module_without_example_rejected():
    model = ReportNet()
    with pytest.raises(fxlazy.ReportError, match=r"ReportNet is not a GraphModule.*shape_report\(model, example\)"):
        fxlazy.shape_report(model)


def test_graph_module_without_shapes_rejected():
    traced = torch.fx.symbolic_trace(nn.Sequential(nn.Linear(2, 3)))
    with pytest.raises(fxlazy.ReportError, match=r"has no tensor_meta on its nodes.*pass the model with an example"):
        fxlazy.shape_report(traced)


@pytest.mark.parametrize(
    ("view", "columns", "pattern"),
    [
        ("lazy", ["layer", "shape"], r"Unknown column\(s\) 'shape' for the lazy view\. Valid columns: layer, call_sites, class, "),
        ("graph", ["node", "layer"], r"Unknown column\(s\) 'layer' for the graph view\. Valid columns: node, op, target, module, "),
        ("lazy", [], r"columns is empty; select at least one of: layer, "),
        ("lazy", "layer", r"columns must be a list of column names, not the string 'layer'"),
    ],
    ids=["lazy-unknown", "graph-unknown", "empty", "string"],
)
def test_invalid_columns_rejected(static, view, columns, pattern):
    report = fxlazy.shape_report(static)
    select = report.lazy_view if view == "lazy" else report.graph_view
    with pytest.raises(fxlazy.ReportError, match=pattern):
        select(columns=columns)


@pytest.mark.parametrize("depth", [0, -1, 1.5, "2", True], ids=["zero", "negative", "float", "string", "bool"])
def test_invalid_depth_rejected(static, depth):
    with pytest.raises(fxlazy.ReportError, match=r"Invalid depth .*: pass a positive int"):
        fxlazy.shape_report(static).graph_view(depth=depth)


def test_depth_on_lazy_view_rejected(static):
    report = fxlazy.shape_report(static)
    with pytest.raises(fxlazy.ReportError, match=r"depth=2 applies to the graph view only"):
        fxlazy.ShapeReport(report.model_name, report.rows, report.nodes, view="lazy", depth=2)


def test_unknown_view_rejected(static):
    report = fxlazy.shape_report(static)
    with pytest.raises(fxlazy.ReportError, match=r"Unknown report view 'nodes'\. Valid views: lazy, graph\."):
        fxlazy.ShapeReport(report.model_name, report.rows, view="nodes")


def test_unknown_tablefmt_rejected(static):
    with pytest.raises(fxlazy.ReportError, match=r"Unknown table format 'nope'\. Valid formats: .*\bgithub\b.*\bsimple\b"):
        fxlazy.shape_report(static).to_string("nope")


def test_report_error_categories():
    assert issubclass(fxlazy.ReportError, ValueError)
    assert issubclass(fxlazy.ReportError, fxlazy.FxLazyError)
    assert issubclass(fxlazy.MissingDependencyError, ImportError)
    assert issubclass(fxlazy.MissingDependencyError, fxlazy.FxLazyError)
