"""Parity checks: run an exported artifact and the static module on the same inputs and compare.

A check runs the static module (in eval mode, without autograd) on one input set,
runs the artifact on the same tensors, and compares every output tensor element-wise
the way ``torch.allclose`` does. The first output beyond the tolerance raises a
``ParityError``; otherwise the check returns a record of the largest differences.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils._pytree import keystr, tree_flatten_with_path

from fxlazy.errors import ExportError, FxLazyError, ParityError

from ._failures import describe_failure

__all__ = [
    "Tolerance",
    "InputSet",
    "OutputDifference",
    "ParityCheck",
    "flatten_outputs",
    "run_parity_checks",
]

Shape = tuple[int, ...]


@dataclass(frozen=True)
class Tolerance:
    """The difference allowed between an artifact's output and the static module's.

    An element passes when ``|actual - expected| <= atol + rtol * |expected|``, the rule
    of ``torch.allclose``. The defaults leave room for the reordered float32 sums of
    other runtimes such as onnxruntime, and catch any change in what is computed.
    """

    atol: float = 1e-5
    rtol: float = 1e-4

    def __post_init__(self) -> None:
        if self.atol < 0 or self.rtol < 0 or math.isnan(self.atol) or math.isnan(self.rtol):
            raise ValueError(f"Tolerances must be non-negative numbers, got atol={self.atol}, rtol={self.rtol}.")

    def __str__(self) -> str:
        return f"atol={self.atol:g}, rtol={self.rtol:g}"


@dataclass(frozen=True)
class InputSet:
    """Positional tensor inputs for one parity check, with a label for messages."""

    label: str
    tensors: tuple[torch.Tensor, ...]

    @property
    def shapes(self) -> tuple[Shape, ...]:
        """Shapes of the tensors, in argument order."""
        return tuple(tuple(t.shape) for t in self.tensors)

    def describe(self) -> str:
        """Describe the set for people, such as ``example (2, 3, 16, 16)``."""
        return f"{self.label} {', '.join(str(s) for s in self.shapes)}"


@dataclass(frozen=True)
class OutputDifference:
    """How far one output of the artifact is from the static module's.

    Attributes:
        name: the output's position in the module's result, such as ``output`` or
            ``output[1]``.
        shape: the output's shape.
        max_abs_diff: the largest ``|actual - expected|``.
        max_rel_diff: the largest ``|actual - expected| / |expected|`` over the elements
            whose expected value is not zero; 0.0 when every expected value is zero.
    """

    name: str
    shape: Shape
    max_abs_diff: float
    max_rel_diff: float


@dataclass(frozen=True)
class ParityCheck:
    """One input set run through the artifact and the static module, all outputs within tolerance."""

    inputs: str
    input_shapes: tuple[Shape, ...]
    outputs: tuple[OutputDifference, ...]
    tolerance: Tolerance

    def __str__(self) -> str:
        shapes = ", ".join(str(s) for s in self.input_shapes)
        lines = [f"{self.inputs} {shapes}:"]
        for output in self.outputs:
            lines.append(
                f"  {output.name} {output.shape}: max abs diff {output.max_abs_diff:.3g}, "
                f"max rel diff {output.max_rel_diff:.3g}"
            )
        return "\n".join(lines)


def flatten_outputs(value: Any) -> list[tuple[str, torch.Tensor]]:
    """Flatten a module's result into named tensors, named by their path such as ``output[0]``.

    Raises:
        ExportError: a leaf of the result is not a tensor.
    """
    leaves, _ = tree_flatten_with_path(value)
    named = []
    for path, leaf in leaves:
        name = "output" + keystr(path)
        if not isinstance(leaf, torch.Tensor):
            raise ExportError(
                f"{name} is a value of type {type(leaf).__name__}, not a tensor, and the parity "
                "check compares tensor outputs only. Return tensors from forward, or export "
                "with check=False (--no-check on the command line)."
            )
        named.append((name, leaf))
    return named


def _difference(name: str, expected: torch.Tensor, actual: torch.Tensor) -> OutputDifference:
    expected64 = expected.detach().to(device="cpu", dtype=torch.float64)
    actual64 = actual.detach().to(device="cpu", dtype=torch.float64)
    both_nan = expected64.isnan() & actual64.isnan()
    one_nan = expected64.isnan() ^ actual64.isnan()
    absolute = (actual64 - expected64).abs()
    absolute = absolute.masked_fill(both_nan, 0.0).masked_fill(one_nan, math.inf)

    nonzero = expected64 != 0
    relative = absolute[nonzero] / expected64[nonzero].abs()
    max_abs = float(absolute.max()) if absolute.numel() else 0.0
    max_rel = float(relative.max()) if relative.numel() else 0.0
    return OutputDifference(name, tuple(expected.shape), max_abs, max_rel)


def _elements_beyond(expected: torch.Tensor, actual: torch.Tensor, tolerance: Tolerance) -> int:
    expected64 = expected.detach().to(device="cpu", dtype=torch.float64)
    actual64 = actual.detach().to(device="cpu", dtype=torch.float64)
    close = torch.isclose(actual64, expected64, rtol=tolerance.rtol, atol=tolerance.atol, equal_nan=True)
    return int((~close).sum())


def _compare_one_set(
    inputs: InputSet,
    expected: list[tuple[str, torch.Tensor]],
    actual: Sequence[torch.Tensor],
    tolerance: Tolerance,
    artifact: str,
) -> ParityCheck:
    remedy_structure = (
        "The exporter changed the module's outputs; check the artifact's output list, or "
        "export with check disabled to inspect it."
    )
    if len(actual) != len(expected):
        raise ParityError(
            f"Parity check failed for {artifact} on {inputs.describe()}: it returns "
            f"{len(actual)} output tensor(s), but the static module returns {len(expected)} "
            f"({', '.join(name for name, _ in expected)}). {remedy_structure}",
            output="output", inputs=inputs.label, max_abs_diff=math.inf, max_rel_diff=math.inf,
            atol=tolerance.atol, rtol=tolerance.rtol,
        )

    differences = []
    for (name, want), got in zip(expected, actual):
        if tuple(got.shape) != tuple(want.shape) or got.dtype != want.dtype:
            raise ParityError(
                f"Parity check failed for {artifact} on {inputs.describe()}: {name} has shape "
                f"{tuple(got.shape)} and dtype {got.dtype}, but the static module's has shape "
                f"{tuple(want.shape)} and dtype {want.dtype}. {remedy_structure}",
                output=name, inputs=inputs.label, max_abs_diff=math.inf, max_rel_diff=math.inf,
                atol=tolerance.atol, rtol=tolerance.rtol,
            )
        difference = _difference(name, want, got)
        beyond = _elements_beyond(want, got, tolerance)
        if beyond:
            raise ParityError(
                f"Parity check failed for {artifact} on {inputs.describe()}: {name} differs from "
                f"the static module's by max abs diff {difference.max_abs_diff:.3g} and max rel diff "
                f"{difference.max_rel_diff:.3g}; {beyond:,} of {want.numel():,} elements are beyond "
                f"the tolerance {tolerance}. If the difference is numerical noise, pass a looser "
                "tolerance (tolerance=Tolerance(atol=..., rtol=...), or --atol and --rtol on the "
                "command line). Otherwise the artifact computes something else than the module: "
                "look for randomness in forward, or for an operator the exporter translates differently.",
                output=name, inputs=inputs.label, max_abs_diff=difference.max_abs_diff,
                max_rel_diff=difference.max_rel_diff, atol=tolerance.atol, rtol=tolerance.rtol,
            )
        differences.append(difference)
    return ParityCheck(inputs.label, inputs.shapes, tuple(differences), tolerance)


def run_parity_checks(
    static: nn.Module,
    run_artifact: Callable[[tuple[torch.Tensor, ...]], Sequence[torch.Tensor]],
    input_sets: Sequence[InputSet],
    tolerance: Tolerance,
    artifact: str,
) -> tuple[ParityCheck, ...]:
    """Compare the artifact with ``static`` on every input set, in order.

    Args:
        static: the static module, already in the mode it was exported in.
        run_artifact: runs the artifact on positional tensors and returns its output
            tensors, flattened in the order of :func:`flatten_outputs`.
        input_sets: the inputs to compare on.
        tolerance: the allowed difference.
        artifact: the artifact described for messages, such as
            ``ONNX model 'model.onnx' run by onnxruntime``.

    Returns:
        One :class:`ParityCheck` per input set.

    Raises:
        ParityError: an output differs beyond ``tolerance``, or the outputs' number,
            shapes or dtypes differ.
        ExportError: the artifact fails on an input set, or returns a value that is not
            a tensor.
    """
    checks = []
    for inputs in input_sets:
        with torch.no_grad():
            expected = flatten_outputs(static(*inputs.tensors))
            try:
                actual = list(run_artifact(inputs.tensors))
            except FxLazyError:
                raise
            except Exception as error:
                raise ExportError(
                    f"The {artifact} failed on {inputs.describe()}, which the static module runs: "
                    f"{describe_failure(error)}. The artifact does not accept these inputs: export "
                    "with dynamic dims that cover them, or leave them out of the check."
                ) from error
        checks.append(_compare_one_set(inputs, expected, actual, tolerance, artifact))
    return tuple(checks)
