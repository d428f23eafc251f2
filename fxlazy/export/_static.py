"""The first steps every exporter shares: the static module, its inputs and their names."""

from __future__ import annotations

import contextlib
import inspect
import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fxlazy._inputs import bind_example
from fxlazy._materialize import materialize
from fxlazy.errors import ExportError
from fxlazy.passes.widths import is_pending_lazy

from .parity import InputSet

__all__ = [
    "prepare_static",
    "eval_mode",
    "input_names",
    "build_input_sets",
    "resize_batch",
    "shared_batch_size",
    "check_output_path",
]

logger = logging.getLogger(__name__)


def _as_tuple(example: Any) -> tuple[Any, ...]:
    return example if isinstance(example, tuple) else (example,)


def _has_pending_lazy(module: nn.Module) -> bool:
    return any(is_pending_lazy(m) for m in module.modules())


def prepare_static(module: nn.Module, example: Any) -> tuple[nn.Module, tuple[torch.Tensor, ...]]:
    """Return the module to export and its positional tensor inputs.

    A model that still has lazy modules is materialized first, without changing it.
    Its non-tensor example values are then baked into the static module, whose forward
    takes the example's tensors alone.
    """
    arguments = _as_tuple(example)
    if _has_pending_lazy(module):
        logger.info("%s still has lazy modules; materializing it before export.", type(module).__name__)
        tensors = tuple(bind_example(module, arguments, None).tensors.values())
        return materialize(module, arguments), tensors

    not_tensors = [f"{i} ({type(a).__name__})" for i, a in enumerate(arguments) if not isinstance(a, torch.Tensor)]
    if not_tensors:
        raise ExportError(
            f"The example for {type(module).__name__} has non-tensor arguments at positions "
            f"{', '.join(not_tensors)}. Exported artifacts take tensors only: pass the static "
            "module from fxlazy.materialize, which bakes non-tensor values into its graph, "
            "with the example's tensors."
        )
    return module, arguments


@contextlib.contextmanager
def eval_mode(module: nn.Module) -> Iterator[None]:
    """Put ``module`` and every submodule in eval mode, and restore each one's mode afterwards."""
    modes = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        yield
    finally:
        for submodule, training in modes:
            submodule.training = training


def input_names(module: nn.Module, count: int) -> list[str]:
    """Name the first ``count`` positional inputs after the parameters of ``module.forward``."""
    names = [
        p.name
        for p in inspect.signature(module.forward).parameters.values()
        if p.kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    ]
    if len(names) < count:
        names += [f"input_{i}" for i in range(len(names), count)]
    return names[:count]


def shared_batch_size(inputs: Sequence[torch.Tensor], names: Sequence[str]) -> int:
    """Return the batch size, dim 0, that every input shares."""
    sizes = {}
    for name, tensor in zip(names, inputs):
        if tensor.dim() == 0:
            raise ExportError(
                f"A dynamic batch needs every input to have the batch as dim 0, but input "
                f"'{name}' is a scalar tensor. Drop the dynamic batch, or pass the input with a "
                "batch dim."
            )
        sizes[name] = int(tensor.shape[0])
    if len(set(sizes.values())) > 1:
        found = ", ".join(f"'{n}': {s}" for n, s in sizes.items())
        raise ExportError(
            f"A dynamic batch needs every input to have the same size in dim 0, but the sizes "
            f"are {found}. Drop the dynamic batch, or give every input the same batch size."
        )
    return next(iter(sizes.values()))


def resize_batch(inputs: Sequence[torch.Tensor], names: Sequence[str], size: int) -> tuple[torch.Tensor, ...]:
    """Return the inputs with dim 0 resized to ``size``, cycling through the existing rows.

    Repeating real rows keeps every value valid for the model (token ids stay in range,
    masks stay masks), which random values would not.
    """
    batch = shared_batch_size(inputs, names)
    rows = torch.arange(size) % batch
    return tuple(t.index_select(0, rows.to(t.device)) for t in inputs)


def build_input_sets(
    example: tuple[torch.Tensor, ...],
    extra_inputs: Sequence[Any],
    names: Sequence[str],
    second_batch: int | None,
) -> list[InputSet]:
    """List the inputs to check: the example, the example at ``second_batch`` if given, and the extras."""
    sets = [InputSet("example", example)]
    if second_batch is not None:
        sets.append(InputSet(f"example at batch {second_batch}", resize_batch(example, names, second_batch)))
    for index, extra in enumerate(extra_inputs, start=1):
        tensors = _as_tuple(extra)
        if len(tensors) != len(example) or not all(isinstance(t, torch.Tensor) for t in tensors):
            raise ExportError(
                f"Extra input {index} has {len(tensors)} argument(s) of types "
                f"{[type(t).__name__ for t in tensors]}, but the static module takes "
                f"{len(example)} tensor(s) ({', '.join(names)}). Pass each extra input like the "
                "example: a tensor, or a tuple with one tensor per input."
            )
        sets.append(InputSet(f"extra input {index}", tensors))
    return sets


def check_output_path(path: str | Path) -> Path:
    """Return ``path`` as a Path after checking that its folder exists, before any export work."""
    path = Path(path)
    if not path.parent.is_dir():
        raise ExportError(
            f"Cannot write {path}: the folder {path.parent} does not exist. Create it, or "
            "choose another output path."
        )
    if path.is_dir():
        raise ExportError(f"Cannot write {path}: it is a folder. Pass a file path.")
    return path
