"""fxlazy.draw_graph: the DOT source, the files it writes, and the errors for missing tools."""

from __future__ import annotations

import shutil
import sys
import xml.etree.ElementTree as ElementTree

import pytest
import torch

import fxlazy
from fxlazy import examples

graphviz = pytest.importorskip("graphviz", reason='the graphviz package is missing; pip install -e ".[test]" installs it')

needs_dot = pytest.mark.skipif(
    shutil.which("dot") is None,
    reason="Graphviz's dot program is not on PATH, so SVG and PNG cannot be rendered; apt-get install graphviz",
)


@pytest.fixture(scope="module")
def seed_model() -> torch.fx.GraphModule:
    torch.manual_seed(0)
    return fxlazy.materialize(examples.TransposedConvExample(), (torch.randn(1, 64, 8, 8),), seed=0)


@pytest.fixture(scope="module")
def resnet() -> torch.fx.GraphModule:
    torch.manual_seed(0)
    return fxlazy.materialize(examples.ResNetClassifier(classes=3, widths=(4, 8)), torch.randn(1, 3, 8, 8), seed=0)


def test_labels_show_inferred_widths(seed_model):
    source = fxlazy.draw_graph(seed_model).source

    assert "<b>up</b><br/>LazyConvTranspose2d -&gt; ConvTranspose2d" in source
    assert "in_channels=64 (input dim 1), out_channels=32" in source
    assert "(1, 32, 17, 17) float32" in source
    assert "<b>x</b><br/>(1, 64, 8, 8) float32" in source


def test_edges_follow_graph(resnet):
    source = fxlazy.draw_graph(resnet).source
    edges = {line.strip() for line in source.splitlines() if "->" in line and "[" not in line}

    expected = {f"{source_name} -> {node.name}" for node in resnet.graph.nodes for source_name in (n.name for n in node.all_input_nodes)}
    assert edges == expected


def test_module_calls_framed(resnet):
    source = fxlazy.draw_graph(resnet).source

    assert "label=\"blocks.0 (_ResidualBlock)\"" in source
    assert "label=\"blocks.1.shortcut (Sequential)\"" in source
    assert source.count("subgraph cluster_") == 5


def test_report_and_module_same_picture(resnet):
    assert fxlazy.draw_graph(fxlazy.shape_report(resnet)).source == fxlazy.draw_graph(resnet).source


def test_dot_file_written(seed_model, tmp_path):
    path = tmp_path / "graph.dot"
    picture = fxlazy.draw_graph(seed_model, path)

    assert path.read_text(encoding="utf-8") == picture.source


@needs_dot
def test_svg_file_written(seed_model, tmp_path):
    path = tmp_path / "graph.svg"
    fxlazy.draw_graph(seed_model, str(path))

    root = ElementTree.fromstring(path.read_bytes())
    texts = [element.text for element in root.iter() if element.text]
    assert root.tag.endswith("svg")
    assert "in_channels=64 (input dim 1), out_channels=32" in texts
    assert "(1, 32, 17, 17) float32" in texts


@needs_dot
def test_png_file_written(seed_model, tmp_path):
    path = tmp_path / "graph.PNG"
    fxlazy.draw_graph(seed_model, path)

    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_unknown_suffix_rejected(seed_model, tmp_path):
    path = tmp_path / "graph.jpeg"
    with pytest.raises(fxlazy.ReportError, match=r"graph\.jpeg'\. Valid suffixes: \.svg, \.png, \.pdf, \.dot, \.gv\."):
        fxlazy.draw_graph(seed_model, path)
    assert not path.exists()


def test_missing_package_names_extra(seed_model, monkeypatch):
    # A None entry in sys.modules makes `import graphviz` raise ImportError.
    monkeypatch.setitem(sys.modules, "graphviz", None)
    with pytest.raises(fxlazy.MissingDependencyError, match=r'needs the graphviz Python package.*pip install "fxlazy\[draw\]"') as caught:
        fxlazy.draw_graph(seed_model)
    assert isinstance(caught.value, ImportError)


def test_missing_dot_names_graphviz(seed_model, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    path = tmp_path / "graph.svg"
    with pytest.raises(fxlazy.MissingDependencyError, match=r"needs Graphviz's dot program.*apt-get install graphviz"):
        fxlazy.draw_graph(seed_model, path)
    assert not path.exists()


def test_report_without_nodes_rejected():
    with pytest.raises(fxlazy.ReportError, match=r"The report of Empty has no graph nodes to draw"):
        fxlazy.draw_graph(fxlazy.ShapeReport("Empty", []))
