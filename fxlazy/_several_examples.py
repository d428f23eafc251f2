"""Check that several examples give a model the same widths, and find the dims that vary."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from torch import nn

from ._inputs import ExampleInputs
from .errors import ExampleInputError, SharedLazyModuleError, UntraceableModelError
from .passes.propagate import LazyShapeProp
from .passes.trace import TraceResult, stack_traces_by_node, trace_with_lazy_leaves

__all__ = ["check_examples_agree", "dynamic_dims"]


def _check_same_arguments(first: ExampleInputs, other: ExampleInputs, index: int) -> None:
    if list(other.tensors) != list(first.tensors):
        raise ExampleInputError(
            f"Example {index} passes tensors for {list(other.tensors)}, but example 0 passes them for "
            f"{list(first.tensors)}. Give every example the same tensor arguments."
        )
    if other.specialized != first.specialized:
        raise ExampleInputError(
            f"Example {index} passes the non-tensor arguments {other.specialized}, but example 0 passes "
            f"{first.specialized}. Non-tensor values are baked into the graph, so every example must "
            "give the same ones."
        )


def check_examples_agree(
    model: nn.Module,
    first: ExampleInputs,
    first_trace: TraceResult,
    first_propagation: LazyShapeProp,
    others: Sequence[ExampleInputs],
    leaf_modules: Sequence[str | type] = (),
) -> None:
    """Raise if a further example gives a lazy module another width or takes another branch.

    Each further example is traced and propagated on its own, so a model whose forward
    branches on shapes is checked along the path that example takes.
    """
    expected = first_propagation.inferred_by_module()
    for index, other in enumerate(others, start=1):
        _check_same_arguments(first, other, index)
        trace = trace_with_lazy_leaves(
            model, other.specialized, example_tensors=other.tensors, leaf_modules=leaf_modules
        )
        propagation = LazyShapeProp(
            model,
            trace.graph,
            lambda other=other: stack_traces_by_node(model, other.specialized, other.tensors, leaf_modules),
        )
        propagation.propagate(*other.tensors.values())

        for module, (inferred, node) in propagation.inferred_by_module().items():
            if module not in expected or expected[module][0] == inferred:
                continue
            first_inferred, first_node = expected[module]
            raise SharedLazyModuleError(
                f"Lazy module '{module}' gets different widths from the examples, but a lazy module "
                "fixes its widths at its first call.\n"
                f"  {_label(0)}{_arguments(first_inferred)} at node '{first_node}'\n"
                f"  {_label(index)}{_arguments(inferred)} at node '{node}'\n"
                "Use one lazy layer per width (for example one per input channel count), or "
                "materialize once per width."
            )
        if trace.specializations != first_trace.specializations or set(propagation.inferred_by_module()) != set(expected):
            raise UntraceableModelError(
                f"Example {index} takes other branches of forward than example 0, so one static graph "
                "cannot serve both.\n"
                f"  {_label(0)}{list(first_trace.specializations) or 'no shape conditions'}\n"
                f"  {_label(index)}{list(trace.specializations) or 'no shape conditions'}\n"
                "Materialize once per branch, or pass examples that take the same branches."
            )


def _label(index: int) -> str:
    return f"example {index}:".ljust(13)


def _arguments(inferred: Mapping[str, int]) -> str:
    return ", ".join(f"{name}={value}" for name, value in inferred.items()) or "no inferred arguments"


def dynamic_dims(examples: Sequence[ExampleInputs]) -> dict[str, tuple[int, ...]]:
    """Return, by tensor argument, the dims whose sizes differ across the examples."""
    result: dict[str, tuple[int, ...]] = {}
    for name, tensor in examples[0].tensors.items():
        shapes = [example.tensors[name].shape for example in examples]
        if any(len(shape) != tensor.dim() for shape in shapes):
            raise ExampleInputError(
                f"Argument '{name}' has {tensor.dim()} dims in example 0 but "
                f"{[len(shape) for shape in shapes]} across the examples. Give it the same number of dims in each."
            )
        varying = tuple(dim for dim in range(tensor.dim()) if len({shape[dim] for shape in shapes}) > 1)
        if varying:
            result[name] = varying
    return result
