"""The shape report: what fxlazy inferred for each lazy module, and the shapes of the graph.

A report is rebuilt from the GraphModule alone: each call of a materialized module
carries a ``LazyCallRecord`` in ``node.meta``, every node its ``tensor_meta`` and the
``nn_module_stack`` the torch.fx tracer wrote. So the report is the same right after
:func:`fxlazy.materialize`, later, and on a ``copy.deepcopy`` of the GraphModule.

It has two views. The lazy view (the default) has one row per materialized layer. The
graph view has one row per graph node, functional operations included, and can group
nodes under the modules that created them. Each view prints as a ``tabulate`` table
(``str``, :meth:`ShapeReport.to_string`), Markdown, CSV or HTML, and the whole report
converts to a versioned dict or JSON document (:meth:`ShapeReport.to_dict`).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import torch
import torch.fx
from torch import nn

from ._materialize import materialize
from ._report_forms import render_csv, render_html, render_markdown, render_text
from ._report_rows import CollectedRows, LayerRow, ModelTotals, ModuleFrame, NodeRow, collect_rows, has_shapes
from ._report_tables import Table, build_table, validate_view
from .errors import ReportError

__all__ = ["LayerRow", "NodeRow", "ModuleFrame", "ShapeReport", "shape_report", "REPORT_SCHEMA_VERSION"]

# Version of the to_dict() and to_json() layout. It changes when a key is renamed or
# removed, or its meaning changes; added keys keep the version.
REPORT_SCHEMA_VERSION = 1
_SCHEMA_NAME = "fxlazy.shape_report"


class ShapeReport:
    """The widths and shapes fxlazy inferred, as a table in the form a reader needs.

    ``str(report)`` prints the current view with its totals lines. ``report.rows`` contains
    the materialized layers, and ``report.nodes`` every graph node. The view is chosen with
    :meth:`lazy_view` and :meth:`graph_view`, which return a new report over the same
    rows. Build a report with :func:`shape_report`.

    Args:
        model_name: the model's class name, printed in the totals lines.
        rows: the materialized layers.
        nodes: the graph nodes.
        totals: parameter totals of the whole model. When None, the layers' own totals.
        view: ``"lazy"`` or ``"graph"``.
        depth: for the graph view, the module nesting level at which nodes collapse into
            one row per module call; None for one row per node.
        columns: column keys to print, in order; None for every column of the view.

    Raises:
        ReportError: an unknown view or column, or an invalid depth.
    """

    def __init__(
        self,
        model_name: str,
        rows: Sequence[LayerRow],
        nodes: Sequence[NodeRow] = (),
        totals: ModelTotals | None = None,
        *,
        view: str = "lazy",
        depth: int | None = None,
        columns: Sequence[str] | None = None,
        specializations: Sequence[str] = (),
        dynamic_dims: Sequence[tuple[str, tuple[int, ...]]] = (),
    ) -> None:
        self._columns = validate_view(view, depth, columns)
        self.specializations: tuple[str, ...] = tuple(specializations)
        self.dynamic_dims: tuple[tuple[str, tuple[int, ...]], ...] = tuple(dynamic_dims)
        self.model_name = model_name
        self.rows: tuple[LayerRow, ...] = tuple(rows)
        self.nodes: tuple[NodeRow, ...] = tuple(nodes)
        if totals is None:
            totals = ModelTotals(sum(row.parameters for row in self.rows), sum(row.parameter_bytes for row in self.rows))
        self.totals = totals
        self.view = view
        self.depth = depth

    @property
    def columns(self) -> tuple[str, ...]:
        """Keys of the columns the current view prints."""
        return tuple(column.key for column in self._columns)

    def __iter__(self) -> Iterator[LayerRow]:
        return iter(self.rows)

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def total_parameters(self) -> int:
        """Parameter elements owned by the materialized modules."""
        return sum(row.parameters for row in self.rows)

    @property
    def total_parameter_bytes(self) -> int:
        """Bytes taken by the parameters of the materialized modules."""
        return sum(row.parameter_bytes for row in self.rows)

    def lazy_view(self, columns: Sequence[str] | None = None) -> ShapeReport:
        """Return this report in the lazy view: one row per materialized layer.

        Args:
            columns: column keys to print, in order, from ``layer``, ``call_sites``,
                ``class``, ``inferred``, ``from``, ``output``, ``input_shape``,
                ``output_shape``, ``dtype``, ``params``. None prints them all.

        Raises:
            ReportError: an unknown column; the message lists the valid ones.
        """
        return self._with_view("lazy", None, columns)

    def graph_view(self, depth: int | None = None, columns: Sequence[str] | None = None) -> ShapeReport:
        """Return this report in the graph view: one row per graph node.

        Args:
            depth: when given, nodes created inside modules nested ``depth`` or more
                levels deep collapse into one row per call of their module at that level,
                showing the shapes leaving the call and the parameters inside it. Modules
                above that level get a header row, and their nodes are indented under it.
            columns: column keys to print, in order, from ``node``, ``op``, ``target``,
                ``module``, ``output_shape``, ``dtype``, ``params``. None prints them all.

        Raises:
            ReportError: an unknown column, or a depth that is not a positive int.

        Example:
            >>> import torch, fxlazy
            >>> model = torch.nn.Sequential(torch.nn.LazyLinear(4), torch.nn.ReLU())
            >>> report = fxlazy.shape_report(model, torch.randn(2, 3))
            >>> print(report.graph_view(columns=["node", "op", "output_shape", "params"]))
            node     op           output shape      params
            -------  -----------  --------------  --------
            input_1  placeholder  (2, 3)                 -
            _0       call_module  (2, 4)                16
            _1       call_module  (2, 4)                 -
            output   output       (2, 4)                 -
            Sequential: 4 graph nodes, 16 parameters (64 bytes).
        """
        return self._with_view("graph", depth, columns)

    def _with_view(self, view: str, depth: int | None, columns: Sequence[str] | None) -> ShapeReport:
        return ShapeReport(
            self.model_name,
            self.rows,
            self.nodes,
            self.totals,
            view=view,
            depth=depth,
            columns=columns,
            specializations=self.specializations,
            dynamic_dims=self.dynamic_dims,
        )

    def _table(self) -> Table:
        collected = CollectedRows(
            self.model_name, self.rows, self.nodes, self.totals, self.specializations, self.dynamic_dims
        )
        return build_table(collected, self.view, self.depth, self._columns)

    def table_rows(self) -> list[list[str]]:
        """Return the rows of the current view as the strings printed in the table."""
        table = self._table()
        return [
            [f"{value:,}" if isinstance(value, int) else value for value in cells.values()]
            for cells in table.rows
        ]

    def to_string(self, tablefmt: str = "simple") -> str:
        """Render the current view as a ``tabulate`` table, followed by its totals lines.

        Args:
            tablefmt: any ``tabulate`` format, such as ``simple``, ``grid``, ``github``
                or ``rst``.

        Returns:
            The table and the totals lines, without a trailing newline.

        Raises:
            ReportError: an unknown format; the message lists the valid ones.
        """
        return render_text(self._table(), tablefmt)

    def to_markdown(self) -> str:
        """Render the current view as a Markdown pipe table, with the totals as paragraphs below it."""
        return render_markdown(self._table())

    def to_csv(self) -> str:
        """Render the rows of the current view as CSV.

        The header row contains the column keys. Parameter counts are plain integers, and
        the totals lines are left out, so every line after the header is one row.
        """
        return render_csv(self._table())

    def to_html(self) -> str:
        """Render the current view as an HTML table, with the totals as paragraphs below it."""
        return render_html(self._table())

    def _repr_html_(self) -> str:
        return self.to_html()

    def to_dict(self) -> dict[str, Any]:
        """Return every layer, node and total as plain JSON-compatible values.

        The layout is the same for either view: ``schema`` (``"fxlazy.shape_report"``),
        ``version`` (:data:`REPORT_SCHEMA_VERSION`), ``model``, ``layers``, ``nodes`` and
        ``totals``. Shapes are lists of ints and dtypes names such as ``"float32"``.
        docs/report-schema.md in the repository describes every key.

        Example:
            >>> import torch, fxlazy
            >>> report = fxlazy.shape_report(torch.nn.Sequential(torch.nn.LazyLinear(4)), torch.randn(2, 3))
            >>> data = report.to_dict()
            >>> data["version"], data["layers"][0]["inferred"], data["totals"]["parameters"]
            (1, {'in_features': 3}, 16)
        """
        return {
            "schema": _SCHEMA_NAME,
            "version": REPORT_SCHEMA_VERSION,
            "model": self.model_name,
            "specializations": list(self.specializations),
            "dynamic_dims": {name: list(dims) for name, dims in self.dynamic_dims},
            "layers": [_layer_dict(row) for row in self.rows],
            "nodes": [_node_dict(node) for node in self.nodes],
            "totals": {
                "layers": len(self.rows),
                "layer_parameters": self.total_parameters,
                "layer_parameter_bytes": self.total_parameter_bytes,
                "parameters": self.totals.parameters,
                "parameter_bytes": self.totals.parameter_bytes,
                "unused_parameters": self.totals.unused_parameters,
                "unused_parameter_bytes": self.totals.unused_parameter_bytes,
                "unused_modules": list(self.totals.unused_modules),
            },
        }

    def to_json(self, indent: int | None = 2) -> str:
        """Return :meth:`to_dict` as a JSON document; ``indent`` as in ``json.dumps``."""
        return json.dumps(self.to_dict(), indent=indent)

    def __str__(self) -> str:
        return self.to_string()

    def __repr__(self) -> str:
        depth = f", depth={self.depth}" if self.depth is not None else ""
        return (
            f"ShapeReport(model_name={self.model_name!r}, rows={len(self.rows)}, "
            f"nodes={len(self.nodes)}, view={self.view!r}{depth})"
        )


def _shapes_list(shapes: Sequence[tuple[int, ...]]) -> list[list[int]]:
    return [list(shape) for shape in shapes]


def _layer_dict(row: LayerRow) -> dict[str, Any]:
    return {
        "name": row.name,
        "call_sites": list(row.call_sites),
        "lazy_class": row.lazy_class,
        "concrete_class": row.concrete_class,
        "inferred": dict(row.inferred),
        "source": row.source,
        "output": {"argument": row.output[0], "value": row.output[1]} if row.output else None,
        "input_shapes": _shapes_list(row.input_shapes),
        "output_shapes": _shapes_list(row.output_shapes),
        "dtype": row.dtype,
        "parameters": row.parameters,
        "parameter_bytes": row.parameter_bytes,
    }


def _node_dict(node: NodeRow) -> dict[str, Any]:
    return {
        "name": node.name,
        "op": node.op,
        "target": node.target,
        "module": node.module,
        "module_stack": [{"path": frame.path, "class": frame.class_name} for frame in node.module_stack],
        "inputs": list(node.inputs),
        "output_shapes": _shapes_list(node.output_shapes),
        "dtypes": list(node.dtypes),
        "parameters": node.parameters,
        "parameter_bytes": node.parameter_bytes,
        "shared": node.shared,
    }


def shape_report(
    model: nn.Module,
    example: Any = None,
    *,
    example_kwargs: Mapping[str, Any] | None = None,
) -> ShapeReport:
    """Build the shape report of a materialized GraphModule, or of a lazy model and its example.

    Args:
        model: a GraphModule returned by :func:`fxlazy.materialize` (or a deep copy of
            it), or any model together with ``example``.
        example: when given, ``model`` is materialized from a private copy with this
            example, as :func:`fxlazy.materialize` takes it, and reported. The model and
            the global random state are left unchanged.
        example_kwargs: keyword forward arguments for that materialization.

    Returns:
        A :class:`ShapeReport` in the lazy view, with one row per materialized module in
        the order of their first calls, and every graph node in ``report.nodes``.

    Raises:
        ReportError: no example was given and ``model`` is not a GraphModule whose
            nodes carry shapes.
        FxLazyError: with an example, any error of :func:`fxlazy.materialize`.

    Example:
        >>> import torch, fxlazy
        >>> model = torch.nn.Sequential(torch.nn.LazyLinear(4))
        >>> report = fxlazy.shape_report(fxlazy.materialize(model, torch.randn(2, 3)))
        >>> report.rows[0].inferred, report.rows[0].source, report.total_parameters
        ({'in_features': 3}, 'last input dim', 16)
        >>> print(report.lazy_view(columns=["layer", "class", "inferred", "output_shape", "params"]))
        layer    class                 inferred       output shape      params
        -------  --------------------  -------------  --------------  --------
        0        LazyLinear -> Linear  in_features=3  (2, 4)                16
        Sequential: 1 lazy layer materialized, 16 parameters (64 bytes) in them.
        Whole model: 16 parameters (64 bytes).
    """
    if example is not None or example_kwargs is not None:
        # The report shows no parameter values, so a fixed seed keeps the caller's
        # random state untouched at no cost.
        gm = materialize(model, () if example is None else example, example_kwargs=example_kwargs, seed=0)
    elif isinstance(model, torch.fx.GraphModule) and has_shapes(model):
        gm = model
    elif isinstance(model, torch.fx.GraphModule):
        raise ReportError(
            f"The GraphModule {type(model).__name__} has no tensor_meta on its nodes, so it has no "
            "shapes to report. Pass the GraphModule fxlazy.materialize returned (pickling drops "
            "node.meta), or pass the model with an example: fxlazy.shape_report(model, example)."
        )
    else:
        raise ReportError(
            f"{type(model).__name__} is not a GraphModule, so the report needs an example input to "
            "infer shapes from. Pass one, as to fxlazy.materialize: fxlazy.shape_report(model, example)."
        )
    collected = collect_rows(gm)
    return ShapeReport(
        collected.model_name,
        collected.layers,
        collected.nodes,
        collected.totals,
        specializations=collected.specializations,
        dynamic_dims=collected.dynamic_dims,
    )
