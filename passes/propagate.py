"""Propagate shapes through a traced graph on meta tensors, resolving lazy modules on the way.

``LazyShapeProp`` is a torch.fx Interpreter that runs every node on meta tensors, so no
real compute happens and no memory is spent on activations. Each call_module node runs
the module's meta twin instead of the module itself, which leaves the modules of the
graph untouched. A lazy module's twin initializes itself on meta at its first call.

It writes ``node.meta["tensor_meta"]`` (the record torch.fx's ShapeProp writes) on every
node that produces tensors, and a ``LazyCallRecord`` under ``LAZY_CALL_KEY`` on every call
of a lazy module. ``first_calls`` lists each lazy module's first call in execution order.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.fx
from torch import nn
from torch.fx.node import Argument, Target, map_aggregate
from torch.nn.modules.lazy import LazyModuleMixin
from torch.nn.parameter import is_lazy
from torch.utils._pytree import tree_flatten

from fxlazy.errors import (
    ExampleInputError,
    FxLazyError,
    LazyInitializationError,
    ModelCopyError,
    LazyDtypeMismatchError,
    ShapePropagationError,
    SharedLazyModuleError,
)

from .clone import describe_uncopyable_attribute
from .initialize import initialize_lazy_module, real_inputs_for
from .shape_formulas import function_output, module_output
from .records import LAZY_CALL_KEY, TENSOR_META_KEY, CallSpec, LazyCallRecord, TensorSpec, tensor_metadata
from .source import describe_node
from .twins import meta_twin, to_meta
from .widths import WidthRule, contains_pending_lazy, lazy_tensor_dtype, width_rule_for

__all__ = ["LazyShapeProp"]


@dataclass
class _LazyState:
    """Facts recorded about one lazy module at its first call."""

    record: LazyCallRecord
    first_node: torch.fx.Node
    first_call: CallSpec
    width: int | None
    # The module's meta twin, initialized on meta; None until a call needs it.
    twin: nn.Module | None = None
    calls: int = 1

    @property
    def first_shapes(self) -> str:
        """The first call's input shapes, for error messages."""
        return _shapes_of((self.first_call.args, self.first_call.kwargs))


def _shapes_of(values: Any) -> str:
    leaves, _ = tree_flatten(values)
    shapes = [tuple(v.shape) for v in leaves if isinstance(v, (torch.Tensor, TensorSpec))]
    return ", ".join(str(s) for s in shapes) or "no tensors"


def _first_tensor(args: tuple, kwargs: Mapping[str, Any]) -> torch.Tensor | None:
    # Almost every layer takes its input tensor as the first argument.
    if args and isinstance(args[0], torch.Tensor):
        return args[0]
    leaves, _ = tree_flatten((args, kwargs))
    return next((v for v in leaves if isinstance(v, torch.Tensor)), None)


