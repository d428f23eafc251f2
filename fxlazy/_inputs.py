"""Bind the user's example inputs to the model's ``forward`` signature."""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .errors import ExampleInputError

__all__ = ["ExampleInputs", "bind_example"]


@dataclass(frozen=True)
class ExampleInputs:
    """The example split into graph inputs and values baked into the graph.

    Attributes:
        tensors: tensor arguments by parameter name, in signature order; they become
            the GraphModule's inputs.
        specialized: every other argument by parameter name (None, Python scalars and
            defaults the caller left out); torch.fx bakes their values into the graph.
    """

    tensors: dict[str, torch.Tensor]
    specialized: dict[str, Any]


def bind_example(model: nn.Module, example: Any, example_kwargs: Mapping[str, Any] | None) -> ExampleInputs:
    """Bind ``example`` (a tensor or a tuple of positional arguments) and ``example_kwargs``.

    Raises:
        ExampleInputError: the arguments do not fit ``model.forward``, or it takes
            ``*args`` or ``**kwargs``.
    """
    args = example if isinstance(example, tuple) else (example,)
    kwargs = dict(example_kwargs or {})
    signature = inspect.signature(model.forward)
    model_name = type(model).__name__

    variadic = [
        p.name for p in signature.parameters.values()
        if p.kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
    ]
    if variadic:
        raise ExampleInputError(
            f"{model_name}.forward{signature} takes variadic arguments ({', '.join(variadic)}), "
            "which fxlazy does not support yet. Wrap the model in a module whose forward "
            "names each input."
        )

    try:
        bound = signature.bind(*args, **kwargs)
    except TypeError as error:
        raise ExampleInputError(
            f"The example does not fit {model_name}.forward{signature}: {error}. "
            f"Got {len(args)} positional argument(s) and keyword argument(s) {sorted(kwargs)}; "
            "pass a tensor, or a tuple with one entry per positional parameter, and keyword "
            "inputs through example_kwargs."
        ) from error
    bound.apply_defaults()

    tensors: dict[str, torch.Tensor] = {}
    specialized: dict[str, Any] = {}
    for name, value in bound.arguments.items():
        if isinstance(value, torch.Tensor):
            tensors[name] = value
        elif _contains_tensor(value):
            raise ExampleInputError(
                f"Argument '{name}' of {model_name}.forward is a {type(value).__name__} that "
                "contains tensors, which fxlazy does not support yet. Pass each tensor as its "
                "own argument."
            )
        else:
            specialized[name] = value
    return ExampleInputs(tensors, specialized)


def _contains_tensor(value: Any) -> bool:
    if isinstance(value, torch.Tensor):
        return True
    if isinstance(value, (list, tuple)):
        return any(_contains_tensor(v) for v in value)
    if isinstance(value, Mapping):
        return any(_contains_tensor(v) for v in value.values())
    return False
