"""Copy the leaf modules of a model into the returned GraphModule.

``copy.deepcopy`` walks every attribute of every module, about a dozen hook dicts each,
and was the largest single cost of materializing a decoder. Most leaves are torch.nn
classes whose attributes are plain numbers, strings and tuples, so a shallow copy with
new parameter, buffer and hook containers is an exact copy. Those leaves are copied
that way. Every other module is deep-copied. Copies of a pending lazy module come out
without the lazy hooks; ``initialize_lazy_module`` does their work directly.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping

import torch
from torch import nn
from torch.nn.modules.lazy import LazyModuleMixin
from torch.nn.parameter import UninitializedTensorMixin

from fxlazy.errors import ModelCopyError

from .twins import deepcopy_with_tensors, fresh_uninitialized, to_meta
from .widths import width_rule_for

__all__ = ["TensorCopier", "can_copy_shallow", "clone_module", "describe_uncopyable_attribute", "shallow_copy"]

# Attribute value types a shallow copy may share, because they cannot change in place.
_IMMUTABLE = (bool, int, float, str, bytes, type(None), torch.dtype, torch.device)
_IMMUTABLE_TYPES = frozenset(_IMMUTABLE)

# The dicts and sets every nn.Module carries: parameters, buffers, children and hooks.
_MODULE_CONTAINERS = frozenset(k for k, v in vars(nn.Module()).items() if isinstance(v, (dict, set)))
_TENSOR_CONTAINERS = frozenset({"_parameters", "_buffers"})
_LAZY_HANDLES = frozenset({"_initialize_hook", "_load_hook"})
# Attributes that shallow_copy replaces or drops instead of sharing.
_COPIED_SEPARATELY = _TENSOR_CONTAINERS | _LAZY_HANDLES | {"_non_persistent_buffers_set"}


def _is_immutable(value: object) -> bool:
    if type(value) in _IMMUTABLE_TYPES:
        return True
    if isinstance(value, tuple):
        # A loop, not all(): modules hold many small tuples (kernel_size, stride, ...).
        for item in value:
            if not _is_immutable(item):
                return False
        return True
    return isinstance(value, _IMMUTABLE)


class TensorCopier:
    """Copy parameters and buffers the way deepcopy would, each once, so tied tensors stay tied.

    Args:
        on_meta: make every copy a meta tensor, without data. Uninitialized tensors are
            copied as new uninitialized tensors of the same kind either way.
    """

    def __init__(self, on_meta: bool = False) -> None:
        self.on_meta = on_meta
        self._copies: dict[int, torch.Tensor] = {}

    def __call__(self, tensor: torch.Tensor) -> torch.Tensor:
        existing = self._copies.get(id(tensor))
        if existing is not None:
            return existing
        if self.on_meta:
            result = to_meta(tensor)
        elif isinstance(tensor, UninitializedTensorMixin):
            result = fresh_uninitialized(tensor)
        elif isinstance(tensor, nn.Parameter):
            result = nn.Parameter(tensor.detach().clone(memory_format=torch.preserve_format), tensor.requires_grad)
        else:
            result = tensor.detach().clone(memory_format=torch.preserve_format).requires_grad_(tensor.requires_grad)
        self._copies[id(tensor)] = result
        return result


def can_copy_shallow(module: nn.Module) -> bool:
    """Tell whether a shallow copy with new containers is an exact copy of ``module``.

    That holds for a torch.nn class without children, whose other attributes are
    immutable, and whose hook dicts are empty or hold only the lazy initialization hooks
    of a built-in lazy class.
    """
    if not type(module).__module__.startswith("torch.nn.") or module._modules:
        return False
    if isinstance(module, LazyModuleMixin) and width_rule_for(module) is None:
        return False
    lazy_hook_ids = {handle.id for name in _LAZY_HANDLES if (handle := module.__dict__.get(name)) is not None}
    for name, value in vars(module).items():
        # Most attributes are numbers and strings, so that test comes first.
        if type(value) in _IMMUTABLE_TYPES or name in _COPIED_SEPARATELY:
            continue
        if name in _MODULE_CONTAINERS:
            if value and any(key not in lazy_hook_ids for key in value):
                return False
        elif not _is_immutable(value):
            return False
    return True


def shallow_copy(
    module: nn.Module,
    copy_tensor: TensorCopier,
    replacements: Mapping[str, torch.Tensor] | None = None,
    as_class: type[nn.Module] | None = None,
) -> nn.Module:
    """Copy a module that ``can_copy_shallow`` accepts, with new containers and copied tensors.

    Parameters and buffers named in ``replacements`` take the given tensors instead of
    copies. ``as_class`` makes the copy an instance of that class, the way torch's
    ``cls_to_become`` swaps a lazy module's class after its first call.
    """
    # What copy.copy does for a module, without its __reduce_ex__ round trip.
    cls = type(module) if as_class is None else as_class
    result = cls.__new__(cls)
    state = result.__dict__
    state.update(module.__dict__)
    for name in _MODULE_CONTAINERS - _TENSOR_CONTAINERS:
        value = state.get(name)
        if value is None:
            continue
        # Hook dicts are empty or hold only the lazy hooks, which the copy drops.
        state[name] = type(value)(value) if name == "_non_persistent_buffers_set" else type(value)()
    replacements = replacements or {}

    def own(key: str, tensor: torch.Tensor | None) -> torch.Tensor | None:
        if key in replacements:
            return replacements[key]
        return None if tensor is None else copy_tensor(tensor)

    state["_parameters"] = {k: own(k, v) for k, v in module._parameters.items()}
    state["_buffers"] = {k: own(k, v) for k, v in module._buffers.items()}
    for name in _LAZY_HANDLES:
        state.pop(name, None)
    return result


def describe_uncopyable_attribute(module: nn.Module) -> str:
    """Return a sentence naming the first plain attribute deepcopy rejects, or "" if none does."""
    culprit = _find_uncopyable_attribute(module)
    return f" The attribute {culprit} cannot be copied." if culprit else ""


def _find_uncopyable_attribute(module: nn.Module) -> str | None:
    """Name the first plain attribute of ``module`` or its children that deepcopy rejects."""
    # Hook dicts hold bound methods of the module, whose copy would copy the module.
    skipped = _MODULE_CONTAINERS | _LAZY_HANDLES
    for name, submodule in module.named_modules():
        for attribute, value in vars(submodule).items():
            if attribute in skipped:
                continue
            try:
                copy.deepcopy(value)
            except Exception:
                owner = f"child '{name}'" if name else "the module itself"
                return f"'{attribute}' of {owner} ({type(submodule).__name__})"
    return None


def clone_module(
    module: nn.Module,
    copy_tensor: TensorCopier,
    name: str = "",
    replacements: Mapping[int, nn.Module] | None = None,
) -> nn.Module:
    """Return an independent copy of ``module`` with its tensors copied by ``copy_tensor``.

    A pending lazy module copied shallowly loses its lazy hooks and keeps its class.
    ``replacements`` maps ``id()`` of submodules to the modules that take their place in
    the copy, uncopied, such as static leaves built in advance.

    Raises:
        ModelCopyError: deepcopy failed; the message names the module ``name`` and the
            attribute that cannot be copied.
    """
    if can_copy_shallow(module):
        return shallow_copy(module, copy_tensor)
    try:
        return deepcopy_with_tensors(module, copy_tensor, replacements)
    except Exception as error:
        where = describe_uncopyable_attribute(module)
        raise ModelCopyError(
            f"Cannot copy module '{name}' ({type(module).__name__}) into the static model without "
            f"sharing it with the original: {type(error).__name__}: {error}.{where} Make it "
            "deep-copyable (for example with __deepcopy__ on the class that owns the attribute), "
            "or pass inplace=True to materialize the model's own modules."
        ) from error
