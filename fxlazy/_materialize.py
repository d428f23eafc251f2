"""``materialize``: the entry point that turns a lazy model into a static GraphModule."""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import torch
import torch.fx
from torch import nn

from ._inputs import bind_example
from ._several_examples import check_examples_agree, dynamic_dims
from .errors import InvalidOptionError, LazyDeviceMismatchError, UnsupportedLazyModuleError, UnusedLazyModuleError
from .passes.assemble import attach_module_tree, new_graph_module
from .passes.clone import TensorCopier
from .passes.initialize import initialize_lazy_modules
from .passes.propagate import LazyShapeProp
from .passes.records import DYNAMIC_DIMS_KEY, SPECIALIZATIONS_KEY
from .passes.static_leaves import build_static_leaves, static_leaves_by_original
from .passes.trace import stack_traces_by_node, trace_with_lazy_leaves
from .passes.widths import is_pending_lazy, lazy_tensor_device

__all__ = ["materialize"]


def materialize(
    model: nn.Module,
    example: Any = (),
    *,
    example_kwargs: Mapping[str, Any] | None = None,
    inplace: bool = False,
    seed: int | None = None,
    device: torch.device | str | None = None,
    more_examples: Sequence[Any] = (),
    leaf_modules: Iterable[str | type] = (),
) -> torch.fx.GraphModule:
    """Trace ``model`` and return a static GraphModule with every lazy module materialized.

    Shapes are propagated on meta tensors, so the example's values are never computed
    with. The only real work is allocating and initializing the parameters of the lazy
    modules, in the order an eager forward would initialize them. Under the same random
    state, the result's ``state_dict`` equals, key for key and bit for bit, what
    ``model.eval(); model(*example)`` would leave in the model.

    Python's cyclic garbage collector is paused for the duration of the call, in the
    whole process, and switched back on afterwards if it was on.

    Args:
        model: the model; it is left unchanged unless ``inplace`` is true.
        example: the positional forward arguments: a tensor, or a tuple of tensors, None
            and Python scalars. Only shapes and dtypes of tensors are used. Non-tensor
            values are baked into the graph, and the GraphModule's forward takes the
            tensor arguments alone.
        example_kwargs: keyword forward arguments, treated like ``example``.
        inplace: materialize the model's own lazy modules. Their Parameter objects stay
            the same, so an optimizer built on the lazy model keeps working. The
            returned GraphModule then shares its modules with ``model``.
        seed: when given, initialize from ``torch.manual_seed(seed)`` and restore the
            global random state afterwards. When None, draw from the global generator
            exactly as an eager dry run would.
        more_examples: further examples, each given like ``example`` (keyword arguments
            are taken from ``example_kwargs``). Each must give every lazy module the same
            widths and take the same branches of forward. Dims whose sizes differ are
            recorded as dynamic in ``gm.meta["fxlazy_dynamic_dims"]`` and in the report.
        leaf_modules: submodules to keep as single call_module nodes instead of tracing
            into them, by qualified name or by class: a block torch.fx cannot trace, or
            one you want to see as one node. Lazy modules inside such a leaf are
            materialized by calling the leaf once, on meta tensors to learn shapes and on
            zero-valued tensors to initialize, so its forward must run on both.
        device: ``"meta"`` returns every parameter and buffer on the meta device, without
            memory and without drawing random numbers, for models too large to initialize
            here. Allocate them later with ``gm.to_empty(device=...)``, then call each
            module's ``reset_parameters`` or load a checkpoint with
            ``load_state_dict(..., assign=True)``. None keeps each tensor's own device.

    Returns:
        A ``torch.fx.GraphModule`` with the model's module hierarchy and qualified names.
        Every node that produces tensors carries ``node.meta["tensor_meta"]``, and every
        call of a materialized module a record that :func:`fxlazy.shape_report` reads.

    Raises:
        ExampleInputError: the example does not fit ``model.forward``.
        ModelCopyError: a module the result needs cannot be copied (pass ``inplace=True``).
        UntraceableModelError: torch.fx cannot trace the model's forward.
        ShapePropagationError: a graph node fails on meta tensors.
        LazyDtypeMismatchError: a lazy module's dtype differs from its input's dtype.
        SharedLazyModuleError: a lazy module is called with two different widths.
        LazyInitializationError: a lazy module's ``initialize_parameters`` fails.
        UnusedLazyModuleError: forward never calls a lazy module for this example.
        UnsupportedLazyModuleError: the model itself is a lazy module.
        InvalidOptionError: ``device`` is not None or meta, or meta with ``inplace``.
        LazyDeviceMismatchError: a lazy module is on another device than the example.
        ModuleCreatedInForwardError: forward builds a module on every call.

    Example:
        >>> import torch, fxlazy
        >>> model = torch.nn.Sequential(torch.nn.LazyConvTranspose2d(32, kernel_size=3, stride=2))
        >>> static = fxlazy.materialize(model, torch.randn(1, 64, 8, 8))
        >>> static.get_submodule("0")
        ConvTranspose2d(64, 32, kernel_size=(3, 3), stride=(2, 2))
        >>> type(model[0]).__name__
        'LazyConvTranspose2d'
    """
    with _collector_paused():
        return _materialize(
            model, example, example_kwargs, inplace, seed, device, more_examples, tuple(leaf_modules)
        )


