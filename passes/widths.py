"""Rules for the input dimension each built-in lazy class of torch.nn reads its width from.

The rules restate what each class's ``initialize_parameters`` does in torch 2.13, so
fxlazy can check a shared module's width at every call site and write in the report
which input dimension a width came from. Users' own ``LazyModuleMixin`` subclasses
have no rule: their widths are taken from the attributes ``initialize_parameters`` sets.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.modules.lazy import LazyModuleMixin

__all__ = [
    "WidthRule",
    "width_rule_for",
    "is_pending_lazy",
    "owns_uninitialized_tensors",
    "contains_pending_lazy",
    "lazy_tensor_dtype",
    "lazy_tensor_device",
    "tensor_properties",
]


@dataclass(frozen=True)
class WidthRule:
    """The constructor argument a lazy class infers, and the one that fixes its output width."""

    inferred_argument: str
    output_argument: str
    # Number of spatial dims for convolutions; None for classes that read a fixed dim.
    spatial_dims: int | None = None
    # The dim read by classes without spatial_dims: -1 for Linear, 1 for the norms.
    fixed_dim: int = 1

    def input_dim(self, input_shape: torch.Size) -> int:
        """Return the index of the input dimension the width is read from."""
        if self.spatial_dims is None:
            return self.fixed_dim
        # A convolution accepts batched (N, C, *spatial) and unbatched (C, *spatial) input.
        return 1 if len(input_shape) == self.spatial_dims + 2 else 0

    def describe_dim(self, input_shape: torch.Size) -> str:
        """Describe the width's input dimension for people: ``input dim 1``, ``last input dim``."""
        dim = self.input_dim(input_shape)
        if dim == -1:
            return "last input dim"
        if self.spatial_dims is not None and dim == 0:
            return "input dim 0 (unbatched)"
        return f"input dim {dim}"

    def width(self, input_shape: torch.Size) -> int | None:
        """Return the width read from ``input_shape``, or None when the shape has too few dims."""
        dim = self.input_dim(input_shape)
        if len(input_shape) == 0 or dim >= len(input_shape):
            return None
        return int(input_shape[dim])


_LINEAR = WidthRule("in_features", "out_features", fixed_dim=-1)
_NORM = WidthRule("num_features", "num_features", fixed_dim=1)

_RULES: dict[type, WidthRule] = {
    nn.LazyLinear: _LINEAR,
    nn.LazyConv1d: WidthRule("in_channels", "out_channels", spatial_dims=1),
    nn.LazyConv2d: WidthRule("in_channels", "out_channels", spatial_dims=2),
    nn.LazyConv3d: WidthRule("in_channels", "out_channels", spatial_dims=3),
    nn.LazyConvTranspose1d: WidthRule("in_channels", "out_channels", spatial_dims=1),
    nn.LazyConvTranspose2d: WidthRule("in_channels", "out_channels", spatial_dims=2),
    nn.LazyConvTranspose3d: WidthRule("in_channels", "out_channels", spatial_dims=3),
    # torch reads input.shape[1] for every lazy norm, unbatched InstanceNorm input included.
    nn.LazyBatchNorm1d: _NORM,
    nn.LazyBatchNorm2d: _NORM,
    nn.LazyBatchNorm3d: _NORM,
    nn.LazyInstanceNorm1d: _NORM,
    nn.LazyInstanceNorm2d: _NORM,
    nn.LazyInstanceNorm3d: _NORM,
}


def width_rule_for(module: nn.Module) -> WidthRule | None:
    """Return the rule of a built-in lazy class, or None for any other class."""
    return _RULES.get(type(module))


def is_pending_lazy(module: nn.Module) -> bool:
    """Tell whether ``module`` is a lazy module whose first forward has not run yet.

    A ``LazyModuleMixin`` keeps its ``_initialize_hook`` until its first forward call
    removes it, also after ``load_state_dict`` filled in its parameters. A module without
    the mixin is pending while it owns an uninitialized parameter or buffer, which its
    own forward or forward pre-hook materializes (as PyTorch Geometric's ``Linear(-1, n)``
    does).
    """
    if isinstance(module, LazyModuleMixin):
        return hasattr(module, "_initialize_hook")
    return owns_uninitialized_tensors(module)


def contains_pending_lazy(module: nn.Module) -> bool:
    """Tell whether ``module`` or any module below it is a pending lazy module."""
    if is_pending_lazy(module):
        return True
    # Most calls are on leaves without children, where walking modules() would only cost time.
    return bool(module._modules) and any(is_pending_lazy(submodule) for submodule in module.modules())


def owns_uninitialized_tensors(module: nn.Module) -> bool:
    """Tell whether the module itself, not a child, owns an uninitialized parameter or buffer."""
    return _first_lazy_tensor(module) is not None


def tensor_properties(tensors: Iterable[torch.Tensor]) -> list[tuple[torch.dtype, torch.device, bool]]:
    """Return the dtype, device and ``requires_grad`` of each tensor, uninitialized ones included.

    An uninitialized parameter or buffer runs its Python ``__torch_function__`` on every
    attribute read, about 2 µs a read (torch 2.13, timeit on a 2-core AMD EPYC). Reads
    with subclass handlers disabled return the same values in a tenth of that.
    """
    # NOTE: DisableTorchFunctionSubclass is torch's private API; pyproject.toml pins torch 2.13.
    with torch._C.DisableTorchFunctionSubclass():
        return [(tensor.dtype, tensor.device, tensor.requires_grad) for tensor in tensors]


def _first_lazy_tensor(module: nn.Module) -> torch.Tensor | None:
    for tensor in (*module._parameters.values(), *module._buffers.values()):
        if isinstance(tensor, nn.parameter.UninitializedTensorMixin):
            return tensor
    return None


def lazy_tensor_dtype(module: nn.Module) -> torch.dtype | None:
    """Return the dtype declared for the module's uninitialized parameters, if it has any."""
    tensor = _first_lazy_tensor(module)
    return None if tensor is None else tensor_properties((tensor,))[0][0]


def lazy_tensor_device(module: nn.Module) -> torch.device | None:
    """Return the device declared for the module's uninitialized parameters, if it has any."""
    tensor = _first_lazy_tensor(module)
    return None if tensor is None else tensor_properties((tensor,))[0][1]
