"""Build the static module of a built-in lazy layer directly, without copying the lazy one first.

A copied lazy leaf would carry new uninitialized tensors that initialization then
replaces at once. Each of those tensors runs its ``__torch_function__`` in Python on
every attribute read, so the copy and its replacement cost tens of microseconds a
layer. Here a layer of a torch.nn lazy class becomes an instance of its
``cls_to_become`` with real tensors of the inferred shapes. Their values are left to
``reset_parameters``, which the initialization pass calls in the order of the first
calls, so the random draws match an eager dry run.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch
from torch import nn
from torch.nn.parameter import UninitializedTensorMixin

from .clone import TensorCopier, can_copy_shallow, shallow_copy
from .records import CallSpec
from .widths import WidthRule, tensor_properties, width_rule_for

__all__ = ["built_in_tensors", "build_static_leaves", "static_leaves_by_original"]


def _built_in_shapes(module: nn.Module, rule: WidthRule, width: int) -> dict[str, tuple[int, ...]]:
    """Return the shape that torch's ``initialize_parameters`` gives each tensor of a built-in lazy class."""
    if rule.inferred_argument == "in_features":
        return {"weight": (module.out_features, width), "bias": (module.out_features,)}
    if rule.inferred_argument == "in_channels":
        out, groups, kernel = module.out_channels, module.groups, tuple(module.kernel_size)
        weight = (width, out // groups, *kernel) if module.transposed else (out, width // groups, *kernel)
        return {"weight": weight, "bias": (out,)}
    return dict.fromkeys(("weight", "bias", "running_mean", "running_var"), (width,))


def built_in_tensors(module: nn.Module, rule: WidthRule, width: int) -> dict[str, torch.Tensor] | None:
    """Allocate the tensors that torch's ``initialize_parameters`` would materialize in ``module``.

    Each new tensor has the shape torch would give it and the dtype, device and
    ``requires_grad`` of the uninitialized tensor it replaces. A replaced Parameter stays
    a Parameter and a buffer a plain tensor. The values are uninitialized memory until
    ``reset_parameters`` runs. Returns None when the module's uninitialized tensors are
    not exactly those torch would materialize, for example a real bias or an extra
    uninitialized parameter. Such a module must go through torch's own
    ``initialize_parameters``, which fails or leaves tensors uninitialized as an eager
    call would.
    """
    shapes = _built_in_shapes(module, rule, width)
    pending = [
        (key, tensor)
        for store in (module._parameters, module._buffers)
        for key, tensor in store.items()
        if isinstance(tensor, UninitializedTensorMixin)
    ]
    present = {key for key in shapes if module._parameters.get(key) is not None or module._buffers.get(key) is not None}
    if not pending or {key for key, _ in pending} != present:
        return None

    tensors: dict[str, torch.Tensor] = {}
    properties = tensor_properties(tensor for _, tensor in pending)
    for (key, tensor), (dtype, device, requires_grad) in zip(pending, properties):
        allocated = torch.empty(shapes[key], dtype=dtype, device=device)
        if isinstance(tensor, nn.Parameter):
            tensors[key] = nn.Parameter(allocated, requires_grad=requires_grad)
        else:
            tensors[key] = allocated.requires_grad_(requires_grad)
    return tensors


def _build_static_leaf(module: nn.Module, width: int, copy_tensor: TensorCopier) -> nn.Module | None:
    """Return ``module`` as its static class with tensors allocated for ``width``, or None.

    None means that the module needs the general path: a copy, then torch's
    ``initialize_parameters`` or a call.
    """
    rule = width_rule_for(module)
    if rule is None or module.cls_to_become is None or not can_copy_shallow(module):
        return None
    # A width that groups does not divide is reported by the initialization pass.
    if rule.inferred_argument == "in_channels" and width % module.groups != 0:
        return None
    try:
        tensors = built_in_tensors(module, rule, width)
    except (RuntimeError, ValueError):
        # Allocation failed (out of memory, or a size torch rejects). The general path
        # runs the same allocation and reports it with the module's name and inputs.
        return None
    if tensors is None:
        return None

    static = shallow_copy(module, copy_tensor, replacements=tensors, as_class=module.cls_to_become)
    setattr(static, rule.inferred_argument, width)
    return static


def build_static_leaves(
    root: nn.Module, first_calls: Iterable[tuple[CallSpec, int | None]], copy_tensor: TensorCopier
) -> dict[str, nn.Module]:
    """Build the static module of every built-in lazy layer of ``root`` that allows it.

    Returns the static modules by the qualified names of the first calls. A layer that
    is missing from the result needs the general path. The tensors of the static
    modules are not initialized yet. Tensors the layers own besides the inferred ones
    (a BatchNorm's ``num_batches_tracked``) are copied with ``copy_tensor``, which the
    assembly pass must share so that tied tensors stay tied.
    """
    built: dict[str, nn.Module] = {}
    for spec, width in first_calls:
        if width is None:
            continue
        static = _build_static_leaf(root.get_submodule(spec.module), width, copy_tensor)
        if static is not None:
            built[spec.module] = static
    return built


def static_leaves_by_original(root: nn.Module, built: Mapping[str, nn.Module]) -> dict[int, nn.Module]:
    """Key ``built`` by ``id()`` of the original modules, so a module under two names is found under either."""
    return {id(root.get_submodule(name)): static for name, static in built.items()}
