"""Draw the graph of a materialized model, with each node's output shape and each lazy layer's inferred widths.

The picture is built with the ``graphviz`` Python package (the optional extra
``fxlazy[draw]``), which writes DOT source and runs Graphviz's ``dot`` program to render
it. Building the graph and writing ``.dot`` files needs only the package; SVG, PNG and
PDF need ``dot`` on ``PATH`` as well. The package was chosen over pydot because its
``Digraph`` objects display themselves in Jupyter, so a notebook shows the picture as
the value of a cell.
"""

from __future__ import annotations

import html
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch.fx

from ._report_rows import LayerRow, ModuleFrame, NodeRow
from ._report_tables import format_shapes
from .errors import MissingDependencyError, ReportError
from .report import ShapeReport, shape_report

if TYPE_CHECKING:
    import graphviz

__all__ = ["draw_graph", "DRAWING_FORMATS"]

# File suffixes draw_graph writes, and the Graphviz output format of each.
DRAWING_FORMATS = {".svg": "svg", ".png": "png", ".pdf": "pdf", ".dot": "dot", ".gv": "dot"}

_LAYER_FILL = "#dbe9f6"
_INPUT_OUTPUT_FILL = "#eeeeee"


@dataclass
class _Cluster:
    """One module call in the picture: its nodes and the module calls nested in it."""

    frame: ModuleFrame | None
    nodes: list[NodeRow] = field(default_factory=list)
    children: dict[str, _Cluster] = field(default_factory=dict)


def _import_graphviz():
    try:
        import graphviz
    except ImportError as error:
        raise MissingDependencyError(
            "fxlazy.draw_graph needs the graphviz Python package, which is not installed. "
            'Install it with: pip install "fxlazy[draw]"'
        ) from error
    return graphviz


def _node_label(row: NodeRow, layer: LayerRow | None) -> str:
    """Return an HTML-like Graphviz label: the node name in bold, then one fact per line."""
    lines = [f"<b>{html.escape(row.name)}</b>"]
    if layer is not None:
        lines.append(html.escape(layer.class_change))
        widths = [f"{name}={value}" for name, value in layer.inferred.items()]
        if layer.source:
            widths = [f"{text} ({layer.source})" for text in widths] or [layer.source]
        if layer.output is not None:
            widths.append(f"{layer.output[0]}={layer.output[1]}")
        lines.append(html.escape(", ".join(widths)))
    elif row.op not in ("placeholder", "output"):
        lines.append(html.escape(row.target))
    if row.output_shapes:
        lines.append(html.escape(f"{format_shapes(row.output_shapes)} {', '.join(row.dtypes)}"))
    return "<" + "<br/>".join(lines) + ">"


def _node_style(row: NodeRow, layer: LayerRow | None) -> dict[str, str]:
    if layer is not None:
        return {"shape": "box", "style": "rounded,filled", "fillcolor": _LAYER_FILL}
    if row.op in ("placeholder", "output"):
        return {"shape": "box", "style": "filled", "fillcolor": _INPUT_OUTPUT_FILL}
    if row.op == "call_module":
        return {"shape": "box", "style": "rounded"}
    return {"shape": "ellipse"}


def _cluster_tree(nodes: tuple[NodeRow, ...]) -> _Cluster:
    root = _Cluster(None)
    for row in nodes:
        cluster = root
        for frame in row.module_stack:
            cluster = cluster.children.setdefault(frame.key, _Cluster(frame))
        cluster.nodes.append(row)
    return root


