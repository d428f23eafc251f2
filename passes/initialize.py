"""Initialize lazy modules the way their first forward call would, without running forward.

``LazyModuleMixin`` initializes a module in a forward pre-hook: it calls
``initialize_parameters`` with the forward arguments, checks that nothing is left
uninitialized, removes its hooks and swaps the class to ``cls_to_become``. This file does
the same steps outside a forward call, on inputs rebuilt from the propagated shapes, so
the parameters draw the same random numbers in the same order as an eager dry run.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import nn
from torch.nn.modules.lazy import LazyModuleMixin
from torch.fx.node import map_aggregate

from fxlazy.errors import LazyInitializationError

from .records import CallSpec, TensorSpec
from .static_leaves import built_in_tensors
from .widths import WidthRule, lazy_tensor_device, width_rule_for

__all__ = ["initialize_lazy_module", "initialize_lazy_modules", "real_inputs_for"]


def _describe_inputs(args: tuple, kwargs: Mapping[str, Any]) -> str:
    def shape_of(value: Any) -> Any:
        return tuple(value.shape) if isinstance(value, (torch.Tensor, TensorSpec)) else value

    described = [repr(shape_of(a)) for a in args]
    described += [f"{k}={shape_of(v)!r}" for k, v in kwargs.items()]
    return ", ".join(described)


def _check_groups(module: nn.Module, name: str, width: int) -> None:
    groups = getattr(module, "groups", 1)
    if width % groups != 0:
        raise LazyInitializationError(
            f"Module '{name}' ({type(module).__name__}) has groups={groups}, which does not divide "
            f"the inferred in_channels={width}. Feed it a multiple of {groups} channels or change groups."
        )


def _uninitialized_names(module: nn.Module) -> list[str]:
    return [n for n, t in (*module.named_parameters(), *module.named_buffers()) if nn.parameter.is_lazy(t)]


def _initialize_by_calling(module: nn.Module, name: str, args: tuple, kwargs: Mapping[str, Any]) -> None:
    """Initialize a module without LazyModuleMixin by calling it once, as its first forward would.

    Such a module materializes its tensors in its own forward or forward pre-hook, so
    this runs the module's forward once, on the rebuilt inputs. That is real compute,
    but for this one layer only.
    """
    # Eval mode, as in an eval-mode dry run: a BatchNorm inside must not count the call.
    modes = [(submodule, submodule.training) for submodule in module.modules()]
    module.eval()
    try:
        module(*args, **kwargs)
    except Exception as error:
        raise LazyInitializationError(
            f"Module '{name}' ({type(module).__name__}) has uninitialized tensors and failed "
            f"when called on inputs ({_describe_inputs(args, kwargs)}) to initialize them: "
            f"{type(error).__name__}: {error}. Check that the module receives the input it was written for."
        ) from error
    finally:
        for submodule, training in modes:
            submodule.training = training
    left = _uninitialized_names(module)
    if left:
        raise LazyInitializationError(
            f"Module '{name}' ({type(module).__name__}) still has uninitialized tensors {left} after "
            "its first call. fxlazy initializes a module without LazyModuleMixin by calling it once; "
            "its forward or a forward pre-hook must materialize every UninitializedParameter it owns."
        )


def _initialize_with_new_tensors(module: nn.Module, rule: WidthRule, width: int) -> bool:
    """Do what a built-in class's ``initialize_parameters`` does, with new tensor objects.

    ``UninitializedParameter.materialize`` turns the object itself into a Parameter,
    which keeps it the same object but costs tens of microseconds a tensor. A module
    copied for the static model owns its uninitialized tensors, so they are replaced
    by new tensors of the same shapes, dtypes and devices instead. ``reset_parameters``
    then draws the same random numbers. Returns False, having changed nothing, when
    ``built_in_tensors`` finds tensors other than those torch would materialize, so
    the caller takes torch's path.
    """
    tensors = built_in_tensors(module, rule, width)
    if tensors is None:
        return False
    setattr(module, rule.inferred_argument, width)
    for key, tensor in tensors.items():
        store = module._parameters if key in module._parameters else module._buffers
        store[key] = tensor
    module.reset_parameters()
    return True


def initialize_lazy_module(
    module: nn.Module,
    name: str,
    args: tuple,
    kwargs: Mapping[str, Any],
    width: int | None,
    replace_tensors: bool = False,
) -> None:
    """Initialize one pending lazy module from its first call's arguments and finish it.

    ``width`` is the input width read by the built-in class's rule, or None for a
    user's own lazy class. A module without LazyModuleMixin is called once instead.
    With ``replace_tensors``, a built-in lazy class gets new tensor objects in place of
    its uninitialized ones, which is faster. Pass it only for a module fxlazy copied,
    because code that keeps the old objects (an optimizer) would not see the new ones.
    Raises LazyInitializationError naming the module.
    """
    class_name = type(module).__name__
    if not isinstance(module, LazyModuleMixin):
        _initialize_by_calling(module, name, args, kwargs)
        return
    rule = width_rule_for(module)
    if rule is not None and width is not None and rule.inferred_argument == "in_channels":
        _check_groups(module, name, width)

    try:
        if not (
            replace_tensors
            and rule is not None
            and width is not None
            and _initialize_with_new_tensors(module, rule, width)
        ):
            module.initialize_parameters(*args, **kwargs)
    except Exception as error:
        # torch's CPU allocator raises a RuntimeError with this text (torch 2.13).
        if isinstance(error, torch.OutOfMemoryError) or "can't allocate memory" in str(error):
            remedy = (
                "Its parameters do not fit in memory here. Materialize with device='meta', which "
                "allocates nothing, and allocate them later with to_empty(device=...)."
            )
        else:
            remedy = "Check that the module receives the input it was written for."
        raise LazyInitializationError(
            f"Module '{name}' ({class_name}) failed in initialize_parameters for inputs "
            f"({_describe_inputs(args, kwargs)}): {error}. {remedy}"
        ) from error
    if module.has_uninitialized_params():
        left = _uninitialized_names(module)
        raise LazyInitializationError(
            f"Module '{name}' ({class_name}) still has uninitialized tensors {left} after "
            "initialize_parameters. Its initialize_parameters must materialize every "
            "UninitializedParameter and UninitializedBuffer it owns."
        )

    # The same clean-up LazyModuleMixin's forward pre-hook does after initializing. A
    # shallow copy made by passes/clone.py has no lazy hooks left to remove.
    for handle_name in ("_initialize_hook", "_load_hook"):
        handle = module.__dict__.pop(handle_name, None)
        if handle is not None:
            handle.remove()
    if module.cls_to_become is not None:
        module.__class__ = module.cls_to_become

    # Without affine weights or running statistics a lazy norm owns no tensor, and torch
    # then leaves num_features at 0. The inferred width is written so the static module
    # describes itself truthfully; its state_dict does not change.
    if rule is not None and width is not None and getattr(module, rule.inferred_argument) == 0:
        setattr(module, rule.inferred_argument, width)


def real_inputs_for(spec: CallSpec, device: torch.device) -> tuple[tuple, dict[str, Any]]:
    """Rebuild a first call's arguments as real tensors of the recorded shapes.

    Each tensor is a single zero expanded to the recorded shape, so it allocates one
    element however large the activation would be.
    """

    def build(value: Any) -> Any:
        if isinstance(value, TensorSpec):
            zero = torch.zeros((), dtype=value.dtype, device=device)
            return zero.expand(value.shape)
        return value

    return map_aggregate(spec.args, build), dict(map_aggregate(spec.kwargs, build))


def _reset_static_leaf(module: nn.Module, name: str) -> None:
    """Initialize a module built by ``build_static_leaves``, whose tensors hold no values yet."""
    try:
        module.reset_parameters()
    except Exception as error:
        raise LazyInitializationError(
            f"Module '{name}' ({type(module).__name__}) failed in reset_parameters after fxlazy "
            f"allocated its tensors: {type(error).__name__}: {error}. Check that an eager forward of "
            "the lazy model succeeds with this example."
        ) from error


def initialize_lazy_modules(
    root: nn.Module,
    first_calls: Iterable[tuple[CallSpec, int | None]],
    replace_tensors: bool = False,
    static_leaves: Mapping[str, nn.Module] | None = None,
) -> None:
    """Initialize the pending lazy modules of ``root`` in the order of their first calls.

    The order matters: it is the order an eager forward would initialize them in, and so
    the order in which they draw from the random number generator. ``replace_tensors``
    is passed on to ``initialize_lazy_module``. ``static_leaves`` are the modules that
    ``build_static_leaves`` built for the static model, by the names of their first
    calls. They only need ``reset_parameters``.
    """
    static_leaves = static_leaves or {}
    for spec, width in first_calls:
        static = static_leaves.get(spec.module)
        with torch.no_grad():
            if static is not None:
                _reset_static_leaf(static, spec.module)
                continue
            module = root.get_submodule(spec.module)
            device = lazy_tensor_device(module) or torch.device("cpu")
            args, kwargs = real_inputs_for(spec, device)
            initialize_lazy_module(module, spec.module, args, kwargs, width, replace_tensors)
