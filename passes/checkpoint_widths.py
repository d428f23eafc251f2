"""Read lazy modules' input widths from checkpoint tensor shapes, and materialize modules from them.

This is the example-free counterpart of shape propagation. A built-in lazy class of
torch.nn stores its input width in the shape of one of its tensors, which in torch 2.13
is laid out as follows:

- ``Linear.weight`` has shape ``(out_features, in_features)``;
- ``ConvNd.weight`` has shape ``(out_channels, in_channels / groups, *kernel_size)``;
- ``ConvTransposeNd.weight`` has shape ``(in_channels, out_channels / groups, *kernel_size)``;
- a norm's ``weight``, ``bias``, ``running_mean`` and ``running_var`` have shape ``(num_features,)``.

A module is then materialized by its own ``initialize_parameters``, fed a one-element
input expanded to a shape with that width, so it ends up exactly as an eager first call
would leave it (class, hyper-parameters, parameter shapes, hooks removed).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import nn

from fxlazy.errors import CheckpointError, UnsupportedLazyModuleError

from .initialize import initialize_lazy_module
from .widths import lazy_tensor_device, lazy_tensor_dtype, width_rule_for

__all__ = ["CheckpointWidth", "read_checkpoint_width", "materialize_from_width"]

# The tensors a lazy norm may own, in the order the width is read from them.
_NORM_TENSORS = ("weight", "bias", "running_mean", "running_var")


@dataclass(frozen=True)
class CheckpointWidth:
    """A lazy module's input width, and the checkpoint entry it was read from.

    Attributes:
        module: qualified name of the lazy module.
        argument: the constructor argument, such as ``in_channels``.
        width: its value.
        key: the checkpoint key read, such as ``blocks.0.conv.weight``.
        shape: that entry's shape.
        dim: the dim of ``shape`` the width comes from.
        groups: the factor the dim's size was multiplied by (a convolution's ``groups``).
    """

    module: str
    argument: str
    width: int
    key: str
    shape: tuple[int, ...]
    dim: int
    groups: int = 1

    def describe(self) -> str:
        """Describe where the width comes from, such as ``'head.weight' dim 1``."""
        factor = f" x {self.groups} groups" if self.groups != 1 else ""
        return f"'{self.key}' dim {self.dim}{factor}"


def _entry(state_dict: Mapping[str, torch.Tensor], name: str, module: nn.Module, attribute: str) -> tuple[str, torch.Tensor]:
    key = f"{name}.{attribute}"
    if key not in state_dict:
        raise CheckpointError(
            f"The checkpoint has no entry '{key}', which the width of '{name}' "
            f"({type(module).__name__}) is read from. Check that the checkpoint was saved from "
            "this model, or pass an example input so the width comes from the example.",
            keys=(key,),
        )
    return key, state_dict[key]


def _require_dims(name: str, module: nn.Module, key: str, tensor: torch.Tensor, dims: int) -> None:
    if tensor.dim() != dims:
        raise CheckpointError(
            f"Checkpoint entry '{key}' has shape {tuple(tensor.shape)}, but '{name}' "
            f"({type(module).__name__}) needs a {dims}-dim tensor there. Check that the "
            "checkpoint was saved from this model.",
            keys=(key,),
        )


def read_checkpoint_width(module: nn.Module, name: str, state_dict: Mapping[str, torch.Tensor]) -> CheckpointWidth:
    """Read the input width of the pending lazy module ``name`` from ``state_dict``.

    Raises:
        CheckpointError: the entry the width is read from is missing or has the wrong
            number of dims.
        UnsupportedLazyModuleError: the module is not a built-in lazy class of torch.nn,
            or owns no tensor that records its width.
    """
    rule = width_rule_for(module)
    if rule is None:
        raise UnsupportedLazyModuleError(
            f"Materializing '{name}' ({type(module).__name__}) from a checkpoint without an "
            "example is not supported yet: fxlazy reads widths from checkpoint shapes only for "
            "the built-in lazy classes of torch.nn. Pass an example input along with the checkpoint."
        )

    if rule.inferred_argument == "in_features":
        key, tensor = _entry(state_dict, name, module, "weight")
        _require_dims(name, module, key, tensor, 2)
        return CheckpointWidth(name, "in_features", int(tensor.shape[1]), key, tuple(tensor.shape), dim=1)

    if rule.inferred_argument == "in_channels":
        key, tensor = _entry(state_dict, name, module, "weight")
        _require_dims(name, module, key, tensor, 2 + (rule.spatial_dims or 0))
        if module.transposed:
            return CheckpointWidth(name, "in_channels", int(tensor.shape[0]), key, tuple(tensor.shape), dim=0)
        groups = int(module.groups)
        return CheckpointWidth(name, "in_channels", int(tensor.shape[1]) * groups, key, tuple(tensor.shape), dim=1, groups=groups)

    owned = [t for t in _NORM_TENSORS if getattr(module, t, None) is not None]
    if not owned:
        raise UnsupportedLazyModuleError(
            f"'{name}' ({type(module).__name__}) has neither affine weights nor running "
            "statistics, so no checkpoint entry records its num_features. Materializing it "
            "from a checkpoint without an example is not supported; pass an example input "
            "along with the checkpoint."
        )
    key, tensor = _entry(state_dict, name, module, owned[0])
    _require_dims(name, module, key, tensor, 1)
    return CheckpointWidth(name, "num_features", int(tensor.shape[0]), key, tuple(tensor.shape), dim=0)


def materialize_from_width(module: nn.Module, width: CheckpointWidth) -> None:
    """Materialize one pending lazy module with ``width`` through its own ``initialize_parameters``.

    The parameters are initialized as the class initializes them, drawing from the
    global random generator; callers that load values afterwards fork it first.
    """
    rule = width_rule_for(module)
    assert rule is not None, "read_checkpoint_width rejects classes without a rule"
    device = lazy_tensor_device(module) or torch.device("cpu")
    dtype = lazy_tensor_dtype(module) or torch.float32
    # Linear reads the last dim, a norm dim 1, a convolution dim 1 of a batched input.
    shape = (1, width.width) + (1,) * (rule.spatial_dims or 0)
    dummy = torch.zeros((), dtype=dtype, device=device).expand(shape)
    with torch.no_grad():
        initialize_lazy_module(module, width.module, (dummy,), {}, width.width)
