"""Lay out the report's rows as a table: the lazy view, the graph view, and their totals lines.

A ``Table`` contains cell values before any output form is chosen: text for names and
shapes, ``int`` for parameter counts, so that the text forms can print ``18,464`` and
the CSV form ``18464``. The graph view with a ``depth`` groups nodes under the modules
whose forward created them, one level of ``nn_module_stack`` per depth step.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from ._report_rows import CollectedRows, LayerRow, ModuleFrame, NodeRow, Shape
from .errors import ReportError

__all__ = ["Column", "Table", "VIEWS", "COLUMNS", "MISSING", "SHARED", "build_table", "format_shapes", "validate_view"]

Cell = str | int


@dataclass(frozen=True)
class Column:
    """A table column: the key users select it by, and the title printed above it."""

    key: str
    title: str
    numeric: bool = False


_LAZY_COLUMNS = (
    Column("layer", "layer"),
    Column("call_sites", "call sites"),
    Column("class", "class"),
    Column("inferred", "inferred"),
    Column("from", "from"),
    Column("output", "output"),
    Column("input_shape", "input shape"),
    Column("output_shape", "output shape"),
    Column("dtype", "dtype"),
    Column("params", "params", numeric=True),
)

_GRAPH_COLUMNS = (
    Column("node", "node"),
    Column("op", "op"),
    Column("target", "target"),
    Column("module", "module"),
    Column("output_shape", "output shape"),
    Column("dtype", "dtype"),
    Column("params", "params", numeric=True),
)

VIEWS = ("lazy", "graph")
COLUMNS: dict[str, tuple[Column, ...]] = {"lazy": _LAZY_COLUMNS, "graph": _GRAPH_COLUMNS}

# The text cell of a missing value, and the params cell of a node whose parameters an
# earlier node already counted.
MISSING = "-"
SHARED = "shared"


@dataclass
class Table:
    """Cell values of one view, with the totals lines printed under it.

    Attributes:
        columns: the selected columns, in print order.
        rows: one dict of cells per row, keyed by column key; a missing value is ``MISSING``.
        indents: nesting level of each row; the text forms indent the first column by it.
        footer: the totals lines.
    """

    columns: tuple[Column, ...]
    rows: list[dict[str, Cell]] = field(default_factory=list)
    indents: list[int] = field(default_factory=list)
    footer: list[str] = field(default_factory=list)


def format_shapes(shapes: Sequence[Shape]) -> str:
    """Write shapes as Python tuples, ``(1, 64, 8, 8)`` or ``(6,)``, separated by commas; ``-`` for none."""
    return ", ".join(str(tuple(shape)) for shape in shapes) or MISSING


def _format_arguments(arguments: dict[str, int]) -> str:
    return ", ".join(f"{name}={value}" for name, value in arguments.items()) or MISSING


def _plural(count: int, noun: str) -> str:
    return f"{count:,} {noun}" if count == 1 else f"{count:,} {noun}s"


def validate_view(view: str, depth: int | None, columns: Sequence[str] | None) -> tuple[Column, ...]:
    """Check the view settings and return the selected columns.

    Raises:
        ReportError: an unknown view or column, an empty column list, or a depth
            that is not a positive int or is given for the lazy view.
    """
    if view not in COLUMNS:
        raise ReportError(f"Unknown report view {view!r}. Valid views: {', '.join(VIEWS)}.")
    if depth is not None:
        if view != "graph":
            raise ReportError(
                f"depth={depth!r} applies to the graph view only, which groups graph nodes under "
                "their modules. Call report.graph_view(depth=...) instead."
            )
        if isinstance(depth, bool) or not isinstance(depth, int) or depth < 1:
            raise ReportError(
                f"Invalid depth {depth!r}: pass a positive int (1 shows the model's direct "
                "submodules as one row each), or None for one row per graph node."
            )
    available = COLUMNS[view]
    if columns is None:
        return available
    if isinstance(columns, str):
        raise ReportError(f"columns must be a list of column names, not the string {columns!r}; pass [{columns!r}].")
    by_key = {column.key: column for column in available}
    unknown = [name for name in columns if name not in by_key]
    if unknown:
        raise ReportError(
            f"Unknown column(s) {', '.join(map(repr, unknown))} for the {view} view. "
            f"Valid columns: {', '.join(by_key)}."
        )
    if not columns:
        raise ReportError(f"columns is empty; select at least one of: {', '.join(by_key)}.")
    return tuple(by_key[name] for name in columns)


def _layer_cells(row: LayerRow) -> dict[str, Cell]:
    return {
        "layer": row.name,
        "call_sites": ", ".join(row.call_sites) or MISSING,
        "class": row.class_change,
        "inferred": _format_arguments(row.inferred),
        "from": row.source or MISSING,
        "output": f"{row.output[0]}={row.output[1]}" if row.output else MISSING,
        "input_shape": format_shapes(row.input_shapes),
        "output_shape": format_shapes(row.output_shapes),
        "dtype": row.dtype or MISSING,
        "params": row.parameters,
    }


def _bytes(count: int) -> str:
    return _plural(count, "byte")


def _specialization_lines(collected: CollectedRows) -> list[str]:
    """Name each shape condition the trace resolved, so readers know the graph is specialized."""
    lines = [f"Specialized to the example's shapes at {decision}" for decision in collected.specializations]
    for name, dims in collected.dynamic_dims:
        lines.append(f"Dynamic across the examples: '{name}' dims {', '.join(map(str, dims))}")
    return lines


def _lazy_footer(collected: CollectedRows) -> list[str]:
    totals = collected.totals
    layers = collected.layers
    whole_model = f"Whole model: {_plural(totals.parameters, 'parameter')} ({_bytes(totals.parameter_bytes)})."
    if not layers:
        return [f"{collected.model_name}: no lazy modules were materialized.", whole_model]
    parameters = sum(row.parameters for row in layers)
    parameter_bytes = sum(row.parameter_bytes for row in layers)
    layer_word = "layer" if len(layers) == 1 else "layers"
    return [
        f"{collected.model_name}: {len(layers)} lazy {layer_word} materialized, "
        f"{_plural(parameters, 'parameter')} ({_bytes(parameter_bytes)}) in them.",
        whole_model,
    ]


def _graph_footer(collected: CollectedRows) -> list[str]:
    totals = collected.totals
    lines = [
        f"{collected.model_name}: {_plural(len(collected.nodes), 'graph node')}, "
        f"{_plural(totals.parameters, 'parameter')} ({_bytes(totals.parameter_bytes)})."
    ]
    if any(node.shared for node in collected.nodes):
        lines.append(
            "A module used by several nodes has its parameters counted at the first of them; "
            f"the others show '{SHARED}'."
        )
    if totals.unused_parameters:
        owners = ", ".join(name or "the root module" for name in totals.unused_modules)
        lines.append(
            f"{_plural(totals.unused_parameters, 'parameter')} ({_bytes(totals.unused_parameter_bytes)}) "
            f"belong to modules no node uses: {owners}."
        )
    return lines


def _params_cell(parameters: int, shared: bool) -> Cell:
    if parameters:
        return parameters
    return SHARED if shared else MISSING


def _node_cells(row: NodeRow) -> dict[str, Cell]:
    return {
        "node": row.name,
        "op": row.op,
        "target": row.target,
        "module": row.module or MISSING,
        "output_shape": format_shapes(row.output_shapes),
        "dtype": ", ".join(row.dtypes) or MISSING,
        "params": _params_cell(row.parameters, row.shared),
    }


def _frame_cells(frame: ModuleFrame, parent: str, target: str) -> dict[str, Cell]:
    return {
        "node": frame.path,
        "op": "module",
        "target": target,
        "module": parent or MISSING,
        "output_shape": "",
        "dtype": "",
        "params": "",
    }


def _group_cells(frame: ModuleFrame, parent: str, members: list[NodeRow], users: dict[str, set[str]]) -> dict[str, Cell]:
    """Cells of one collapsed call of a module: what leaves it, and the parameters inside it."""
    names = {member.name for member in members}
    leaving = [member for member in members if users[member.name] - names]
    dtypes: list[str] = []
    for member in leaving:
        dtypes.extend(dtype for dtype in member.dtypes if dtype not in dtypes)
    parameters = sum(member.parameters for member in members)
    cells = _frame_cells(frame, parent, f"{frame.class_name} ({_plural(len(members), 'node')})")
    cells["output_shape"] = format_shapes([shape for member in leaving for shape in member.output_shapes])
    cells["dtype"] = ", ".join(dtypes) or MISSING
    cells["params"] = _params_cell(parameters, any(member.shared for member in members))
    return cells


def _grouped_rows(nodes: Sequence[NodeRow], depth: int) -> tuple[list[dict[str, Cell]], list[int]]:
    """Lay out nodes under their modules, collapsing each call of a module at ``depth``.

    A node created ``k`` modules deep is a row of its own when ``k < depth``, under one
    header row per enclosing module call. Nodes deeper than that collapse into one row
    per call of their enclosing module at ``depth``.
    """
    users: dict[str, set[str]] = {node.name: set() for node in nodes}
    for node in nodes:
        for name in node.inputs:
            users[name].add(node.name)

    rows: list[dict[str, Cell]] = []
    indents: list[int] = []
    open_keys: list[str] = []
    group_key: str | None = None
    members: list[NodeRow] = []

    def close_group() -> None:
        nonlocal group_key, members
        if group_key is not None:
            frame = members[0].module_stack[depth - 1]
            parent = members[0].module_stack[depth - 2].path if depth > 1 else ""
            rows.append(_group_cells(frame, parent, members, users))
            indents.append(depth - 1)
        group_key, members = None, []

    for node in nodes:
        stack = node.module_stack
        headers = stack[: depth - 1] if len(stack) >= depth else stack
        in_group = len(stack) >= depth
        if in_group and group_key == stack[depth - 1].key and open_keys == [f.key for f in headers]:
            members.append(node)
            continue
        close_group()

        # Open a header row for each enclosing module call not open yet.
        common = 0
        while common < min(len(open_keys), len(headers)) and open_keys[common] == headers[common].key:
            common += 1
        for level in range(common, len(headers)):
            parent = headers[level - 1].path if level else ""
            rows.append(_frame_cells(headers[level], parent, headers[level].class_name))
            indents.append(level)
        open_keys = [frame.key for frame in headers]

        if in_group:
            group_key, members = stack[depth - 1].key, [node]
        else:
            rows.append(_node_cells(node))
            indents.append(len(stack))
    close_group()
    return rows, indents


def build_table(collected: CollectedRows, view: str, depth: int | None, columns: tuple[Column, ...]) -> Table:
    """Return the cells of ``view`` for the selected columns, with its totals lines."""
    if view == "lazy":
        rows = [_layer_cells(row) for row in collected.layers]
        indents = [0] * len(rows)
        footer = _lazy_footer(collected) + _specialization_lines(collected)
    elif depth is None:
        rows = [_node_cells(node) for node in collected.nodes]
        indents = [0] * len(rows)
        footer = _graph_footer(collected) + _specialization_lines(collected)
    else:
        rows, indents = _grouped_rows(collected.nodes, depth)
        footer = _graph_footer(collected) + _specialization_lines(collected)
    keys = [column.key for column in columns]
    selected = [{key: row[key] for key in keys} for row in rows]
    return Table(columns, selected, indents, footer)
