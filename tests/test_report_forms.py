"""The printed forms of the shape report: golden files, plus invariants read back from each form.

Each form is compared with its golden file in tests/golden/ (``pytest --regen-golden``
rewrites them), and separately parsed back to check that the printed parameter totals
add up and that every printed output shape equals the one a real forward produces.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.fx
from torch import nn
from torch.utils._pytree import tree_flatten

import fxlazy
from fixture_models import ReportNet
from fxlazy import ShapeReport, examples
from report_parsers import (
    GRAPH_TOTALS,
    LAZY_TOTALS,
    MODEL_TOTALS,
    PrintedTable,
    number,
    params_value,
    parse_csv,
    parse_html,
    parse_markdown,
    parse_text,
)


@dataclass(frozen=True)
class GoldenModel:
    build_model: Callable[[], nn.Module]
    build_example: Callable[[], tuple[torch.Tensor, ...]]


GOLDEN_MODELS = {
    "transposed-conv": GoldenModel(examples.TransposedConvExample, lambda: (torch.randn(1, 64, 8, 8),)),
    "report-net": GoldenModel(ReportNet, lambda: (torch.randn(1, 16, 4, 4),)),
    "resnet": GoldenModel(
        lambda: examples.ResNetClassifier(classes=3, widths=(4, 8)), lambda: (torch.randn(1, 3, 8, 8),)
    ),
}


@dataclass(frozen=True)
class Form:
    """One printed form: how to pick the view, how to print it, and how to read it back."""

    view: str
    select: Callable[[ShapeReport], ShapeReport]
    render: Callable[[ShapeReport], str]
    parse: Callable[[str], PrintedTable]
    has_totals: bool = True


def _lazy(report: ShapeReport) -> ShapeReport:
    return report.lazy_view()


def _graph(depth: int | None) -> Callable[[ShapeReport], ShapeReport]:
    return lambda report: report.graph_view(depth=depth)


FORMS = {
    "lazy.txt": Form("lazy", _lazy, str, parse_text),
    "lazy.md": Form("lazy", _lazy, ShapeReport.to_markdown, parse_markdown),
    "lazy.csv": Form("lazy", _lazy, ShapeReport.to_csv, parse_csv, has_totals=False),
    "lazy.html": Form("lazy", _lazy, ShapeReport.to_html, parse_html),
    "graph.txt": Form("graph", _graph(None), str, parse_text),
    "graph.md": Form("graph", _graph(None), ShapeReport.to_markdown, parse_markdown),
    "graph.csv": Form("graph", _graph(None), ShapeReport.to_csv, parse_csv, has_totals=False),
    "graph.html": Form("graph", _graph(None), ShapeReport.to_html, parse_html),
    "graph-depth-1.txt": Form("graph", _graph(1), str, parse_text),
    "graph-depth-2.txt": Form("graph", _graph(2), str, parse_text),
    "graph-depth-2.md": Form("graph", _graph(2), ShapeReport.to_markdown, parse_markdown),
    "graph-depth-2.html": Form("graph", _graph(2), ShapeReport.to_html, parse_html),
}


@dataclass(frozen=True)
class Materialized:
    gm: torch.fx.GraphModule
    example: tuple[torch.Tensor, ...]
    report: ShapeReport


@pytest.fixture(scope="module")
def materialized() -> dict[str, Materialized]:
    built = {}
    for name, spec in GOLDEN_MODELS.items():
        torch.manual_seed(0)
        model = spec.build_model()
        example = spec.build_example()
        gm = fxlazy.materialize(model, example, seed=0)
        built[name] = Materialized(gm, example, fxlazy.shape_report(gm))
    return built


def _format_real(value: Any) -> str:
    """Write the shapes of the tensors in ``value`` as the report does."""
    leaves, _ = tree_flatten(value)
    shapes = [tuple(leaf.shape) for leaf in leaves if isinstance(leaf, torch.Tensor)]
    return ", ".join(str(shape) for shape in shapes) or "-"


class _RecordingInterpreter(torch.fx.Interpreter):
    """Run the GraphModule on real tensors and keep every node's output."""

    def __init__(self, gm: torch.fx.GraphModule) -> None:
        super().__init__(gm, garbage_collect_values=False)
        self.values: dict[str, Any] = {}

    def run_node(self, n: torch.fx.Node) -> Any:
        value = super().run_node(n)
        self.values[n.name] = value
        return value


def _real_node_outputs(item: Materialized) -> dict[str, Any]:
    interpreter = _RecordingInterpreter(item.gm.eval())
    with torch.no_grad():
        interpreter.run(*item.example)
    return interpreter.values


