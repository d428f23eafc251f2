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

import torch
from torch import nn
from torch.nn.modules.lazy import LazyModuleMixin
from torch.nn.parameter import UninitializedBuffer, UninitializedParameter, UninitializedTensorMixin

from fxlazy.errors import ModelCopyError

from .twins import copy_with_fresh_lazy_tensors
from .widths import width_rule_for

__all__ = ["TensorCopies", "clone_module", "clone_tensor", "find_uncopyable_attribute"]

# Attribute value types a shallow copy may share, because nobody mutates them in place.
_IMMUTABLE = (bool, int, float, str, bytes, type(None), torch.dtype, torch.device)

# The dicts and sets every nn.Module carries: parameters, buffers, children and hooks.
_MODULE_CONTAINERS = frozenset(k for k, v in vars(nn.Module()).items() if isinstance(v, (dict, set)))
_TENSOR_CONTAINERS = frozenset({"_parameters", "_buffers"})
_LAZY_HANDLES = frozenset({"_initialize_hook", "_load_hook"})

# Maps id() of an original tensor to its copy, so tied tensors stay tied.
TensorCopies = dict[int, torch.Tensor]


def _is_immutable(value: object) -> bool:
    if isinstance(value, tuple):
        return all(_is_immutable(item) for item in value)
    return isinstance(value, _IMMUTABLE)


def clone_tensor(tensor: torch.Tensor, copies: TensorCopies) -> torch.Tensor:
    """Copy one parameter or buffer the way deepcopy would, reusing an earlier copy of it."""
    existing = copies.get(id(tensor))
    if existing is not None:
        return existing
    if isinstance(tensor, UninitializedTensorMixin):
        kind = UninitializedParameter if isinstance(tensor, UninitializedParameter) else UninitializedBuffer
        result: torch.Tensor = kind(tensor.requires_grad, device=tensor.device, dtype=tensor.dtype)
    elif isinstance(tensor, nn.Parameter):
        result = nn.Parameter(tensor.detach().clone(memory_format=torch.preserve_format), tensor.requires_grad)
    else:
        result = tensor.detach().clone(memory_format=torch.preserve_format).requires_grad_(tensor.requires_grad)
    copies[id(tensor)] = result
    return result


def _can_copy_shallow(module: nn.Module) -> bool:
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
        if name in _TENSOR_CONTAINERS or name in _LAZY_HANDLES or name == "_non_persistent_buffers_set":
            continue
        if name in _MODULE_CONTAINERS:
            if any(key not in lazy_hook_ids for key in value):
                return False
        elif not _is_immutable(value):
            return False
    return True


def _shallow_copy(module: nn.Module, copies: TensorCopies) -> nn.Module:
    result = copy.copy(module)
    state = result.__dict__
    for name in _MODULE_CONTAINERS - _TENSOR_CONTAINERS:
        value = state.get(name)
        if value is None:
            continue
        # Hook dicts are empty or hold only the lazy hooks, which the copy drops.
        state[name] = type(value)(value) if name == "_non_persistent_buffers_set" else type(value)()
    state["_parameters"] = {k: None if v is None else clone_tensor(v, copies) for k, v in module._parameters.items()}
    state["_buffers"] = {k: None if v is None else clone_tensor(v, copies) for k, v in module._buffers.items()}
    for name in _LAZY_HANDLES:
        state.pop(name, None)
    return result


def find_uncopyable_attribute(module: nn.Module) -> str | None:
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


def clone_module(module: nn.Module, copies: TensorCopies, name: str = "") -> nn.Module:
    """Return an independent copy of ``module`` with its parameters and buffers copied.

    Uninitialized tensors are copied as new uninitialized tensors of the same kind. A
    pending lazy module copied shallowly loses its lazy hooks and keeps its class.

    Raises:
        ModelCopyError: deepcopy failed; the message names the module ``name`` and the
            attribute that cannot be copied.
    """
    if _can_copy_shallow(module):
        return _shallow_copy(module, copies)
    memo: dict[int, object] = {
        id(t): copies[id(t)] for t in (*module.parameters(), *module.buffers()) if id(t) in copies
    }
    try:
        result = copy_with_fresh_lazy_tensors(module, memo)
    except Exception as error:
        culprit = find_uncopyable_attribute(module)
        where = f" The attribute {culprit} cannot be copied." if culprit else ""
        raise ModelCopyError(
            f"Cannot copy module '{name}' ({type(module).__name__}) into the static model without "
            f"sharing it with the original: {type(error).__name__}: {error}.{where} Make it "
            "deep-copyable (for example with __deepcopy__ on the class that owns the attribute), "
            "or pass inplace=True to materialize the model's own modules."
        ) from error
    for original, copied in zip((*module.parameters(), *module.buffers()), (*result.parameters(), *result.buffers())):
        copies.setdefault(id(original), copied)
    return result
