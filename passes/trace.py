"""Trace a model with torch.fx, keeping every lazy module as one call_module node.

The default tracer treats only torch.nn's own modules as leaves and traces into all
others, which would run a user's ``LazyModuleMixin`` subclass on fx Proxies. Here every
``LazyModuleMixin``, and every module that owns uninitialized tensors, is a leaf.
Non-tensor example values (None, Python scalars) are specialized through
``concrete_args`` and their placeholders removed afterwards, so the graph's inputs are
exactly the example's tensors.
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Iterable, Mapping, Set
from dataclasses import dataclass
from typing import Any

import torch
import torch.fx
from torch import nn
from torch.fx.graph import CodeGen, _PyTreeCodeGen
from torch.fx.proxy import TraceError
from torch.utils import _pytree as pytree

from fxlazy.errors import ModuleCreatedInForwardError, UntraceableModelError

from .leaf_tracer import LazyLeafTracer, attributes_restored
from .source import user_frame_of_traceback
from .specialize import SpecializingTracer, remove_unused_conditions

__all__ = ["LazyLeafTracer", "TraceResult", "trace_with_lazy_leaves", "stack_traces_by_node"]


@dataclass(frozen=True)
class TraceResult:
    """A traced graph and what the trace learned about the model.

    Attributes:
        graph: the traced graph.
        traced_through: qualified names of the modules whose forward the graph inlines.
        specializations: the shape-dependent conditions resolved with the example's
            values, each as its source line and value; empty for a general trace.
    """

    graph: torch.fx.Graph
    traced_through: frozenset[str]
    specializations: tuple[str, ...] = ()


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


def _module_built_in_forward(error: Exception) -> nn.Module | None:
    """Return the module whose ``__init__`` or first call failed the trace, if forward built it.

    A module built in forward is not a submodule of the model. torch.fx then fails
    either inside its ``__init__`` (its widths are Proxies) or when it is called.
    """
    tb = error.__traceback__
    while tb is not None:
        frame = tb.tb_frame
        candidate = frame.f_locals.get("self") if frame.f_code.co_name == "__init__" else None
        if isinstance(candidate, nn.Module):
            return candidate
        if frame.f_code.co_name == "path_of_module" and isinstance(frame.f_locals.get("mod"), nn.Module):
            return frame.f_locals["mod"]
        tb = tb.tb_next
    return None


def _untraceable_error(root: nn.Module, error: Exception, shapes_known: bool) -> UntraceableModelError:
    location = user_frame_of_traceback(error.__traceback__)
    where = f"\n  at {location}" if location else ""
    built = _module_built_in_forward(error)
    if built is not None:
        class_name = type(built).__name__
        lazy_class = getattr(nn, f"Lazy{class_name}", None)
        suggestion = f", or nn.{lazy_class.__name__}, which infers its input width at the first call" if lazy_class else ""
        return ModuleCreatedInForwardError(
            f"{type(root).__name__}.forward builds a {class_name} on every call{where}\n"
            "Its weights are new random values at each call, and it is not a submodule, so no "
            "optimizer, state_dict or tracer sees it. Create it once in __init__ and call it in "
            f"forward: an nn.{class_name} with its widths written out{suggestion}."
        )
    if isinstance(error, TraceError) and shapes_known:
        remedy = (
            "Python control flow that depends on tensor values (if, while or assert on a "
            "tensor's contents) cannot be traced. Conditions on shapes were resolved with the "
            "example's shapes, so this one reads values. Rewrite the branch with tensor "
            "operations such as torch.where, decide it with a plain Python flag set when the "
            "model is built, or keep the submodule that contains it as one node with "
            "materialize(..., leaf_modules=[name])."
        )
    elif isinstance(error, TraceError):
        remedy = (
            "Python control flow that depends on tensor shapes or values (if, while, assert) "
            "cannot be traced without an example. Pass an example input, which resolves "
            "conditions on shapes, or rewrite the branch with tensor operations such as torch.where."
        )
    else:
        remedy = (
            "If forward raises this on purpose for inputs like the example, pass an example it "
            "accepts. Otherwise: torch.fx passes Proxy objects in place of tensors, so code that "
            "needs concrete values (int() or float() of a tensor, .item(), .tolist(), NumPy "
            "conversion) cannot be traced. Compute the value with tensor operations, move that "
            "code out of forward, or keep the submodule that contains it as one node with "
            "materialize(..., leaf_modules=[name])."
        )
    return UntraceableModelError(
        f"torch.fx cannot trace {type(root).__name__}.forward: {type(error).__name__}: {error}{where}\n{remedy}"
    )


def _run_tracer(tracer: LazyLeafTracer, root: nn.Module, concrete_args: Mapping[str, Any]) -> torch.fx.Graph:
    with warnings.catch_warnings():
        # fx warns when it cannot check a specialized value of an unfamiliar type.
        # The placeholder it would check is removed afterwards, so nothing is lost.
        warnings.filterwarnings("ignore", message="Was not able to add assertion", category=UserWarning)
        with attributes_restored(root):
            return tracer.trace(root, concrete_args=dict(concrete_args) or None)


def trace_with_lazy_leaves(
    root: nn.Module,
    concrete_args: Mapping[str, Any],
    record_stack_traces: bool = False,
    example_tensors: Mapping[str, torch.Tensor] | None = None,
    leaf_modules: Iterable[str | type] = (),
) -> TraceResult:
    """Trace ``root.forward``, specializing the arguments in ``concrete_args``.

    Every other argument of ``forward`` becomes a tensor input of the graph. When
    forward branches on a tensor's shape and ``example_tensors`` is given, the model is
    traced again with the branches the example takes (see ``passes/specialize.py``).

    Raises:
        UntraceableModelError: torch.fx failed; the message names the user's source line.
    """
    tracer = LazyLeafTracer(record_stack_traces, leaf_modules)
    try:
        graph = _run_tracer(tracer, root, concrete_args)
    except TraceError as error:
        if example_tensors is None:
            raise _untraceable_error(root, error, shapes_known=False) from error
        tracer = SpecializingTracer(example_tensors, concrete_args, record_stack_traces, leaf_modules)
        try:
            graph = _run_tracer(tracer, root, concrete_args)
        except Exception as specialized_error:
            raise _untraceable_error(root, specialized_error, shapes_known=True) from specialized_error
        remove_unused_conditions(graph)
    except Exception as error:
        raise _untraceable_error(root, error, shapes_known=example_tensors is not None) from error

    tensor_inputs = {
        name for name in inspect.signature(root.forward).parameters if name not in concrete_args
    }
    _remove_specialized_placeholders(graph, tensor_inputs)
    _use_plain_codegen(graph)
    _drop_input_and_output_annotations(graph)
    decisions = tuple(getattr(tracer, "decisions", ()))
    return TraceResult(graph, frozenset(tracer.traced_through), decisions)


def stack_traces_by_node(
    root: nn.Module,
    concrete_args: Mapping[str, Any],
    example_tensors: Mapping[str, torch.Tensor] | None = None,
    leaf_modules: Iterable[str | type] = (),
) -> dict[str, str | None]:
    """Trace ``root`` again with stack recording and return each node's stack trace by node name.

    Tracing is deterministic, so the node names equal those of the first trace.
    """
    graph = trace_with_lazy_leaves(root, concrete_args, True, example_tensors, leaf_modules).graph
    return {node.name: node.stack_trace for node in graph.nodes}