def _real_layer_outputs(item: Materialized) -> dict[str, str]:
    """Run the static module's forward with hooks; return each layer's first output shapes."""
    outputs: dict[str, str] = {}
    handles = []
    for row in item.report.rows:
        def hook(module: nn.Module, args: Any, output: Any, name: str = row.name) -> None:
            outputs.setdefault(name, _format_real(output))

        handles.append(item.gm.get_submodule(row.name).register_forward_hook(hook))
    try:
        with torch.no_grad():
            item.gm.eval()(*item.example)
    finally:
        for handle in handles:
            handle.remove()
    return outputs


def _module_call_output(gm: torch.fx.GraphModule, path: str, values: dict[str, Any]) -> str:
    """Shapes of the values leaving the graph nodes created inside module ``path``."""
    def inside(node: torch.fx.Node) -> bool:
        stack = node.meta.get("nn_module_stack") or {}
        paths = [module_path for module_path, _ in stack.values()]
        if node.op == "call_module" and paths and paths[-1] == node.target:
            paths = paths[:-1]
        return path in paths

    members = [node for node in gm.graph.nodes if inside(node)]
    leaving = [node for node in members if any(user not in members for user in node.users)]
    return _format_real([values[node.name] for node in leaving])


def _model_parameters(gm: torch.fx.GraphModule) -> int:
    return sum(p.numel() for p in gm.parameters())


@pytest.mark.parametrize("form", sorted(FORMS))
@pytest.mark.parametrize("model", sorted(GOLDEN_MODELS))
def test_form_matches_golden(materialized, golden, model, form):
    spec = FORMS[form]
    text = spec.render(spec.select(materialized[model].report))
    golden.check(f"{model}.{form}", text if text.endswith("\n") else text + "\n")


@pytest.mark.parametrize("model", sorted(GOLDEN_MODELS))
def test_json_matches_golden(materialized, golden, model):
    golden.check(f"{model}.json", materialized[model].report.to_json() + "\n")


@pytest.mark.parametrize("form", sorted(FORMS))
@pytest.mark.parametrize("model", sorted(GOLDEN_MODELS))
def test_printed_params_add_up(materialized, model, form):
    item = materialized[model]
    spec = FORMS[form]
    printed = spec.parse(spec.render(spec.select(item.report)))
    row_sum = sum(params_value(row["params"]) for row in printed.rows)

    # Every parameter of these models lives in a lazy layer, so both views add up to all of them.
    assert row_sum == _model_parameters(item.gm)
    if not spec.has_totals:
        return
    if spec.view == "lazy":
        layers = LAZY_TOTALS.match(printed.footer[0])
        whole = MODEL_TOTALS.match(printed.footer[1])
        assert layers is not None, printed.footer
        assert whole is not None, printed.footer
        assert number(layers["parameters"]) == row_sum
        assert int(layers["layers"]) == len(printed.rows)
        assert number(whole["parameters"]) == _model_parameters(item.gm)
        assert number(whole["bytes"]) == sum(p.numel() * p.element_size() for p in item.gm.parameters())
    else:
        totals = GRAPH_TOTALS.match(printed.footer[0])
        assert totals is not None, printed.footer
        assert number(totals["parameters"]) == row_sum
        assert number(totals["nodes"]) == len(item.gm.graph.nodes)


@pytest.mark.parametrize("form", sorted(FORMS))
@pytest.mark.parametrize("model", sorted(GOLDEN_MODELS))
def test_printed_shapes_match_forward(materialized, model, form):
    item = materialized[model]
    spec = FORMS[form]
    printed = spec.parse(spec.render(spec.select(item.report)))

    if spec.view == "lazy":
        real = _real_layer_outputs(item)
        assert [row["layer"] for row in printed.rows] == list(real)
        for row in printed.rows:
            assert row["output_shape"] == real[row["layer"]], row["layer"]
        return

    values = _real_node_outputs(item)
    for row in printed.rows:
        name = row["node"]
        if row["op"] != "module":
            # CSV writes a missing value as an empty field, the other forms as "-".
            assert (row["output_shape"] or "-") == _format_real(values[name]), name
        elif row["output_shape"]:
            assert row["output_shape"] == _module_call_output(item.gm, name, values), name
        else:
            # A header row, whose nodes are printed under it.
            assert row["params"] == "", name


