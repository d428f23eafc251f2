"""Command-line model targets (``package.module:factory``, ``path/to/file.py:factory``) and input specs."""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .errors import TargetError

__all__ = ["InputSpec", "load_model", "parse_input_spec", "random_inputs"]

_DIMS_SEPARATOR = re.compile(r"[,x]")


@dataclass(frozen=True)
class InputSpec:
    """The shape and dtype of one tensor input given on the command line."""

    shape: tuple[int, ...]
    dtype: torch.dtype

    def __str__(self) -> str:
        return f"{self.shape}:{str(self.dtype).removeprefix('torch.')}"


def parse_input_spec(text: str) -> InputSpec:
    """Parse ``SHAPE[:DTYPE]`` such as ``2,3,32,32`` or ``1x16:int64``; the dtype defaults to float32.

    Raises:
        ValueError: the shape or the dtype is invalid, as the message names.
    """
    shape_text, _, dtype_text = text.strip().partition(":")
    parts = [p.strip() for p in _DIMS_SEPARATOR.split(shape_text.strip().strip("()[]"))]
    if not shape_text.strip() or not all(p.isdigit() for p in parts):
        raise ValueError(f"invalid shape {shape_text!r}: write the sizes as integers, such as 2,3,32,32 or 2x3x32x32")
    shape = tuple(int(p) for p in parts)

    dtype = torch.float32
    if dtype_text:
        candidate = getattr(torch, dtype_text.strip().removeprefix("torch."), None)
        if not isinstance(candidate, torch.dtype):
            raise ValueError(f"unknown dtype {dtype_text!r}: use a torch dtype name such as float32, float16, bfloat16 or int64")
        dtype = candidate
    return InputSpec(shape, dtype)


def random_inputs(specs: list[InputSpec], seed: int) -> tuple[torch.Tensor, ...]:
    """Build one tensor per spec from a generator seeded with ``seed``.

    Floating-point inputs are standard normal. Integer and bool inputs are 0 or 1, which
    are valid token ids, class indexes and mask values for any model.
    """
    generator = torch.Generator().manual_seed(seed)
    tensors = []
    for spec in specs:
        if spec.dtype.is_floating_point or spec.dtype.is_complex:
            tensors.append(torch.randn(spec.shape, generator=generator, dtype=spec.dtype))
        else:
            tensors.append(torch.randint(0, 2, spec.shape, generator=generator).to(spec.dtype))
    return tuple(tensors)


def _import_file(path: Path) -> object:
    if not path.is_file():
        raise TargetError(f"Model file {path} not found. Check the path before the ':'.")
    # Sibling modules of the file import as they would under `python file.py`.
    folder = str(path.resolve().parent)
    if folder not in sys.path:
        sys.path.insert(0, folder)
    module_name = "_fxlazy_target_" + re.sub(r"\W", "_", path.stem)
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise TargetError(f"Cannot import {path} as Python code. Pass a .py file.")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as error:
        del sys.modules[module_name]
        raise TargetError(f"Importing {path} failed: {type(error).__name__}: {error}. Fix the error in that file.") from error
    return module


def _import_module(name: str) -> object:
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as error:
        if error.name and name.startswith(error.name):
            raise TargetError(
                f"Module '{name}' not found. Check the name before the ':', install the package, "
                "or give a file path such as path/to/model.py:factory."
            ) from error
        raise TargetError(f"Importing '{name}' failed: {error}. Install the missing package.") from error
    except Exception as error:
        raise TargetError(f"Importing '{name}' failed: {type(error).__name__}: {error}. Fix the error in that module.") from error


def _candidates(owner: object) -> list[str]:
    """List the classes and functions defined in ``owner`` that could build a model."""
    names = []
    for name, value in vars(owner).items():
        if name.startswith("_") or getattr(value, "__module__", None) != getattr(owner, "__name__", None):
            continue
        if inspect.isfunction(value) or (inspect.isclass(value) and issubclass(value, nn.Module)):
            names.append(name)
    return names


def load_model(target: str) -> nn.Module:
    """Import ``target`` and call its factory with no arguments to build the model.

    Args:
        target: ``package.module:factory`` or ``path/to/file.py:factory``, where the
            factory is a class or a function, possibly nested (``module:Outer.build``).

    Raises:
        TargetError: the target is malformed, cannot be imported, has no such factory,
            the factory fails, or it returns something that is not an ``nn.Module``.
    """
    location, separator, factory_path = target.rpartition(":")
    if not separator or not location or not factory_path:
        raise TargetError(
            f"Invalid target {target!r}: write package.module:factory or path/to/file.py:factory, "
            "where factory is a class or a function that returns the model."
        )

    is_file = location.endswith(".py") or "/" in location or "\\" in location
    owner = _import_file(Path(location)) if is_file else _import_module(location)

    factory: object = owner
    for part in factory_path.split("."):
        if not hasattr(factory, part):
            available = ", ".join(_candidates(owner)) or "none"
            raise TargetError(
                f"{location} has no attribute '{factory_path}'. Classes and functions defined there: {available}."
            )
        factory = getattr(factory, part)
    if not callable(factory):
        raise TargetError(f"{target} is a value of type {type(factory).__name__}, not a class or function. Name a factory that returns the model.")

    try:
        model = factory()
    except Exception as error:
        raise TargetError(
            f"Calling {target}() failed: {type(error).__name__}: {error}. The factory is called "
            "without arguments; wrap it in a function that passes them."
        ) from error
    if not isinstance(model, nn.Module):
        raise TargetError(f"{target}() returned a value of type {type(model).__name__}, not a torch.nn.Module. Return the model.")
    return model