def _tensor_spec(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return TensorSpec(tuple(value.shape), value.dtype, value.requires_grad)
    return value


def _int_attributes(module: nn.Module) -> dict[str, int]:
    return {k: v for k, v in vars(module).items() if type(v) is int and not k.startswith("_")}


def _meta_twin_or_raise(name: str, module: nn.Module) -> nn.Module:
    """Return the module's meta twin in eval mode; raise ModelCopyError if it cannot be copied."""
    try:
        return meta_twin(module).eval()
    except Exception as error:
        where = describe_uncopyable_attribute(module)
        raise ModelCopyError(
            f"Cannot copy module '{name}' ({type(module).__name__}) to the meta device, where fxlazy "
            f"runs it to learn its output shape: {type(error).__name__}: {error}.{where} Make the "
            "module deep-copyable, for example with __deepcopy__ on the class that owns the attribute."
        ) from error


class LazyShapeProp(torch.fx.Interpreter):
    """Run ``graph`` over ``root`` on meta tensors; see the module docstring for what it writes.

    Args:
        root: the module the graph was traced from. It is read, never changed.
        graph: the traced graph, whose nodes receive the meta records.
        stack_traces: returns each node's stack trace by node name. Error messages
            call it, at most once, to name the user's source line of a node traced
            without stack recording.
    """

    def __init__(
        self,
        root: nn.Module,
        graph: torch.fx.Graph,
        stack_traces: Callable[[], Mapping[str, str | None]] | None = None,
    ) -> None:
        super().__init__(root, garbage_collect_values=True, graph=graph)
        self._stack_traces = stack_traces
        # Errors raised here already name the node and the user's source line.
        self.extra_traceback = False
        self._running_node: torch.fx.Node | None = None
        self._twins: dict[str, nn.Module] = {}
        self._lazy: dict[str, _LazyState] = {}
        self.first_calls: list[tuple[CallSpec, int | None]] = []

    def propagate(self, *inputs: torch.Tensor) -> Any:
        """Run the graph on meta copies of ``inputs`` and return the meta outputs."""
        meta_inputs = [to_meta(x) if isinstance(x, torch.Tensor) else x for x in inputs]
        with torch.random.fork_rng(devices=[]):
            # A user's initialize_parameters may draw random numbers on CPU even for meta
            # tensors. The fork keeps the global generator exactly where the caller left it.
            return self.run(*meta_inputs)

    def run_node(self, n: torch.fx.Node) -> Any:
        # Interpreter hands call_module only the target, but lazy calls name their node.
        self._running_node = n
        try:
            result = super().run_node(n)
        except FxLazyError:
            raise
        except Exception as error:
            args, kwargs = self.fetch_args_kwargs_from_env(n)
            if "meta" in str(error):
                remedy = (
                    "fxlazy runs the model on meta tensors, which have shapes but no values, so "
                    "code that reads tensor values (.item(), .tolist(), data-dependent indexing) "
                    "cannot run. Compute such values from shapes, or move them out of forward."
                )
            else:
                remedy = (
                    "An eager forward with inputs of these shapes fails the same way. Check that "
                    "the example has the shapes and dtypes the model expects."
                )
            raise ShapePropagationError(
                f"Shape propagation failed at {self._describe(n)} with input shapes "
                f"{_shapes_of((args, kwargs))}: {type(error).__name__}: {error}\n{remedy}"
            ) from error

        found_tensor = False

        def extract(value: Any) -> Any:
            nonlocal found_tensor
            if isinstance(value, torch.Tensor):
                found_tensor = True
                return tensor_metadata(value)
            return value

        metadata = map_aggregate(result, extract)
        if found_tensor:
            n.meta[TENSOR_META_KEY] = metadata
        return result

    def get_attr(self, target: Target, args: tuple[Argument, ...], kwargs: dict[str, Any]) -> Any:
        value = super().get_attr(target, args, kwargs)
        if not isinstance(value, torch.Tensor):
            return value
        if not is_lazy(value):
            return to_meta(value)

        # A lazy module's own tensor, read directly by the graph. After the module's first
        # call its meta twin has the tensor's shape; before it, nothing does yet.
        owner_path, _, attribute = str(target).rpartition(".")
        state = self._lazy.get(owner_path)
        if state is None:
            raise ShapePropagationError(
                f"Graph reads the uninitialized tensor '{target}' at {self._describe(self._running_node)}, "
                f"before the lazy module '{owner_path}' is first called, so its shape is not known "
                "yet. Call the module before reading its parameters, or compute the value from "
                "the module's input instead."
            )
        return getattr(self._twin_of(state, self.fetch_attr(owner_path)), attribute)

    def inferred_by_module(self) -> dict[str, tuple[dict[str, int], str]]:
        """Return each lazy module's inferred arguments and its first call's node name."""
        return {target: (dict(state.record.inferred), state.first_node.name) for target, state in self._lazy.items()}

    def _describe(self, node: torch.fx.Node) -> str:
        """Describe ``node`` for an error message, with its user source line where known."""
        if node.stack_trace is None and self._stack_traces is not None:
            traces = self._stack_traces()
            self._stack_traces = None
            for candidate in self.graph.nodes:
                candidate.stack_trace = candidate.stack_trace or traces.get(candidate.name)
        return describe_node(node)

    def call_function(self, target: Target, args: tuple[Argument, ...], kwargs: dict[str, Any]) -> Any:
        result = function_output(target, args, kwargs)
        return super().call_function(target, args, kwargs) if result is None else result

    def call_method(self, target: Target, args: tuple[Argument, ...], kwargs: dict[str, Any]) -> Any:
        result = function_output(target, args, kwargs)
        return super().call_method(target, args, kwargs) if result is None else result

    def call_module(self, target: Target, args: tuple[Argument, ...], kwargs: dict[str, Any]) -> Any:
        assert isinstance(target, str)
        module = self.fetch_attr(target)
        # A leaf with lazy modules inside (a leaf the user chose) is initialized by one call,
        # like a module that owns uninitialized tensors.
        if target in self._lazy or contains_pending_lazy(module):
            return self._call_lazy(target, module, args, kwargs)

        result = module_output(module, args, kwargs)
        if result is not None:
            return result
        twin = self._twins.get(target)
        if twin is None:
            twin = self._twins[target] = _meta_twin_or_raise(target, module)
        return twin(*args, **kwargs)

    def _call_lazy(self, target: str, module: nn.Module, args: tuple, kwargs: dict[str, Any]) -> Any:
        node = self._running_node
        first_input = _first_tensor(args, kwargs)
        # The graph's own module stays lazy (only its twin is ever initialized), so its
        # class still selects the width rule at every call.
        rule = width_rule_for(module)
        width = None
        if rule is not None and first_input is not None:
            width = rule.width(first_input.shape)

        state = self._lazy.get(target)
        if state is None and rule is not None and first_input is None:
            received = ", ".join(f"{value!r} ({type(value).__name__})" for value in (*args, *kwargs.values()))
            raise ExampleInputError(
                f"Lazy module '{target}' ({type(module).__name__}) receives {received or 'no arguments'} at "
                f"{self._describe(node)}, but it infers its width from a tensor. Pass tensors in the "
                "example where forward expects them."
            )
        if state is None:
            self._check_lazy_tensors_intact(target, module)
            self._check_dtype(target, module, node, first_input)
            spec = CallSpec(target, map_aggregate(args, _tensor_spec), map_aggregate(kwargs, _tensor_spec))
            record = self._first_call_record(target, module, rule, first_input, width)
            state = _LazyState(record, node, spec, width)
            self._lazy[target] = state
            self.first_calls.append((spec, width))
            result = module_output(module, args, kwargs, width) if rule is not None and width is not None else None
            if result is None:
                result = self._twin_of(state, module)(*args, **kwargs)
            node.meta[LAZY_CALL_KEY] = state.record
            return result

        self._check_shared_width(target, state, node, args, kwargs, width)
        node.meta[LAZY_CALL_KEY] = dataclasses.replace(state.record, call_index=state.calls)
        state.calls += 1
        if rule is not None and width is not None:
            result = module_output(module, args, kwargs, width)
            if result is not None:
                return result
        try:
            return self._twin_of(state, module)(*args, **kwargs)
        except Exception as error:
            raise SharedLazyModuleError(
                f"Lazy module '{target}' ({state.record.lazy_class}) is called at two places with "
                f"inputs it cannot both accept. A lazy module fixes its shapes at the first call.\n"
                f"  first call:  input shapes {state.first_shapes} at {self._describe(state.first_node)}\n"
                f"  later call:  input shapes {_shapes_of((args, kwargs))} at {self._describe(node)}\n"
                f"It failed with: {type(error).__name__}: {error}\n"
                "Use one lazy module per input shape, or make both calls receive the same width."
            ) from error

    def _first_call_record(
        self,
        target: str,
        module: nn.Module,
        rule: WidthRule | None,
        first_input: torch.Tensor | None,
        width: int | None,
    ) -> LazyCallRecord:
        if rule is None or first_input is None:
            # A user's own lazy class: the record is completed by _twin_of, which reads
            # the attributes its initialize_parameters sets.
            source = "initialize_parameters" if isinstance(module, LazyModuleMixin) else "first forward call"
            return LazyCallRecord(target, type(module).__name__, type(module).__name__, source=source)
        output = width if rule.output_argument == rule.inferred_argument else int(getattr(module, rule.output_argument))
        return LazyCallRecord(
            module=target,
            lazy_class=type(module).__name__,
            concrete_class=(module.cls_to_become or type(module)).__name__,
            inferred={rule.inferred_argument: width} if width is not None else {},
            source=rule.describe_dim(first_input.shape),
            output=(rule.output_argument, output) if output is not None else None,
        )

    def _twin_of(self, state: _LazyState, module: nn.Module) -> nn.Module:
        """Return the module's meta twin, initialized from the first call's arguments."""
        if state.twin is not None:
            return state.twin
        twin = _meta_twin_or_raise(state.record.module, module)
        args, kwargs = real_inputs_for(state.first_call, torch.device("meta"))
        before = _int_attributes(twin)
        initialize_lazy_module(twin, state.record.module, args, kwargs, state.width)
        if width_rule_for(module) is None:
            after = _int_attributes(twin)
            inferred = {k: v for k, v in after.items() if before.get(k) != v}
            state.record = dataclasses.replace(state.record, concrete_class=type(twin).__name__, inferred=inferred)
        state.twin = twin
        return twin

    def _check_lazy_tensors_intact(self, target: str, module: nn.Module) -> None:
        """Reject a lazy module whose uninitialized tensors were replaced by empty ones."""
        if not isinstance(module, LazyModuleMixin) or module.has_uninitialized_params():
            return
        empty = [n for n, t in (*module.named_parameters(), *module.named_buffers()) if t.numel() == 0]
        if empty:
            raise LazyInitializationError(
                f"Lazy module '{target}' ({type(module).__name__}) has zero-size tensors {empty} in place "
                "of its uninitialized parameters, so it cannot infer its widths. model.to('meta'), "
                "to_empty() or a similar conversion before the first call replaces them. Build the "
                "model again and convert it after materializing, or materialize with device='meta'."
            )

    def _check_dtype(self, target: str, module: nn.Module, node: torch.fx.Node, first_input: torch.Tensor | None) -> None:
        declared = lazy_tensor_dtype(module)
        rule = width_rule_for(module)
        # A user's own lazy class decides in its forward which dtypes it accepts.
        if declared is None or first_input is None or rule is None:
            return
        if not (declared.is_floating_point and first_input.dtype.is_floating_point):
            return
        # Norms compute in float32 for float16 and bfloat16 input, so eager accepts that mix.
        low_precision = (torch.float16, torch.bfloat16)
        if rule.inferred_argument == "num_features" and declared == torch.float32 and first_input.dtype in low_precision:
            return
        if declared != first_input.dtype:
            raise LazyDtypeMismatchError(
                f"Lazy module '{target}' ({type(module).__name__}) was built with dtype={declared}, "
                f"but its input at {self._describe(node)} has dtype {first_input.dtype}. "
                f"Cast the example with .to({declared}), or build the module with dtype={first_input.dtype}."
            )

    def _check_shared_width(
        self, target: str, state: _LazyState, node: torch.fx.Node, args: tuple, kwargs: dict[str, Any], width: int | None
    ) -> None:
        if state.width is None or width is None or state.width == width:
            return
        argument = next(iter(state.record.inferred), "width")
        raise SharedLazyModuleError(
            f"Lazy module '{target}' ({state.record.lazy_class}) is called at two places with "
            f"different widths, but a lazy module fixes {argument} at its first call.\n"
            f"  first call:  {argument}={state.width} from input shapes {state.first_shapes} "
            f"at {self._describe(state.first_node)}\n"
            f"  later call:  {argument}={width} from input shapes {_shapes_of((args, kwargs))} "
            f"at {self._describe(node)}\n"
            "Use one lazy module per width, or make both calls receive the same width."
        )
