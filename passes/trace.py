"""Trace a model with torch.fx, keeping every lazy module as one call_module node.

The default tracer treats only torch.nn's own modules as leaves and traces into all
others, which would run a user's ``LazyModuleMixin`` subclass on fx Proxies. Here every
``LazyModuleMixin``, and every module that owns uninitialized tensors, is a leaf. Non-tensor example values (None, Python scalars) are
specialized through ``concrete_args`` and their placeholders removed afterwards, so the
graph's inputs are exactly the example's tensors.
"""

from __future__ import annotations

import contextlib
import inspect
import warnings
from collections.abc import Iterator, Mapping, Set
from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.fx
from torch import nn
from torch.fx.graph import CodeGen, _PyTreeCodeGen
from torch.fx.proxy import TraceError
from torch.nn.modules.lazy import LazyModuleMixin
from torch.utils import _pytree as pytree

from fxlazy.errors import UntraceableModelError

from .source import user_frame_of_traceback
from .widths import owns_uninitialized_tensors

__all__ = ["LazyLeafTracer", "TraceResult", "trace_with_lazy_leaves", "stack_traces_by_node"]


class LazyLeafTracer(torch.fx.Tracer):
    """An fx Tracer whose leaves are torch.nn's modules and every lazy module.

    It collects the qualified names of the modules it traced through (the root is one
    of them, as ``""``). With ``record_stack_traces`` it also stores the user's stack on
    each node, which costs about as much as the rest of tracing, so materialize records
    stacks only when it reports an error.
    """

    def __init__(self, record_stack_traces: bool = False) -> None:
        super().__init__()
        self.record_stack_traces = record_stack_traces
        self.traced_through: set[str] = {""}

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        # A module that owns uninitialized tensors initializes them in its own forward
        # or forward pre-hook, which must run on real tensors, never on Proxies.
        if isinstance(m, LazyModuleMixin) or owns_uninitialized_tensors(m):
            return True
        return super().is_leaf_module(m, module_qualified_name)

    def call_module(
        self, m: nn.Module, forward: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        qualified_name = self.path_of_module(m)
        if not self.is_leaf_module(m, qualified_name):
            self.traced_through.add(qualified_name)
        return super().call_module(m, forward, args, kwargs)


@dataclass(frozen=True)
class TraceResult:
    """A traced graph and the qualified names of the modules whose forward it inlines."""

    graph: torch.fx.Graph
    traced_through: frozenset[str]


def _remove_specialized_placeholders(graph: torch.fx.Graph, tensor_inputs: Set[str]) -> None:
    """Erase every placeholder that is not a tensor input, with the checks fx adds for it.

    fx keeps a placeholder named ``<argument>_<n>`` for each leaf of a concrete argument
    and checks its value with ``_assert_is_none`` or ``torch._assert``. Those checks take
    ``object`` arguments, which TorchScript rejects, and the specialized value is already
    baked into the graph, so the checks are their only users.
    """
    order = {node: index for index, node in enumerate(graph.nodes)}
    for node in list(graph.nodes):
        if node.op != "placeholder" or node.target in tensor_inputs:
            continue
        pending = list(node.users)
        checks: list[torch.fx.Node] = []
        while pending:
            user = pending.pop()
            if user not in checks:
                checks.append(user)
                pending.extend(user.users)
        # Erase consumers before producers: users come later in graph order.
        for check in sorted(checks, key=order.__getitem__, reverse=True):
            graph.erase_node(check)
        graph.erase_node(node)


def _use_plain_codegen(graph: torch.fx.Graph) -> None:
    """Replace the pytree code generation fx picks when a concrete argument is a container.

    With a tuple, list or dict among the concrete arguments, fx flattens all inputs and
    outputs and generates a forward that takes every original argument again. Once the
    specialized placeholders are gone, the graph takes only tensors, so the output is
    rebuilt in its original structure and the plain code generation is used.
    """
    codegen = graph._codegen
    if not isinstance(codegen, _PyTreeCodeGen):
        return
    out_spec = codegen.pytree_info.out_spec
    if out_spec is not None:
        output = next(node for node in graph.nodes if node.op == "output")
        output.args = (pytree.tree_unflatten(list(output.args[0]), out_spec),)
    graph._codegen = CodeGen()


def _drop_input_and_output_annotations(graph: torch.fx.Graph) -> None:
    """Clear the type annotations fx copied from the user's forward signature.

    fx writes them into the generated code under aliased names such as ``_torch_Tensor_``,
    which ``torch.jit.script`` cannot resolve (torch 2.13). Every remaining input is a
    tensor, which is what TorchScript assumes for an unannotated argument.
    """
    for node in graph.nodes:
        if node.op in ("placeholder", "output"):
            node.type = None


@contextlib.contextmanager
def _attributes_restored(root: nn.Module) -> Iterator[None]:
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
                if current.keys() != original.keys() or any(current[k] is not v for k, v in original.items()):
                    current.clear()
                    current.update(original)


def trace_with_lazy_leaves(
    root: nn.Module, concrete_args: Mapping[str, Any], record_stack_traces: bool = False
) -> TraceResult:
    """Trace ``root.forward``, specializing the arguments in ``concrete_args``.

    Every other argument of ``forward`` becomes a tensor input of the graph.

    Raises:
        UntraceableModelError: torch.fx failed; the message names the user's source line.
    """
    tracer = LazyLeafTracer(record_stack_traces)
    try:
        with warnings.catch_warnings():
            # fx warns when it cannot check a specialized value of an unfamiliar type.
            # The placeholder it would check is removed below, so nothing is lost.
            warnings.filterwarnings("ignore", message="Was not able to add assertion", category=UserWarning)
            with _attributes_restored(root):
                graph = tracer.trace(root, concrete_args=dict(concrete_args) or None)
    except Exception as error:
        location = user_frame_of_traceback(error.__traceback__)
        where = f"\n  at {location}" if location else ""
        if isinstance(error, TraceError):
            remedy = (
                "Python control flow that depends on tensor shapes or values (if, while, assert, "
                "len() on a tensor) cannot be traced. Rewrite the branch with tensor operations "
                "such as torch.where, or decide it with a plain Python flag set when the model is built."
            )
        else:
            remedy = (
                "torch.fx passes Proxy objects in place of tensors, so code that needs concrete "
                "values (int() or float() of a tensor, .item(), .tolist(), NumPy conversion) "
                "cannot be traced. Compute the value with tensor operations, or move that code "
                "out of forward."
            )
        raise UntraceableModelError(
            f"torch.fx cannot trace {type(root).__name__}.forward: {type(error).__name__}: {error}{where}\n{remedy}"
        ) from error

    tensor_inputs = {
        name for name in inspect.signature(root.forward).parameters if name not in concrete_args
    }
    _remove_specialized_placeholders(graph, tensor_inputs)
    _use_plain_codegen(graph)
    _drop_input_and_output_annotations(graph)
    return TraceResult(graph, frozenset(tracer.traced_through))


def stack_traces_by_node(root: nn.Module, concrete_args: Mapping[str, Any]) -> dict[str, str | None]:
    """Trace ``root`` again with stack recording and return each node's stack trace by node name.

    Tracing is deterministic, so the node names equal those of the first trace.
    """
    graph = trace_with_lazy_leaves(root, concrete_args, record_stack_traces=True).graph
    return {node.name: node.stack_trace for node in graph.nodes}
