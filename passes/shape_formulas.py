"""Output shapes of common torch.nn modules and functions, computed from formulas.

Running a module on meta tensors goes through torch's Python meta kernels and
decompositions. They cost up to milliseconds a call: a meta BatchNorm2d took about 3 ms
in torch 2.13 on a 2-core x86 machine, measured with cProfile. The first such call in a
process also imports compiler modules, which took about a second there. The formulas here cover the layers that dominate
lazy models: linear layers, convolutions, transposed convolutions, norms and
element-wise activations. Each returns None whenever its preconditions do not hold
(unusual dims, mismatched dtypes, non-contiguous input, extra arguments), and the
caller then runs the meta kernel, which also raises torch's own error for bad input.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.modules.batchnorm import _NormBase
from torch.nn.modules.conv import _ConvNd, _ConvTransposeNd
from torch.nn.modules.lazy import LazyModuleMixin

__all__ = ["module_output", "function_output"]

_ELEMENTWISE_MODULES: tuple[type, ...] = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.CELU, nn.SELU, nn.GELU, nn.SiLU, nn.Mish,
    nn.Sigmoid, nn.Tanh, nn.Hardtanh, nn.Hardswish, nn.Hardsigmoid, nn.Softplus,
    nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout,
)
_ELEMENTWISE_FUNCTIONS: frozenset[Callable[..., Any]] = frozenset({
    torch.relu, torch.tanh, torch.sigmoid, F.relu, F.gelu, F.silu, F.leaky_relu, F.elu,
    torch.nn.functional.hardswish, torch.sigmoid_, torch.relu_, torch.tanh_,
})
_ELEMENTWISE_METHODS = frozenset({"relu", "tanh", "sigmoid", "relu_", "tanh_", "sigmoid_", "contiguous"})

_NORM_DIMS: dict[type, tuple[int, ...]] = {
    nn.BatchNorm1d: (2, 3), nn.BatchNorm2d: (4,), nn.BatchNorm3d: (5,),
    nn.InstanceNorm1d: (2, 3), nn.InstanceNorm2d: (3, 4), nn.InstanceNorm3d: (4, 5),
}


def _meta_like(template: torch.Tensor, shape: Sequence[int], requires_grad: bool) -> torch.Tensor:
    """Return a contiguous meta tensor of ``shape`` with the dtype of ``template``."""
    strides = [1] * len(shape)
    for index in range(len(shape) - 2, -1, -1):
        strides[index] = strides[index + 1] * max(shape[index + 1], 1)
    result = torch.empty_strided(tuple(shape), tuple(strides), dtype=template.dtype, device="meta")
    return result.requires_grad_(requires_grad) if requires_grad else result


def _single_tensor_input(args: tuple, kwargs: dict[str, Any]) -> torch.Tensor | None:
    if len(args) != 1 or kwargs or not isinstance(args[0], torch.Tensor):
        return None
    x = args[0]
    if not x.is_floating_point() or not x.is_contiguous():
        return None
    return x


def _needs_grad(x: torch.Tensor, module: nn.Module) -> bool:
    if not torch.is_grad_enabled():
        return False
    return x.requires_grad or any(p.requires_grad for p in module._parameters.values() if p is not None)


def _parameters_match(x: torch.Tensor, module: nn.Module) -> bool:
    return all(p.dtype == x.dtype for p in module._parameters.values() if p is not None)


def _linear(module: nn.Linear, x: torch.Tensor, width: int) -> torch.Tensor | None:
    if x.dim() == 0 or x.shape[-1] != width:
        return None
    return _meta_like(x, (*x.shape[:-1], module.out_features), _needs_grad(x, module))


def _spatial_dims(x: torch.Tensor, spatial: int, channels: int) -> Sequence[int] | None:
    """Return the spatial sizes of a batched or unbatched input, or None if it does not fit."""
    if x.dim() == spatial + 2 and x.shape[1] == channels:
        return x.shape[2:]
    if x.dim() == spatial + 1 and x.shape[0] == channels:
        return x.shape[1:]
    return None


def _convolution(module: _ConvNd, x: torch.Tensor, width: int) -> torch.Tensor | None:
    spatial = len(module.kernel_size)
    sizes = _spatial_dims(x, spatial, width)
    if sizes is None or width % module.groups:
        return None
    if module.padding == "same":
        out_sizes = list(sizes)
    else:
        padding = (0,) * spatial if module.padding == "valid" else module.padding
        out_sizes = [
            (size + 2 * pad - dilation * (kernel - 1) - 1) // stride + 1
            for size, pad, dilation, kernel, stride in zip(sizes, padding, module.dilation, module.kernel_size, module.stride)
        ]
    if any(size <= 0 for size in out_sizes):
        return None
    leading = x.shape[:-spatial - 1]
    return _meta_like(x, (*leading, module.out_channels, *out_sizes), _needs_grad(x, module))


def _transposed_convolution(
    module: _ConvTransposeNd, x: torch.Tensor, width: int, output_size: Sequence[int] | None
) -> torch.Tensor | None:
    spatial = len(module.kernel_size)
    sizes = _spatial_dims(x, spatial, width)
    if sizes is None or width % module.groups or not isinstance(module.padding, tuple):
        return None
    # torch's own check of output_size, which raises ValueError for a size out of range.
    output_padding = module._output_padding(
        x, None if output_size is None else list(output_size), list(module.stride),
        list(module.padding), list(module.kernel_size), spatial, list(module.dilation),
    )
    out_sizes = [
        (size - 1) * stride - 2 * pad + dilation * (kernel - 1) + extra + 1
        for size, stride, pad, dilation, kernel, extra in zip(
            sizes, module.stride, module.padding, module.dilation, module.kernel_size, output_padding
        )
    ]
    if any(size <= 0 for size in out_sizes):
        return None
    leading = x.shape[:-spatial - 1]
    return _meta_like(x, (*leading, module.out_channels, *out_sizes), _needs_grad(x, module))


def _norm(module: nn.Module, x: torch.Tensor, width: int) -> torch.Tensor | None:
    # Lazy norms derive from _BatchNorm or _InstanceNorm, not from their concrete class.
    kind = module.cls_to_become if isinstance(module, LazyModuleMixin) and module.cls_to_become else type(module)
    norm_class = next((c for c in _NORM_DIMS if issubclass(kind, c)), None)
    if norm_class is None or x.dim() not in _NORM_DIMS[norm_class]:
        return None
    # BatchNorm reads channels from dim 1; InstanceNorm from dim 1, or dim 0 unbatched.
    unbatched = norm_class.__name__.startswith("Instance") and x.dim() == min(_NORM_DIMS[norm_class])
    if x.shape[0 if unbatched else 1] != width:
        return None
    return _meta_like(x, x.shape, _needs_grad(x, module))


def module_output(module: nn.Module, args: tuple, kwargs: dict[str, Any], width: int | None = None) -> torch.Tensor | None:
    """Return a meta tensor shaped like ``module(*args, **kwargs)``, or None if no formula applies.

    Args:
        module: the module called; a built-in lazy module counts as its concrete class.
        args, kwargs: the call's arguments, as meta tensors.
        width: the input width a pending lazy module would infer; None for other modules,
            whose width is read from their own attributes.
    """
    if isinstance(module, _ELEMENTWISE_MODULES):
        x = _single_tensor_input(args, kwargs)
        if x is None:
            return None
        if getattr(module, "inplace", False):
            return x
        return _meta_like(x, x.shape, x.requires_grad and torch.is_grad_enabled())

    output_size = None
    if isinstance(module, _ConvTransposeNd) and set(kwargs) <= {"output_size"} and len(args) == 1:
        output_size = kwargs.get("output_size")
        kwargs = {}
    x = _single_tensor_input(args, kwargs)
    if x is None or not _parameters_match(x, module):
        return None

    if isinstance(module, nn.Linear):
        return _linear(module, x, module.in_features if width is None else width)
    if isinstance(module, _ConvTransposeNd):
        return _transposed_convolution(module, x, module.in_channels if width is None else width, output_size)
    if isinstance(module, _ConvNd):
        return _convolution(module, x, module.in_channels if width is None else width)
    if isinstance(module, _NormBase):
        return _norm(module, x, module.num_features if width is None else width)
    return None


def function_output(target: Any, args: tuple, kwargs: dict[str, Any]) -> torch.Tensor | None:
    """Return a meta tensor shaped like an element-wise call_function or call_method, or None."""
    if target in _ELEMENTWISE_FUNCTIONS or target in _ELEMENTWISE_METHODS:
        extra = {k: v for k, v in kwargs.items() if k != "inplace"}
        x = _single_tensor_input(args, extra)
        if x is None:
            return None
        in_place = kwargs.get("inplace", False) or (isinstance(target, str) and target.endswith("_"))
        in_place = in_place or target in (torch.sigmoid_, torch.relu_, torch.tanh_)
        if in_place or target == "contiguous":
            return x
        return _meta_like(x, x.shape, x.requires_grad and torch.is_grad_enabled())
    return None
