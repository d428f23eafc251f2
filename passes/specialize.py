"""Trace a model whose forward branches on tensor shapes, specializing it to the example.

torch.fx raises TraceError when forward turns a Proxy into a bool, as in
``if x.shape[1] == 64:``. ``SpecializingTracer`` runs each node on meta tensors while it
records it, so such a condition has a concrete value: the example's. The tracer takes
the branch the example takes and records the decision. The graph is then valid only for
inputs that take the same branches, as with ``torch.export`` and static shapes.
Conditions on tensor values (``if x.sum() > 0:``) still fail, because meta tensors have
no values.
"""

from __future__ import annotations

import operator
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import torch
import torch.fx
from torch import nn

from .leaf_tracer import LazyLeafTracer
from .propagate import LazyShapeProp
from .source import current_user_frame
from .twins import to_meta

__all__ = ["SpecializingTracer", "remove_unused_conditions"]

# The meta value of a node that could not be computed while tracing.
_UNKNOWN = object()

# Operations a shape condition is built from. They have no side effects, so once the
# condition is resolved, the nodes computing it can go when nothing else uses them.
_CONDITION_FUNCTIONS = frozenset({
    getattr, operator.getitem, operator.eq, operator.ne, operator.lt, operator.le, operator.gt,
    operator.ge, operator.and_, operator.or_, operator.not_, operator.contains, len,
})
_CONDITION_METHODS = frozenset({"size", "dim", "numel"})


class SpecializingTracer(LazyLeafTracer):
    """A LazyLeafTracer that resolves shape-dependent Python control flow with meta values.

    Args:
        tensor_inputs: the example's tensors by forward parameter name.
        specialized: the non-tensor forward arguments by name, as given to ``concrete_args``.

    Attributes:
        decisions: one entry per resolved condition or unpacking: its user source line
            and the value the example gave it.
    """

    def __init__(
        self,
        tensor_inputs: Mapping[str, torch.Tensor],
        specialized: Mapping[str, Any],
        record_stack_traces: bool = False,
        leaf_modules: Iterable[str | type] = (),
    ) -> None:
        super().__init__(record_stack_traces, leaf_modules)
        self._meta_inputs = {name: to_meta(value) for name, value in tensor_inputs.items()}
        self._specialized = dict(specialized)
        self._shadow: LazyShapeProp | None = None
        self.decisions: list[str] = []

    def create_node(self, kind, target, args, kwargs, name=None, type_expr=None) -> torch.fx.Node:  # noqa: ANN001 - fx's signature
        node = super().create_node(kind, target, args, kwargs, name, type_expr)
        if self._shadow is None:
            self._shadow = LazyShapeProp(self.root, self.graph)
        self._shadow.env[node] = self._meta_value(node)
        return node

    def _meta_value(self, node: torch.fx.Node) -> Any:
        if node.op == "output":
            return _UNKNOWN
        if node.op == "placeholder":
            name = str(node.target).lstrip("*")
            if name in self._meta_inputs:
                return self._meta_inputs[name]
            return self._specialized.get(name, _UNKNOWN)
        if any(self._shadow.env.get(n, _UNKNOWN) is _UNKNOWN for n in node.all_input_nodes):
            return _UNKNOWN
        try:
            return self._shadow.run_node(node)
        except Exception:
            # Only conditions need the value; one that needs this node raises TraceError.
            return _UNKNOWN

    def _value_of(self, proxy: torch.fx.Proxy) -> Any:
        if self._shadow is None:
            return _UNKNOWN
        return self._shadow.env.get(proxy.node, _UNKNOWN)

    def to_bool(self, obj: torch.fx.Proxy) -> bool:
        value = self._value_of(obj)
        if value is _UNKNOWN or isinstance(value, torch.Tensor):
            # A tensor condition depends on values, which meta tensors do not have.
            return super().to_bool(obj)
        result = bool(value)
        self.decisions.append(f"{current_user_frame() or obj.node.name}: {result}")
        return result

    def iter(self, obj: torch.fx.Proxy) -> Iterator:
        value = self._value_of(obj)
        if value is _UNKNOWN or isinstance(value, torch.Tensor) or not hasattr(value, "__len__"):
            return super().iter(obj)
        self.decisions.append(f"{current_user_frame() or obj.node.name}: {len(value)} items")
        return iter([obj[index] for index in range(len(value))])

    def trace(self, root: nn.Module, concrete_args: dict[str, Any] | None = None) -> torch.fx.Graph:
        # Custom initialize_parameters code may draw random numbers on CPU while the
        # shadow runs lazy modules on meta; the caller's generator must not move.
        with torch.random.fork_rng(devices=[]):
            return super().trace(root, concrete_args)


def remove_unused_conditions(graph: torch.fx.Graph) -> None:
    """Erase the nodes that computed resolved conditions, such as ``x.shape[1] == 64``."""
    for node in reversed(list(graph.nodes)):
        if node.users:
            continue
        is_condition = (node.op == "call_function" and node.target in _CONDITION_FUNCTIONS) or (
            node.op == "call_method" and node.target in _CONDITION_METHODS
        )
        if is_condition:
            graph.erase_node(node)