@pytest.mark.parametrize("model", sorted(GOLDEN_MODELS))
def test_json_round_trip(materialized, model):
    report = materialized[model].report
    loaded = json.loads(report.to_json())

    assert loaded == report.to_dict()
    assert json.loads(report.to_json(indent=None)) == loaded
    assert loaded["schema"] == "fxlazy.shape_report"
    assert loaded["version"] == 1


@pytest.mark.parametrize("model", sorted(GOLDEN_MODELS))
def test_json_values_match_forward(materialized, model):
    item = materialized[model]
    data = json.loads(item.report.to_json())
    values = _real_node_outputs(item)
    layer_outputs = _real_layer_outputs(item)

    assert [node["name"] for node in data["nodes"]] == [node.name for node in item.gm.graph.nodes]
    for node in data["nodes"]:
        real = [list(leaf.shape) for leaf in tree_flatten(values[node["name"]])[0] if isinstance(leaf, torch.Tensor)]
        assert node["output_shapes"] == real, node["name"]
    for layer in data["layers"]:
        shapes = ", ".join(str(tuple(shape)) for shape in layer["output_shapes"])
        assert shapes == layer_outputs[layer["name"]], layer["name"]

    totals = data["totals"]
    assert sum(node["parameters"] for node in data["nodes"]) == totals["parameters"]
    assert sum(layer["parameters"] for layer in data["layers"]) == totals["layer_parameters"]
    assert totals["parameters"] == _model_parameters(item.gm)
    assert totals["parameter_bytes"] == sum(p.numel() * p.element_size() for p in item.gm.parameters())
    assert totals["unused_parameters"] == 0


def test_json_keys(materialized):
    data = materialized["report-net"].report.to_dict()

    assert list(data) == ["schema", "version", "model", "specializations", "dynamic_dims", "layers", "nodes", "totals"]
    assert list(data["layers"][0]) == [
        "name", "call_sites", "lazy_class", "concrete_class", "inferred", "source", "output",
        "input_shapes", "output_shapes", "dtype", "parameters", "parameter_bytes",
    ]
    assert list(data["nodes"][0]) == [
        "name", "op", "target", "module", "module_stack", "inputs", "output_shapes", "dtypes",
        "parameters", "parameter_bytes", "shared",
    ]
    assert list(data["totals"]) == [
        "layers", "layer_parameters", "layer_parameter_bytes", "parameters", "parameter_bytes",
        "unused_parameters", "unused_parameter_bytes", "unused_modules",
    ]
    assert data["layers"][0]["output"] == {"argument": "out_channels", "value": 32}
    assert data["layers"][2]["output"] is None


def test_html_is_repr_html(materialized):
    report = materialized["report-net"].report

    assert report._repr_html_() == report.to_html()
    assert report.graph_view()._repr_html_() == report.graph_view().to_html()


def test_html_escapes_cells(materialized):
    html_text = materialized["report-net"].report.to_html()
    printed = parse_html(html_text)

    assert "LazyLinear -&gt; Linear" in html_text
    assert printed.rows[3]["class"] == "LazyLinear -> Linear"


def test_markdown_indents_with_no_break_spaces(materialized):
    text = materialized["resnet"].report.graph_view(depth=2).to_markdown()
    line = next(line for line in text.splitlines() if "stem_0" in line)

    assert line.startswith("| \u00a0\u00a0stem_0")


def test_csv_numbers_plain(materialized):
    printed = parse_csv(materialized["transposed-conv"].report.to_csv())

    assert printed.keys == [
        "layer", "call_sites", "class", "inferred", "from", "output", "input_shape", "output_shape", "dtype", "params",
    ]
    assert printed.rows[0]["params"] == "18464"


SCHEMA_DOC = Path(__file__).resolve().parent.parent / "docs" / "report-schema.md"


def _documented_keys(section: str) -> list[str]:
    text = SCHEMA_DOC.read_text(encoding="utf-8")
    body = text.split(f"## {section}\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"^\| `(\w+)` \|", body, flags=re.MULTILINE)


def test_schema_doc_lists_keys(materialized):
    data = materialized["report-net"].report.to_dict()

    assert _documented_keys("Top level") == list(data)
    assert _documented_keys("`layers[]`") == list(data["layers"][0])
    assert _documented_keys("`nodes[]`") == list(data["nodes"][0])
    assert _documented_keys("`totals`") == list(data["totals"])


def test_schema_doc_example_current():
    example = SCHEMA_DOC.read_text(encoding="utf-8").split("```json\n", 1)[1].split("```", 1)[0]
    report = fxlazy.shape_report(nn.Sequential(nn.LazyLinear(4)), torch.randn(2, 3))

    assert json.loads(example) == report.to_dict()