def _build_digraph(report: ShapeReport) -> graphviz.Digraph:
    graphviz = _import_graphviz()
    layers_by_node = {site: row for row in report.rows for site in row.call_sites}
    digraph = graphviz.Digraph(name=report.model_name, graph_attr={"rankdir": "TB", "fontname": "Helvetica"})
    digraph.attr("node", fontname="Helvetica", fontsize="10")
    cluster_count = 0

    def add_cluster(parent: graphviz.Digraph, cluster: _Cluster) -> None:
        nonlocal cluster_count
        for row in cluster.nodes:
            layer = layers_by_node.get(row.name)
            parent.node(row.name, label=_node_label(row, layer), **_node_style(row, layer))
        for child in cluster.children.values():
            cluster_count += 1
            with parent.subgraph(name=f"cluster_{cluster_count}") as subgraph:
                frame = child.frame
                subgraph.attr(label=f"{frame.path} ({frame.class_name})", style="rounded,dashed", fontsize="10")
                add_cluster(subgraph, child)

    add_cluster(digraph, _cluster_tree(report.nodes))
    for row in report.nodes:
        for source in row.inputs:
            digraph.edge(source, row.name)
    return digraph


def draw_graph(source: torch.fx.GraphModule | ShapeReport, path: str | os.PathLike[str] | None = None) -> graphviz.Digraph:
    """Draw the graph with each node's output shape and each materialized layer's inferred widths.

    Materialized layers are filled boxes naming the class change and the inferred
    constructor arguments, such as ``in_channels=64 (input dim 1), out_channels=32``.
    The nodes created inside a module's forward are framed together, one frame per call.

    Args:
        source: a GraphModule returned by :func:`fxlazy.materialize`, or its
            :class:`ShapeReport`.
        path: when given, the file to write. Its suffix picks the format: ``.svg``,
            ``.png``, ``.pdf``, or ``.dot`` / ``.gv`` for the DOT source.

    Returns:
        The ``graphviz.Digraph``. Its ``source`` attribute contains the DOT text, and in a
        notebook it displays as an SVG picture.

    Raises:
        MissingDependencyError: the graphviz Python package is missing, or ``path``
            requests SVG, PNG or PDF and Graphviz's ``dot`` program is not on ``PATH``.
        ReportError: the suffix of ``path`` is not one of the formats above, or the
            report has no graph nodes.

    Example:
        >>> import torch, fxlazy
        >>> model = torch.nn.Sequential(torch.nn.LazyConvTranspose2d(32, kernel_size=3, stride=2))
        >>> picture = fxlazy.draw_graph(fxlazy.materialize(model, torch.randn(1, 64, 8, 8)))
        >>> print(picture.source.splitlines()[4])
        	_0 [label=<<b>_0</b><br/>LazyConvTranspose2d -&gt; ConvTranspose2d<br/>in_channels=64 (input dim 1), out_channels=32<br/>(1, 32, 17, 17) float32> fillcolor="#dbe9f6" shape=box style="rounded,filled"]
    """
    report = source if isinstance(source, ShapeReport) else shape_report(source)
    if not report.nodes:
        raise ReportError(
            f"The report of {report.model_name} has no graph nodes to draw. Pass the GraphModule "
            "fxlazy.materialize returned, or the report fxlazy.shape_report built from it."
        )

    suffix = None
    if path is not None:
        suffix = Path(path).suffix.lower()
        if suffix not in DRAWING_FORMATS:
            raise ReportError(
                f"Cannot tell the picture format from the file name {os.fspath(path)!r}. "
                f"Valid suffixes: {', '.join(DRAWING_FORMATS)}."
            )

    digraph = _build_digraph(report)
    if path is None or suffix is None:
        return digraph
    file_format = DRAWING_FORMATS[suffix]
    if file_format == "dot":
        Path(path).write_text(digraph.source, encoding="utf-8")
        return digraph

    graphviz = _import_graphviz()
    try:
        rendered = digraph.pipe(format=file_format)
    except graphviz.ExecutableNotFound as error:
        raise MissingDependencyError(
            f"Writing {os.fspath(path)!r} needs Graphviz's dot program, which is not on PATH. "
            "Install Graphviz (for example apt-get install graphviz, brew install graphviz or "
            "conda install graphviz), or write the DOT source to a .dot file instead."
        ) from error
    Path(path).write_bytes(rendered)
    return digraph
