"""The records fxlazy stores on graph nodes, and the ``node.meta`` keys they live under.

Everything the shape report needs lives on the returned GraphModule's nodes, so a
report can be rebuilt from the GraphModule alone, also after ``copy.deepcopy``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch.fx.passes.shape_prop import TensorMetadata

__all__ = [
    "TENSOR_META_KEY",
    "LAZY_CALL_KEY",
    "MODEL_NAME_KEY",
    "SPECIALIZATIONS_KEY",
    "DYNAMIC_DIMS_KEY",
    "LazyCallRecord",
    "CallSpec",
    "TensorSpec",
    "tensor_metadata",
]

# The key torch.fx's ShapeProp writes; graph drawers and other fx tools read it.
TENSOR_META_KEY = "tensor_meta"
# The key of a LazyCallRecord on each call_module node of a materialized lazy module.
LAZY_CALL_KEY = "fxlazy_lazy_call"
# The key in ``gm.meta`` of the shape-dependent conditions the trace resolved with the
# example's shapes, as a tuple of "source line: value" strings. It is empty for a general trace.
SPECIALIZATIONS_KEY = "fxlazy_specializations"
# The key in ``gm.meta`` of the input dims whose sizes differ across the examples given to
# materialize, as {input name: tuple of dims}; empty for a single example.
DYNAMIC_DIMS_KEY = "fxlazy_dynamic_dims"
# The key in ``gm.meta`` of the model's class name, which a deep copy of the GraphModule
# does not keep as its class name.
MODEL_NAME_KEY = "fxlazy_model_name"


@dataclass(frozen=True)
class LazyCallRecord:
    """The facts fxlazy inferred at one call of a lazy module.

    Attributes:
        module: qualified name of the module in the model, such as ``decoder.up1``.
        lazy_class: class name before materialization, such as ``LazyConvTranspose2d``.
        concrete_class: class name after materialization, such as ``ConvTranspose2d``.
        inferred: constructor arguments the call fixed, such as ``{"in_channels": 64}``.
        source: where the inferred values came from, such as ``input dim 1``.
        output: the argument fixing the output width and its value, or None when unknown.
        call_index: 0 for the call that materialized the module, 1 and up for later calls.
    """

    module: str
    lazy_class: str
    concrete_class: str
    inferred: dict[str, int] = field(default_factory=dict)
    source: str = ""
    output: tuple[str, int] | None = None
    call_index: int = 0


@dataclass(frozen=True)
class TensorSpec:
    """Shape and dtype of a tensor argument whose values fxlazy never computed."""

    shape: tuple[int, ...]
    dtype: torch.dtype
    requires_grad: bool


@dataclass(frozen=True)
class CallSpec:
    """The arguments of a lazy module's first call, with tensors replaced by TensorSpecs."""

    module: str
    args: tuple
    kwargs: dict


# The memory formats ShapeProp tries, in its order, with the only rank each applies to.
_MEMORY_FORMATS = ((torch.contiguous_format, None), (torch.channels_last, 4), (torch.channels_last_3d, 5))


def tensor_metadata(tensor: torch.Tensor) -> TensorMetadata:
    """Describe a dense, unquantized tensor with the record torch.fx's ShapeProp writes.

    ShapeProp's own ``_extract_tensor_metadata`` checks the memory format through
    torch._prims_common, whose first call imports sympy (about 0.4 s in torch 2.13).
    ``Tensor.is_contiguous`` gives the same result for dense tensors without it.
    """
    memory_format = None
    for candidate, rank in _MEMORY_FORMATS:
        if (rank is None or tensor.dim() == rank) and tensor.is_contiguous(memory_format=candidate):
            memory_format = candidate
            break
    return TensorMetadata(
        shape=tensor.shape,
        dtype=tensor.dtype,
        requires_grad=tensor.requires_grad,
        stride=tensor.stride(),
        memory_format=memory_format,
        is_quantized=False,
        qparams={},
    )
