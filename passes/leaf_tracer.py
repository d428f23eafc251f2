"""The torch.fx Tracer fxlazy traces with: every lazy module is one call_module node."""

from __future__ import annotations

import contextlib
import operator
from collections.abc import Iterable, Iterator

import torch
import torch.fx
from torch import nn
from torch.nn.modules.lazy import LazyModuleMixin

from .widths import owns_uninitialized_tensors

__all__ = ["LazyLeafTracer", "attributes_restored"]


class LazyLeafTracer(torch.fx.Tracer):
    """An fx Tracer whose leaves are torch.nn's modules, every lazy module and the user's leaves.

    ``leaf_modules`` names further leaves by qualified name or by class.

    It collects the qualified names of the modules it traced through (the root is one
    of them, as ``""``). With ``record_stack_traces`` it also stores the user's stack on
    each node, which costs about as much as the rest of tracing, so materialize records
    stacks only when it reports an error.
    """

    def __init__(self, record_stack_traces: bool = False, leaf_modules: Iterable[str | type] = ()) -> None:
        super().__init__()
        self.record_stack_traces = record_stack_traces
        self.traced_through: set[str] = {""}
        leaves = tuple(leaf_modules)
        self._leaf_names = frozenset(leaf for leaf in leaves if isinstance(leaf, str))
        self._leaf_types = tuple(leaf for leaf in leaves if isinstance(leaf, type))

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        # fx calls this once per module call, from call_module, so a module that is not a
        # leaf here is exactly one the graph inlines.
        leaf = self._is_leaf(m, module_qualified_name)
        if not leaf:
            self.traced_through.add(module_qualified_name)
        return leaf

    def _is_leaf(self, m: nn.Module, module_qualified_name: str) -> bool:
        # A module that owns uninitialized tensors initializes them in its own forward
        # or forward pre-hook, which must run on real tensors, never on Proxies.
        if isinstance(m, LazyModuleMixin) or owns_uninitialized_tensors(m):
            return True
        if module_qualified_name in self._leaf_names or isinstance(m, self._leaf_types):
            return True
        return super().is_leaf_module(m, module_qualified_name)


@contextlib.contextmanager
def attributes_restored(root: nn.Module) -> Iterator[None]:
    """Undo attribute assignments that forward makes on the model's modules while traced.

    Tracing runs the user's forward on Proxies. A forward that stores something on
    ``self`` (a cache, a counter) would otherwise leave a Proxy in the user's model.
    """
    saved = [
        (module, dict(module.__dict__), dict(module._parameters), dict(module._buffers), dict(module._modules))
        for module in root.modules()
    ]
    try:
        yield
    finally:
        for module, attributes, parameters, buffers, children in saved:
            for current, original in (
                (module.__dict__, attributes),
                (module._parameters, parameters),
                (module._buffers, buffers),
                (module._modules, children),
            ):
                # Same keys in the same order, each holding the same object as before.
                if current.keys() != original.keys() or any(map(operator.is_not, current.values(), original.values())):
                    current.clear()
                    current.update(original)
