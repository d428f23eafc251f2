"""The shape report: what fxlazy inferred for each lazy module, as a table.

The report is rebuilt from the GraphModule alone: each call of a materialized module
carries a ``LazyCallRecord`` in ``node.meta``, and every node its ``tensor_meta``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.fx
from tabulate import tabulate
from torch.fx.passes.shape_prop import TensorMetadata
from torch.utils._pytree import tree_flatten

from .passes.records import LAZY_CALL_KEY, MODEL_NAME_KEY, TENSOR_META_KEY, LazyCallRecord

__all__ = ["LayerRow", "ShapeReport", "shape_report"]

Shape = tuple[int, ...]


@dataclass(frozen=True)
class LayerRow:
    """One materialized module of the report.

    Attributes:
        name: qualified name in the model, such as ``decoder.up1``.
        lazy_class: class name before materialization.
        concrete_class: class name after materialization.
        inferred: the inferred constructor arguments, such as ``{"in_channels": 64}``.
        source: where they were read, such as ``input dim 1`` or ``last input dim``.
        output: the argument that fixes the output width, with its value, if known.
        input_shapes: tensor input shapes of the first call.
        output_shapes: tensor output shapes of the first call.
        calls: how many graph nodes call the module.
        parameters: number of parameter elements the module owns.
    """

    name: str
    lazy_class: str
    concrete_class: str
    inferred: dict[str, int]
    source: str
    output: tuple[str, int] | None
    input_shapes: tuple[Shape, ...]
    output_shapes: tuple[Shape, ...]
    calls: int
    parameters: int

    @property
    def class_change(self) -> str:
        """The class change written as ``LazyConvTranspose2d -> ConvTranspose2d``."""
        return f"{self.lazy_class} -> {self.concrete_class}"


_HEADERS = ("layer", "class", "inferred", "from", "output", "input shape", "output shape", "params")


def _format_arguments(arguments: dict[str, int]) -> str:
    return ", ".join(f"{k}={v}" for k, v in arguments.items()) or "-"


def _format_shapes(shapes: tuple[Shape, ...]) -> str:
    return ", ".join(f"({', '.join(map(str, s))})" for s in shapes) or "-"


class ShapeReport:
    """The layers fxlazy materialized, printable as a ``tabulate`` table.

    ``str(report)`` renders the table with a totals line; ``report.rows`` contains
    the data. Build it with :func:`shape_report`.
    """

    def __init__(self, model_name: str, rows: list[LayerRow]) -> None:
        self.model_name = model_name
        self.rows: tuple[LayerRow, ...] = tuple(rows)

    def __iter__(self) -> Iterator[LayerRow]:
        return iter(self.rows)

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def total_parameters(self) -> int:
        """Parameter elements owned by the materialized modules."""
        return sum(row.parameters for row in self.rows)

    def table_rows(self) -> list[list[str]]:
        """Return the rows as the strings printed in the table, one list per layer."""
        table = []
        for row in self.rows:
            output = f"{row.output[0]}={row.output[1]}" if row.output else "-"
            calls = f" ({row.calls} calls)" if row.calls > 1 else ""
            table.append([
                row.name + calls,
                row.class_change,
                _format_arguments(row.inferred),
                row.source,
                output,
                _format_shapes(row.input_shapes),
                _format_shapes(row.output_shapes),
                f"{row.parameters:,}",
            ])
        return table

    def to_string(self, tablefmt: str = "simple") -> str:
        """Render the table in a ``tabulate`` format, followed by a totals line."""
        if not self.rows:
            return f"{self.model_name}: no lazy modules were materialized."
        table = tabulate(self.table_rows(), headers=_HEADERS, tablefmt=tablefmt, disable_numparse=True)
        layers = "layer" if len(self.rows) == 1 else "layers"
        return (
            f"{table}\n{self.model_name}: {len(self.rows)} lazy {layers} materialized, "
            f"{self.total_parameters:,} parameters in them."
        )

    def __str__(self) -> str:
        return self.to_string()

    def __repr__(self) -> str:
        return f"ShapeReport(model_name={self.model_name!r}, rows={len(self.rows)})"


def _tensor_shapes(value: Any) -> tuple[Shape, ...]:
    """Collect the shapes of the TensorMetadata records in a ``tensor_meta`` value."""
    if isinstance(value, TensorMetadata):
        return (tuple(value.shape),)
    if isinstance(value, (list, tuple)):
        return tuple(shape for item in value for shape in _tensor_shapes(item))
    if isinstance(value, dict):
        return tuple(shape for item in value.values() for shape in _tensor_shapes(item))
    return ()


def _input_shapes(node: torch.fx.Node) -> tuple[Shape, ...]:
    shapes: list[Shape] = []
    for argument in (*node.args, *node.kwargs.values()):
        leaves, _ = tree_flatten(argument)
        for leaf in leaves:
            if isinstance(leaf, torch.fx.Node) and TENSOR_META_KEY in leaf.meta:
                shapes.extend(_tensor_shapes(leaf.meta[TENSOR_META_KEY]))
    return tuple(shapes)


def shape_report(gm: torch.fx.GraphModule) -> ShapeReport:
    """Build the shape report of a GraphModule returned by :func:`fxlazy.materialize`.

    Args:
        gm: the materialized GraphModule, or a deep copy of it.

    Returns:
        A :class:`ShapeReport` with one row per materialized module, in the order of
        their first calls.

    Example:
        >>> import torch, fxlazy
        >>> model = torch.nn.Sequential(torch.nn.LazyLinear(4))
        >>> report = fxlazy.shape_report(fxlazy.materialize(model, torch.randn(2, 3)))
        >>> report.rows[0].inferred, report.rows[0].source, report.total_parameters
        ({'in_features': 3}, 'last input dim', 16)
    """
    first_calls: dict[str, torch.fx.Node] = {}
    call_counts: dict[str, int] = {}
    for node in gm.graph.nodes:
        record: LazyCallRecord | None = node.meta.get(LAZY_CALL_KEY)
        if record is None:
            continue
        call_counts[record.module] = call_counts.get(record.module, 0) + 1
        if record.call_index == 0:
            first_calls[record.module] = node

    rows = []
    for name, node in first_calls.items():
        record = node.meta[LAZY_CALL_KEY]
        module = gm.get_submodule(name)
        rows.append(LayerRow(
            name=name,
            lazy_class=record.lazy_class,
            concrete_class=record.concrete_class,
            inferred=dict(record.inferred),
            source=record.source,
            output=record.output,
            input_shapes=_input_shapes(node),
            output_shapes=_tensor_shapes(node.meta.get(TENSOR_META_KEY)),
            calls=call_counts[name],
            parameters=sum(p.numel() for p in module.parameters()),
        ))
    return ShapeReport(gm.meta.get(MODEL_NAME_KEY, type(gm).__name__), rows)
