"""Dynamic batch and spatial dims: the request each exporter takes, and the dims each artifact has.

Two kinds of dims can be requested by name. ``batch`` is dim 0 of every input, one size
shared by all of them. ``spatial`` is every dim after the channel dim (dims 2 and up)
of each input with at least three dims. torch.export specializes any dim whose example
size is 0 or 1, so a batch of 1 is repeated to a batch of 2 for tracing. Spatial dims are
given to torch.export as ``Dim.AUTO``, which lets it infer how the inputs' sizes relate
(a U-Net's skip sizes follow from the bottleneck's) and keep a dim static where the model
needs it. A requested dim that comes out static is named in a warning.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch
from torch.export import Dim

from ..passes.records import DYNAMIC_DIMS_KEY
from ._static import resize_batch, shared_batch_size
from .result import ExportWarning

__all__ = [
    "DYNAMIC_AXES",
    "parse_dynamic",
    "requested_dims",
    "inputs_for_tracing",
    "second_batch_size",
    "torch_dynamic_shapes",
    "onnx_dynamic_axes",
    "warn_about_static_dims",
    "check_batch_request",
    "axes_from_examples",
]

DYNAMIC_AXES = ("batch", "spatial")

# The first dim counted as spatial, after the batch and channel dims.
_FIRST_SPATIAL_DIM = 2


def parse_dynamic(dynamic: str | Iterable[str]) -> frozenset[str]:
    """Validate the requested dynamic axes, given as one name or several."""
    requested = frozenset([dynamic] if isinstance(dynamic, str) else dynamic)
    unknown = sorted(requested - set(DYNAMIC_AXES))
    if unknown:
        raise ValueError(f"Unknown dynamic axes {unknown}. Choose from {list(DYNAMIC_AXES)}.")
    return requested


def axes_from_examples(static: torch.nn.Module) -> frozenset[str]:
    """Return the axes the examples given to materialize showed to vary, for a default request.

    materialize records, with several examples, the dims whose sizes differed. A varying
    dim 0 requests ``batch``, and a varying dim 2 or up requests ``spatial``.
    """
    meta = getattr(static, "meta", None)
    varying = meta.get(DYNAMIC_DIMS_KEY, {}) if isinstance(meta, dict) else {}
    axes = set()
    for dims in varying.values():
        if 0 in dims:
            axes.add("batch")
        if any(dim >= _FIRST_SPATIAL_DIM for dim in dims):
            axes.add("spatial")
    return frozenset(axes)


def requested_dims(inputs: Sequence[torch.Tensor], names: Sequence[str], axes: frozenset[str]) -> dict[str, tuple[int, ...]]:
    """Return, by input name, the dims that ``axes`` requests to be dynamic."""
    dims: dict[str, tuple[int, ...]] = {}
    for name, tensor in zip(names, inputs):
        wanted = []
        if "batch" in axes:
            wanted.append(0)
        if "spatial" in axes:
            wanted.extend(range(_FIRST_SPATIAL_DIM, tensor.dim()))
        if wanted:
            dims[name] = tuple(wanted)
    return dims


def inputs_for_tracing(inputs: tuple[torch.Tensor, ...], names: Sequence[str], axes: frozenset[str]) -> tuple[torch.Tensor, ...]:
    """Return the inputs to trace with: a batch of 1 becomes a batch of 2 when the batch is dynamic."""
    if "batch" not in axes or not inputs:
        return inputs
    if all(t.dim() > 0 and t.shape[0] == 1 for t in inputs):
        return resize_batch(inputs, names, 2)
    return inputs


def second_batch_size(inputs: Sequence[torch.Tensor]) -> int:
    """Return a batch size that differs from the example's and from the one traced with."""
    return max(int(inputs[0].shape[0]), 2) + 1


def torch_dynamic_shapes(inputs: Sequence[torch.Tensor], names: Sequence[str], axes: frozenset[str]) -> tuple[Any, ...] | None:
    """Build torch.export's ``dynamic_shapes`` for ``axes``: one dict of dims per input."""
    if not axes:
        return None
    batch = Dim("batch")
    specs: list[dict[int, Any] | None] = []
    for name, tensor in zip(names, inputs):
        spec: dict[int, Any] = {}
        for dim in requested_dims([tensor], [name], axes).get(name, ()):
            spec[dim] = batch if dim == 0 and "batch" in axes else Dim.AUTO
        specs.append(spec or None)
    return tuple(specs)


def onnx_dynamic_axes(inputs: Sequence[torch.Tensor], names: Sequence[str], axes: frozenset[str]) -> dict[str, dict[int, str]] | None:
    """Build the TorchScript-based ONNX exporter's ``dynamic_axes`` for ``axes``."""
    if not axes:
        return None
    result: dict[str, dict[int, str]] = {}
    for name, dims in requested_dims(inputs, names, axes).items():
        result[name] = {dim: "batch" if dim == 0 and "batch" in axes else f"{name}_dim{dim}" for dim in dims}
    return result


def warn_about_static_dims(
    requested: Mapping[str, tuple[int, ...]], obtained: Mapping[str, tuple[int, ...]], artifact: str
) -> None:
    """Warn about every requested dynamic dim that the artifact keeps static."""
    static = [
        f"'{name}' dim {dim}"
        for name, dims in requested.items()
        for dim in dims
        if dim not in obtained.get(name, ())
    ]
    if static:
        warnings.warn(
            f"The {artifact} keeps {', '.join(static)} static: the exporter specialized them, "
            "usually because the example size is 1 or the model's code requires that size. "
            "The artifact accepts only the example's size there.",
            ExportWarning,
            stacklevel=3,
        )


def check_batch_request(inputs: Sequence[torch.Tensor], names: Sequence[str], axes: frozenset[str]) -> None:
    """Raise ExportError when a dynamic batch is requested for inputs that share no batch dim."""
    if "batch" in axes and inputs:
        shared_batch_size(inputs, names)