def _materialize(
    model: nn.Module,
    example: Any,
    example_kwargs: Mapping[str, Any] | None,
    inplace: bool,
    seed: int | None,
    device: torch.device | str | None,
    more_examples: Sequence[Any],
    leaf_modules: tuple[str | type, ...],
) -> torch.fx.GraphModule:
    on_meta = _validate_device(device, inplace)
    inputs = bind_example(model, example, example_kwargs)
    further = [bind_example(model, other, example_kwargs) for other in more_examples]
    _reject_lazy_root(model)
    # Every check below reads the pending lazy modules, so the model is walked once.
    pending = [(name, module) for name, module in model.named_modules() if is_pending_lazy(module)]
    _check_lazy_devices(pending, inputs.tensors.values())

    # Phase 1: everything that can fail runs before anything is copied or changed.
    # Tracing and propagation only read the model; lazy modules run as meta twins.
    traced = trace_with_lazy_leaves(model, inputs.specialized, example_tensors=inputs.tensors, leaf_modules=leaf_modules)
    propagation = LazyShapeProp(
        model, traced.graph, lambda: stack_traces_by_node(model, inputs.specialized, inputs.tensors, leaf_modules)
    )
    propagation.propagate(*inputs.tensors.values())
    check_examples_agree(model, inputs, traced, propagation, further, leaf_modules)
    _reject_unused_lazy_modules(model, pending, {spec.module for spec, _ in propagation.first_calls})

    # Phase 2, in this order, so that code generation's transient memory is freed before
    # any module is allocated:
    # 1. generate the GraphModule's code;
    # 2. build the static module of each built-in lazy layer directly, unless the result
    #    is in place or on meta;
    # 3. give the GraphModule copies of the other leaves, or the model's own leaves;
    # 4. initialize parameters in first-call order.
    # NOTE: with inplace=True, a user's initialize_parameters that works on meta tensors
    # but fails on real ones leaves the modules before it initialized.
    gm = new_graph_module(model, traced.graph, type(model).__name__)
    copy_tensor = TensorCopier(on_meta)
    static_leaves = {} if inplace or on_meta else build_static_leaves(model, propagation.first_calls, copy_tensor)
    attach_module_tree(
        gm,
        model,
        traced.traced_through,
        copy_modules=not inplace,
        on_meta=on_meta,
        copy_tensor=copy_tensor,
        static_leaves=static_leaves_by_original(model, static_leaves),
    )
    gm.meta[SPECIALIZATIONS_KEY] = traced.specializations
    gm.meta[DYNAMIC_DIMS_KEY] = dynamic_dims([inputs, *further])
    with _random_state(seed, pending):
        initialize_lazy_modules(gm, propagation.first_calls, replace_tensors=not inplace, static_leaves=static_leaves)
    gm.graph.lint()
    return gm


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    """Pause Python's cyclic garbage collector for one call, as torch.distributed.checkpoint does.

    A call allocates a few dozen objects per graph node, nearly all of them kept. On
    models with thousands of layers those allocations set off repeated full collections
    over every object in the process: about a tenth of the call's time on the chain of
    2,000 small convolutions in benchmarks/bench_models.py. The collector is switched
    back on afterwards only if it was on before, also on errors. Reference counting
    still frees everything that is not part of a cycle.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _validate_device(device: torch.device | str | None, inplace: bool) -> bool:
    """Return whether the result goes on the meta device; reject devices not supported yet."""
    if device is None:
        return False
    if torch.device(device).type != "meta":
        raise InvalidOptionError(
            f"device={device!r} is not supported yet; only device='meta' is. Materialize on the "
            "devices the model was built for, then move the result with .to(device)."
        )
    if inplace:
        raise InvalidOptionError(
            "device='meta' cannot be combined with inplace=True, because it would replace the "
            "model's own parameters with meta tensors. Pass one of the two."
        )
    return True


def _reject_lazy_root(model: nn.Module) -> None:
    if is_pending_lazy(model):
        raise UnsupportedLazyModuleError(
            f"The model itself is a lazy module ({type(model).__name__}), so the traced graph has "
            "no call of it to infer its width from. Wrap it in a container, for example "
            "nn.Sequential(model), and materialize that."
        )


def _check_lazy_devices(pending: Sequence[tuple[str, nn.Module]], tensors: Iterable[torch.Tensor]) -> None:
    """Reject lazy modules built on another device than the one all example tensors share."""
    devices = {tensor.device for tensor in tensors}
    if len(devices) != 1:
        return
    example_device = devices.pop()
    for name, module in pending:
        declared = lazy_tensor_device(module)
        if declared is not None and declared != example_device:
            raise LazyDeviceMismatchError(
                f"Lazy module '{name}' ({type(module).__name__}) was built on device {declared}, but the "
                f"example's tensors are on {example_device}, so an eager forward would fail. Move the "
                f"example with .to('{declared}'), or build the model on {example_device} (the lazy "
                "module's device= argument, or model.to(...) before materializing)."
            )


def _reject_unused_lazy_modules(root: nn.Module, pending: Sequence[tuple[str, nn.Module]], called: set[str]) -> None:
    # A called leaf initializes every lazy module inside it.
    called_ids = {id(module) for name in called for module in root.get_submodule(name).modules()}
    unused = [f"'{name}' ({type(module).__name__})" for name, module in pending if id(module) not in called_ids]
    if unused:
        raise UnusedLazyModuleError(
            f"forward of {type(root).__name__} never calls the lazy module(s) {', '.join(unused)} "
            "for this example, so their widths cannot be inferred and the static model would "
            "keep uninitialized parameters. Pass an example that reaches them (for instance "
            "through example_kwargs), or remove them from the model."
        )


@contextlib.contextmanager
def _random_state(seed: int | None, pending: Sequence[tuple[str, nn.Module]]) -> Iterator[None]:
    """Seed every generator the pending lazy modules draw from, and restore them afterwards."""
    if seed is None:
        yield
        return
    # Reading an uninitialized tensor's device costs microseconds, so only a seed pays for it.
    devices = {lazy_tensor_device(module) for _, module in pending}
    accelerator_indexes = [d.index or 0 for d in devices if d is not None and d.type == "cuda"]
    with torch.random.fork_rng(devices=accelerator_indexes):
        torch.manual_seed(seed)
        yield
