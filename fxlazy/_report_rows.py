"""Collect the rows of the shape report from a GraphModule alone.

Every fact comes from the GraphModule. fxlazy writes ``tensor_meta`` and a
``LazyCallRecord`` on the nodes, and the torch.fx tracer writes ``nn_module_stack``, which
names the modules whose forward created each node. The model name is in ``gm.meta``, and
the parameters are those of its modules. All of these survive ``copy.deepcopy``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
import torch.fx
from torch import nn
from torch.fx.passes.shape_prop import TensorMetadata
from torch.utils._pytree import tree_flatten

from .passes.records import LAZY_CALL_KEY, MODEL_NAME_KEY, DYNAMIC_DIMS_KEY, SPECIALIZATIONS_KEY, TENSOR_META_KEY, LazyCallRecord

__all__ = [
    "Shape",
    "LayerRow",
    "ModuleFrame",
    "NodeRow",
    "ModelTotals",
    "CollectedRows",
    "collect_rows",
    "dtype_name",
    "has_shapes",
]

Shape = tuple[int, ...]

# The node.meta key torch.fx's Tracer writes: the modules whose forward was running when
# the node was created, outermost first, as {call key: (qualified name, class)}.
_MODULE_STACK_KEY = "nn_module_stack"


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
        call_sites: names of the graph nodes that call the module, in graph order.
        dtype: dtype of the first call's outputs, such as ``float32``; empty if unknown.
        parameter_bytes: bytes taken by the module's parameters.
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
    call_sites: tuple[str, ...] = ()
    dtype: str = ""
    parameter_bytes: int = 0

    @property
    def class_change(self) -> str:
        """The class change written as ``LazyConvTranspose2d -> ConvTranspose2d``."""
        return f"{self.lazy_class} -> {self.concrete_class}"


@dataclass(frozen=True)
class ModuleFrame:
    """One module whose forward was running when a graph node was created.

    Attributes:
        key: torch.fx's key of this call of the module. It is the qualified name, with
            ``@1``, ``@2``, ... appended for the module's later calls, so two calls of
            one module have different keys.
        path: qualified name of the module, such as ``blocks.0``.
        class_name: class name of the module when it was traced, such as ``_UpBlock``.
    """

    key: str
    path: str
    class_name: str


@dataclass(frozen=True)
class NodeRow:
    """One node of the graph.

    Attributes:
        name: node name, as in the GraphModule's generated code.
        op: torch.fx opcode: ``placeholder``, ``get_attr``, ``call_module``,
            ``call_function``, ``call_method`` or ``output``.
        target: what the node runs, written for people: ``torch.cat``,
            ``Tensor.view``, ``blocks.0.up (ConvTranspose2d)``.
        module_stack: the modules whose forward created the node, outermost first. A
            ``call_module`` node's own module is not on it.
        inputs: names of the nodes whose values the node reads.
        output_shapes: shapes of the tensors the node produces.
        dtypes: dtypes of those tensors, such as ``float32``.
        parameters: parameter elements counted at this node. A module's or attribute's
            parameters are counted at the first node that uses them.
        parameter_bytes: bytes taken by those parameters.
        shared: the node uses parameters that an earlier node already counted.
    """

    name: str
    op: str
    target: str
    module_stack: tuple[ModuleFrame, ...]
    inputs: tuple[str, ...]
    output_shapes: tuple[Shape, ...]
    dtypes: tuple[str, ...]
    parameters: int
    parameter_bytes: int
    shared: bool

    @property
    def module(self) -> str:
        """Qualified name of the innermost module whose forward created the node; ``""`` for the root."""
        return self.module_stack[-1].path if self.module_stack else ""


@dataclass(frozen=True)
class ModelTotals:
    """Parameter totals of the whole GraphModule.

    Attributes:
        parameters: elements of every parameter of the GraphModule, each counted once.
        parameter_bytes: bytes taken by them.
        unused_parameters: elements of the parameters that no graph node uses.
        unused_parameter_bytes: bytes taken by those.
        unused_modules: qualified names of the modules owning those parameters.
    """

    parameters: int
    parameter_bytes: int
    unused_parameters: int = 0
    unused_parameter_bytes: int = 0
    unused_modules: tuple[str, ...] = ()


@dataclass(frozen=True)
class CollectedRows:
    """Everything the report shows, read from one GraphModule."""

    model_name: str
    layers: tuple[LayerRow, ...]
    nodes: tuple[NodeRow, ...]
    totals: ModelTotals
    # Shape conditions the trace resolved with the example's shapes, as "source: value".
    specializations: tuple[str, ...] = ()
    # Input dims whose sizes differ across the examples, by input name.
    dynamic_dims: tuple[tuple[str, tuple[int, ...]], ...] = ()


def dtype_name(dtype: torch.dtype) -> str:
    """Write ``torch.float32`` as ``float32``."""
    return str(dtype).removeprefix("torch.")


def _tensor_metadata(value: Any) -> list[TensorMetadata]:
    """Collect the TensorMetadata records in a ``tensor_meta`` value, in order."""
    if isinstance(value, TensorMetadata):
        return [value]
    if isinstance(value, (list, tuple)):
        return [meta for item in value for meta in _tensor_metadata(item)]
    if isinstance(value, dict):
        return [meta for item in value.values() for meta in _tensor_metadata(item)]
    return []


def _output_metadata(node: torch.fx.Node) -> list[TensorMetadata]:
    return _tensor_metadata(node.meta.get(TENSOR_META_KEY))


def _input_shapes(node: torch.fx.Node) -> tuple[Shape, ...]:
    shapes: list[Shape] = []
    for argument in (*node.args, *node.kwargs.values()):
        leaves, _ = tree_flatten(argument)
        for leaf in leaves:
            if isinstance(leaf, torch.fx.Node):
                shapes.extend(tuple(meta.shape) for meta in _output_metadata(leaf))
    return tuple(shapes)


def _unique_dtypes(metadata: Iterable[TensorMetadata]) -> tuple[str, ...]:
    names: list[str] = []
    for meta in metadata:
        name = dtype_name(meta.dtype)
        if name not in names:
            names.append(name)
    return tuple(names)


def _count(parameters: Iterable[torch.Tensor]) -> tuple[int, int]:
    """Return the elements and the bytes of ``parameters``."""
    elements = 0
    size = 0
    for parameter in parameters:
        elements += parameter.numel()
        size += parameter.numel() * parameter.element_size()
    return elements, size


def _module_stack(node: torch.fx.Node) -> tuple[ModuleFrame, ...]:
    stack = node.meta.get(_MODULE_STACK_KEY) or {}
    frames = [ModuleFrame(key, path, getattr(cls, "__name__", str(cls))) for key, (path, cls) in stack.items()]
    # The tracer pushes a leaf module before it records the leaf's call_module node.
    if node.op == "call_module" and frames and frames[-1].path == node.target:
        frames.pop()
    return tuple(frames)


def _function_name(function: Any) -> str:
    name = getattr(function, "__name__", None) or repr(function)
    module = getattr(function, "__module__", None) or ""
    # Print the names users write: operator.add is defined in _operator, getattr in builtins.
    module = {"_operator": "operator", "builtins": ""}.get(module, module)
    return f"{module}.{name}" if module else name


def _target_text(node: torch.fx.Node, gm: torch.fx.GraphModule) -> str:
    if node.op == "call_module":
        return f"{node.target} ({type(gm.get_submodule(str(node.target))).__name__})"
    if node.op == "call_method":
        return f"Tensor.{node.target}"
    if node.op == "call_function":
        text = _function_name(node.target)
        if node.target is getattr and len(node.args) > 1 and isinstance(node.args[1], str):
            text += f" .{node.args[1]}"
        return text
    return str(node.target)


def _parameters_used(node: torch.fx.Node, gm: torch.fx.GraphModule) -> list[torch.Tensor]:
    if node.op == "call_module":
        return list(gm.get_submodule(str(node.target)).parameters())
    if node.op == "get_attr":
        owner_path, _, attribute = str(node.target).rpartition(".")
        value = getattr(gm.get_submodule(owner_path), attribute, None)
        if isinstance(value, nn.Parameter):
            return [value]
        if isinstance(value, nn.Module):
            return list(value.parameters())
    return []


def _collect_nodes(gm: torch.fx.GraphModule) -> tuple[tuple[NodeRow, ...], set[int]]:
    """Return one row per node, and the ids of the parameters the nodes use."""
    counted: set[int] = set()
    rows = []
    for node in gm.graph.nodes:
        used = _parameters_used(node, gm)
        new = [p for p in used if id(p) not in counted]
        counted.update(id(p) for p in new)
        parameters, parameter_bytes = _count(new)
        metadata = _output_metadata(node)
        rows.append(NodeRow(
            name=node.name,
            op=node.op,
            target=_target_text(node, gm),
            module_stack=_module_stack(node),
            inputs=tuple(n.name for n in node.all_input_nodes),
            output_shapes=tuple(tuple(meta.shape) for meta in metadata),
            dtypes=_unique_dtypes(metadata),
            parameters=parameters,
            parameter_bytes=parameter_bytes,
            shared=bool(used) and not new,
        ))
    return tuple(rows), counted


def _collect_layers(gm: torch.fx.GraphModule) -> tuple[LayerRow, ...]:
    first_calls: dict[str, torch.fx.Node] = {}
    call_sites: dict[str, list[str]] = {}
    for node in gm.graph.nodes:
        record: LazyCallRecord | None = node.meta.get(LAZY_CALL_KEY)
        if record is None:
            continue
        call_sites.setdefault(record.module, []).append(node.name)
        if record.call_index == 0:
            first_calls[record.module] = node

    rows = []
    for name, node in first_calls.items():
        record = node.meta[LAZY_CALL_KEY]
        parameters, parameter_bytes = _count(gm.get_submodule(name).parameters())
        metadata = _output_metadata(node)
        rows.append(LayerRow(
            name=name,
            lazy_class=record.lazy_class,
            concrete_class=record.concrete_class,
            inferred=dict(record.inferred),
            source=record.source,
            output=record.output,
            input_shapes=_input_shapes(node),
            output_shapes=tuple(tuple(meta.shape) for meta in metadata),
            calls=len(call_sites[name]),
            parameters=parameters,
            call_sites=tuple(call_sites[name]),
            dtype=", ".join(_unique_dtypes(metadata)),
            parameter_bytes=parameter_bytes,
        ))
    return tuple(rows)


def _model_totals(gm: torch.fx.GraphModule, used: set[int]) -> ModelTotals:
    parameters, parameter_bytes = _count(gm.parameters())
    unused: list[torch.Tensor] = []
    owners: list[str] = []
    for name, parameter in gm.named_parameters():
        if id(parameter) in used:
            continue
        unused.append(parameter)
        owner = name.rpartition(".")[0]
        if owner not in owners:
            owners.append(owner)
    unused_parameters, unused_bytes = _count(unused)
    return ModelTotals(parameters, parameter_bytes, unused_parameters, unused_bytes, tuple(owners))


def collect_rows(gm: torch.fx.GraphModule) -> CollectedRows:
    """Read the layer rows, node rows and parameter totals of ``gm``."""
    nodes, used = _collect_nodes(gm)
    return CollectedRows(
        model_name=gm.meta.get(MODEL_NAME_KEY, type(gm).__name__),
        layers=_collect_layers(gm),
        nodes=nodes,
        totals=_model_totals(gm, used),
        specializations=tuple(gm.meta.get(SPECIALIZATIONS_KEY, ())),
        dynamic_dims=tuple(gm.meta.get(DYNAMIC_DIMS_KEY, {}).items()),
    )


def has_shapes(gm: torch.fx.GraphModule) -> bool:
    """Tell whether any node of ``gm`` carries a ``tensor_meta`` record."""
    return any(TENSOR_META_KEY in node.meta for node in gm.graph.nodes)
