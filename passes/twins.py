"""Copies of modules that live on the meta device, and copies that keep lazy tensors fresh.

Shape propagation runs every leaf module as its meta twin: a deep copy whose parameters
and buffers are meta tensors, so neither the user's module nor the real parameters are
touched, and nothing is computed. ``copy.deepcopy`` cannot copy uninitialized parameters
(``UninitializedTensorMixin`` rejects ``__deepcopy__``), so both copies hand deepcopy a
memo that maps every tensor to its replacement in advance.
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from typing import TypeVar

import torch
from torch import nn
from torch.nn.parameter import UninitializedBuffer, UninitializedParameter, UninitializedTensorMixin

__all__ = ["meta_twin", "copy_with_fresh_lazy_tensors", "to_meta"]

ModuleT = TypeVar("ModuleT", bound=nn.Module)


def _fresh_uninitialized(tensor: torch.Tensor, device: torch.device | str | None = None) -> torch.Tensor:
    target_device = tensor.device if device is None else device
    if isinstance(tensor, UninitializedParameter):
        return UninitializedParameter(tensor.requires_grad, device=target_device, dtype=tensor.dtype)
    return UninitializedBuffer(tensor.requires_grad, device=target_device, dtype=tensor.dtype)


def to_meta(tensor: torch.Tensor) -> torch.Tensor:
    """Return a meta tensor with the shape, strides and dtype of ``tensor``; keep Parameters Parameters."""
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


def _module_tensors(module: nn.Module) -> list[torch.Tensor]:
    tensors: list[torch.Tensor] = []
    for submodule in module.modules():
        tensors.extend(t for t in submodule._parameters.values() if t is not None)
        tensors.extend(t for t in submodule._buffers.values() if t is not None)
    return tensors


def meta_twin(module: ModuleT) -> ModuleT:
    """Deep-copy ``module`` with every parameter and buffer replaced by a meta tensor.

    Uninitialized parameters stay uninitialized, on meta, so the twin can run its own
    ``initialize_parameters`` without allocating memory or drawing random numbers.
    """
    memo = _empty_containers_memo(module)
    for tensor in _module_tensors(module):
        if id(tensor) in memo:
            continue
        if isinstance(tensor, UninitializedTensorMixin):
            memo[id(tensor)] = _fresh_uninitialized(tensor, device="meta")
        else:
            memo[id(tensor)] = to_meta(tensor)
    return copy.deepcopy(module, memo)


def copy_with_fresh_lazy_tensors(module: ModuleT, known: dict[int, object] | None = None) -> ModuleT:
    """Deep-copy ``module``; each uninitialized parameter or buffer becomes a new one of the same kind.

    Initialized tensors are copied with their values, so non-lazy layers keep them exactly.
    ``known`` maps id() of objects copied earlier to their copies, which are reused.
    """
    memo = _empty_containers_memo(module)
    memo.update(known or {})
    for tensor in _module_tensors(module):
        if isinstance(tensor, UninitializedTensorMixin) and id(tensor) not in memo:
            memo[id(tensor)] = _fresh_uninitialized(tensor)
    return copy.deepcopy(module, memo)
