"""Output shapes of common torch.nn modules and functions, computed from formulas.

Running a module on meta tensors goes through torch's Python meta kernels and
decompositions. They cost up to milliseconds a call: a meta BatchNorm2d took about 3 ms
in torch 2.13 on a 2-core x86 machine, measured with cProfile. The first such call in a
process also imports compiler modules, which took about a second there. The formulas
here cover the layers that dominate lazy models: linear layers, convolutions,
transposed convolutions, norms, pooling, element-wise activations, residual arithmetic
and ``torch.cat``. Each returns None whenever its preconditions do not hold (unusual
dims, mismatched dtypes, non-contiguous input, extra arguments), and the caller then
runs the meta kernel, which also raises torch's own error for bad input.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.modules.batchnorm import _NormBase
from torch.nn.modules.conv import _ConvNd, _ConvTransposeNd
from torch.nn.modules.lazy import LazyModuleMixin

from .widths import tensor_properties

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

# Pooling classes by their number of spatial dims.
_ADAPTIVE_POOLING: dict[type, int] = {
    nn.AdaptiveAvgPool1d: 1, nn.AdaptiveAvgPool2d: 2, nn.AdaptiveAvgPool3d: 3,
    nn.AdaptiveMaxPool1d: 1, nn.AdaptiveMaxPool2d: 2, nn.AdaptiveMaxPool3d: 3,
}
_POOLING_DIMS: dict[type, int] = {
    **_ADAPTIVE_POOLING,
    nn.MaxPool1d: 1, nn.MaxPool2d: 2, nn.MaxPool3d: 3,
    nn.AvgPool1d: 1, nn.AvgPool2d: 2, nn.AvgPool3d: 3,
}

_IN_PLACE_ARITHMETIC: frozenset[Any] = frozenset({
    operator.iadd, operator.isub, operator.imul, operator.itruediv, "add_", "sub_", "mul_", "div_",
})
_ARITHMETIC: frozenset[Any] = _IN_PLACE_ARITHMETIC | {
    operator.add, operator.sub, operator.mul, operator.truediv,
    torch.add, torch.sub, torch.mul, torch.div, "add", "sub", "mul", "div",
}
_CONCATENATIONS: frozenset[Any] = frozenset({torch.cat, torch.concat})

_NORM_DIMS: dict[type, tuple[int, ...]] = {
    nn.BatchNorm1d: (2, 3), nn.BatchNorm2d: (4,), nn.BatchNorm3d: (5,),
    nn.InstanceNorm1d: (2, 3), nn.InstanceNorm2d: (3, 4), nn.InstanceNorm3d: (4, 5),
}


class _LayerOutput(torch.autograd.Function):
    """Create an empty meta tensor as the output of an autograd node, as a layer's output is.

    A tensor made with ``requires_grad_()`` is a leaf, and torch rejects in-place calls
    such as ``x.add_(1)`` on a leaf that requires grad, while it accepts them on a real
    layer's output.
    """

    @staticmethod
    def forward(ctx: Any, source: torch.Tensor, shape: tuple[int, ...], strides: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
        return torch.empty_strided(shape, strides, dtype=dtype, device="meta")

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[None, None, None, None]:
        return None, None, None, None


# The input of every _LayerOutput node. It only makes the outputs require grad.
_GRAD_SOURCE = torch.empty((), device="meta", requires_grad=True)


def _meta_like(template: torch.Tensor, shape: Sequence[int], requires_grad: bool) -> torch.Tensor:
    """Return a contiguous meta tensor of ``shape`` with the dtype of ``template``."""
    strides = [1] * len(shape)
    for index in range(len(shape) - 2, -1, -1):
        strides[index] = strides[index + 1] * max(shape[index + 1], 1)
    if requires_grad:
        return _LayerOutput.apply(_GRAD_SOURCE, tuple(shape), tuple(strides), template.dtype)
    return torch.empty_strided(tuple(shape), tuple(strides), dtype=template.dtype, device="meta")


def _single_tensor_input(args: tuple, kwargs: dict[str, Any]) -> torch.Tensor | None:
    if len(args) != 1 or kwargs or not isinstance(args[0], torch.Tensor):
        return None
    x = args[0]
    if not x.is_floating_point() or not x.is_contiguous():
        return None
    return x


def _parameters(module: nn.Module) -> list[torch.Tensor]:
    return [p for p in module._parameters.values() if p is not None]


def _needs_grad(x: torch.Tensor, module: nn.Module) -> bool:
    if not torch.is_grad_enabled():
        return False
    return x.requires_grad or any(requires_grad for _, _, requires_grad in tensor_properties(_parameters(module)))


def _parameters_match(x: torch.Tensor, module: nn.Module) -> bool:
    return all(dtype == x.dtype for dtype, _, _ in tensor_properties(_parameters(module)))


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


def _adaptive_pooling(module: nn.Module, x: torch.Tensor, spatial: int) -> torch.Tensor | None:
    """Return the output of AdaptiveAvgPool or AdaptiveMaxPool."""
    sizes = module.output_size
    sizes = (sizes,) * spatial if not isinstance(sizes, (tuple, list)) else tuple(sizes)
    if len(sizes) != spatial or any(size is not None and (type(size) is not int or size <= 0) for size in sizes):
        return None
    if any(size == 0 for size in x.shape[-spatial:]):
        return None
    out_sizes = [x.shape[-spatial + index] if size is None else size for index, size in enumerate(sizes)]
    return _meta_like(x, (*x.shape[:-spatial], *out_sizes), x.requires_grad and torch.is_grad_enabled())


def _window_pooling(module: nn.Module, x: torch.Tensor, spatial: int) -> torch.Tensor | None:
    """Return the output of MaxPool or AvgPool without ceil_mode."""
    if module.ceil_mode:
        return None

    def per_dim(value: Any) -> tuple[int, ...] | None:
        if type(value) is int:
            return (value,) * spatial
        if not isinstance(value, (tuple, list)) or len(value) != spatial:
            return None
        return tuple(value) if all(type(v) is int for v in value) else None

    kernel = per_dim(module.kernel_size)
    stride = per_dim(module.stride)
    padding = per_dim(module.padding)
    dilation = per_dim(getattr(module, "dilation", 1))
    if kernel is None or stride is None or padding is None or dilation is None:
        return None
    # torch requires padding of at most half the kernel, and AvgPool3d an input at least as
    # large as the kernel. The meta kernel raises torch's own error for those inputs.
    sizes = x.shape[-spatial:]
    if any(pad > k // 2 for pad, k in zip(padding, kernel)) or any(size < k for size, k in zip(sizes, kernel)):
        return None
    out_sizes = [
        (size + 2 * pad - d * (k - 1) - 1) // step + 1
        for size, pad, d, k, step in zip(sizes, padding, dilation, kernel, stride)
    ]
    if any(size <= 0 for size in out_sizes):
        return None
    return _meta_like(x, (*x.shape[:-spatial], *out_sizes), x.requires_grad and torch.is_grad_enabled())


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

    if type(module) in _POOLING_DIMS:
        spatial = _POOLING_DIMS[type(module)]
        x = _single_tensor_input(args, kwargs)
        if x is None or x.dim() not in (spatial + 1, spatial + 2) or getattr(module, "return_indices", False):
            return None
        pooling = _adaptive_pooling if type(module) in _ADAPTIVE_POOLING else _window_pooling
        return pooling(module, x, spatial)

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


def _arithmetic(target: Any, args: tuple, kwargs: dict[str, Any]) -> torch.Tensor | None:
    """Return the output of ``a + b``, ``a * b`` and the like, for operands of one shape and dtype.

    Operands are two contiguous floating-point tensors of the same shape and dtype, or
    one such tensor and a Python int or float. Broadcasting and type promotion are left
    to the meta kernel.
    """
    if len(args) != 2 or kwargs:
        return None
    left, right = args
    tensors = [x for x in args if isinstance(x, torch.Tensor)]
    if not tensors or any(not x.is_floating_point() or not x.is_contiguous() for x in tensors):
        return None
    if len(tensors) == 2:
        if left.shape != right.shape or left.dtype != right.dtype:
            return None
    elif type(left if tensors[0] is right else right) not in (int, float):
        return None
    grad_enabled = torch.is_grad_enabled()
    requires_grad = grad_enabled and any(x.requires_grad for x in tensors)
    if target not in _IN_PLACE_ARITHMETIC:
        return _meta_like(tensors[0], tensors[0].shape, requires_grad)
    # An in-place call returns its left operand. It must be a tensor that keeps its
    # requires_grad, and not a leaf that requires grad, for which torch raises.
    if not isinstance(left, torch.Tensor) or left.requires_grad != requires_grad:
        return None
    if grad_enabled and left.requires_grad and left.is_leaf:
        return None
    return left


def _concatenation(args: tuple, kwargs: dict[str, Any]) -> torch.Tensor | None:
    """Return the output of ``torch.cat`` for contiguous tensors of one dtype that differ only in ``dim``."""
    if not args or len(args) > 2 or set(kwargs) - {"dim"} or (len(args) == 2 and kwargs):
        return None
    tensors = args[0]
    dim = args[1] if len(args) == 2 else kwargs.get("dim", 0)
    if not isinstance(tensors, (list, tuple)) or not tensors or type(dim) is not int:
        return None
    first = tensors[0]
    if not all(isinstance(x, torch.Tensor) for x in tensors) or first.dim() == 0:
        return None
    rank = first.dim()
    if not -rank <= dim < rank:
        return None
    dim %= rank
    for x in tensors:
        if x.dtype != first.dtype or x.dim() != rank or x.numel() == 0 or not x.is_contiguous():
            return None
        if any(size != other for index, (size, other) in enumerate(zip(x.shape, first.shape)) if index != dim):
            return None
    shape = list(first.shape)
    shape[dim] = sum(x.shape[dim] for x in tensors)
    requires_grad = torch.is_grad_enabled() and any(x.requires_grad for x in tensors)
    return _meta_like(first, shape, requires_grad)


def function_output(target: Any, args: tuple, kwargs: dict[str, Any]) -> torch.Tensor | None:
    """Return a meta tensor shaped like a call_function or call_method node's result, or None.

    Covers element-wise activations, arithmetic between operands of one shape (residual
    additions) and ``torch.cat``. The first meta call of ``add`` or ``cat`` in a process
    imports torch's compiler modules, which took about 1.3 s in torch 2.13 here.
    """
    if target in _ARITHMETIC:
        return _arithmetic(target, args, kwargs)
    if target in _CONCATENATIONS:
        return _concatenation(args, kwargs)
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
