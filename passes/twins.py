"""Deep copies of modules with their tensors replaced, and meta twins built on them.

Shape propagation runs a leaf module that has no shape formula as its meta twin: a deep
copy whose parameters and buffers are meta tensors, so neither the user's module nor the
real parameters are touched, and nothing is computed. ``copy.deepcopy`` cannot copy
uninitialized parameters (``UninitializedTensorMixin`` rejects ``__deepcopy__``), so these
copies hand deepcopy a memo that maps every tensor to its replacement in advance.
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import TypeVar

import torch
from torch import nn
from torch.nn.parameter import UninitializedBuffer, UninitializedParameter, UninitializedTensorMixin

__all__ = ["meta_twin", "deepcopy_with_tensors", "fresh_uninitialized", "to_meta"]

ModuleT = TypeVar("ModuleT", bound=nn.Module)


def fresh_uninitialized(tensor: torch.Tensor, device: torch.device | str | None = None) -> torch.Tensor:
    """Return a new uninitialized parameter or buffer like ``tensor``, on ``device`` if given."""
    target_device = tensor.device if device is None else device
    if isinstance(tensor, UninitializedParameter):
        return UninitializedParameter(tensor.requires_grad, device=target_device, dtype=tensor.dtype)
    return UninitializedBuffer(tensor.requires_grad, device=target_device, dtype=tensor.dtype)


def to_meta(tensor: torch.Tensor) -> torch.Tensor:
    """Return a meta tensor with the shape, strides and dtype of ``tensor``; keep Parameters Parameters."""
    if isinstance(tensor, UninitializedTensorMixin):
        return fresh_uninitialized(tensor, device="meta")
    meta = torch.empty_strided(tensor.size(), tensor.stride(), dtype=tensor.dtype, device="meta")
    if isinstance(tensor, nn.Parameter):
        return nn.Parameter(meta, requires_grad=tensor.requires_grad)
    return meta.requires_grad_(tensor.requires_grad)


def _empty_containers_memo(module: nn.Module) -> dict[int, object]:
    """Map every empty dict, OrderedDict and set in the modules' attributes to a new empty one.

    A module carries about a dozen hook dicts, mostly empty. Handing deepcopy their
    copies in advance gives the same result and skips most of its per-object work.
    """
    memo: dict[int, object] = {}
    for submodule in module.modules():
        for value in vars(submodule).values():
            if type(value) in (dict, OrderedDict, set) and not value:
                memo[id(value)] = type(value)()
    return memo


def deepcopy_with_tensors(
    module: ModuleT,
    copy_tensor: Callable[[torch.Tensor], torch.Tensor],
    replacements: Mapping[int, nn.Module] | None = None,
) -> ModuleT:
    """Deep-copy ``module``, replacing each parameter and buffer with ``copy_tensor(tensor)``.

    ``replacements`` maps ``id()`` of submodules to the modules that take their place in
    the copy, uncopied.
    """
    memo = _empty_containers_memo(module)
    memo.update(replacements or {})
    for submodule in module.modules():
        for tensor in (*submodule._parameters.values(), *submodule._buffers.values()):
            if tensor is not None and id(tensor) not in memo:
                memo[id(tensor)] = copy_tensor(tensor)
    return copy.deepcopy(module, memo)


def meta_twin(module: ModuleT) -> ModuleT:
    """Deep-copy ``module`` with every parameter and buffer replaced by a meta tensor.

    Uninitialized parameters stay uninitialized, on meta, so the twin can run its own
    ``initialize_parameters`` without allocating memory or drawing random numbers.
    """
    return deepcopy_with_tensors(module, to_meta)
