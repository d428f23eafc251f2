"""The exceptions fxlazy raises.

Every failure of :func:`fxlazy.materialize` is one subclass of :class:`FxLazyError`,
chained (``from``) to the exception that caused it. Messages name the module or graph
node, the values involved, and what to change. Subclasses that correspond to a built-in
exception category also derive from it (``ExampleInputError`` is a ``TypeError``), so
existing ``except TypeError`` handlers keep working.
"""

from __future__ import annotations

__all__ = [
    "FxLazyError",
    "ExampleInputError",
    "ModelCopyError",
    "UntraceableModelError",
    "ModuleCreatedInForwardError",
    "ShapePropagationError",
    "LazyDtypeMismatchError",
    "LazyDeviceMismatchError",
    "SharedLazyModuleError",
    "LazyInitializationError",
    "UnusedLazyModuleError",
    "UnsupportedLazyModuleError",
    "ReportError",
    "MissingDependencyError",
    "ExportError",
    "ParityError",
    "CheckpointError",
    "TargetError",
    "InvalidOptionError",
]


class FxLazyError(Exception):
    """Base class of every error raised by fxlazy."""


class ExampleInputError(FxLazyError, TypeError):
    """The example inputs do not fit the model's ``forward`` signature."""


class ModelCopyError(FxLazyError):
    """The model could not be copied, so it cannot be materialized out of place."""


class UntraceableModelError(FxLazyError):
    """torch.fx could not trace the model's ``forward``."""


class ModuleCreatedInForwardError(UntraceableModelError):
    """The model's forward builds a module on every call instead of owning it."""


class ShapePropagationError(FxLazyError):
    """A graph node failed while shapes were propagated on meta tensors."""


class LazyDtypeMismatchError(FxLazyError, TypeError):
    """A lazy module receives an input whose dtype differs from the module's own dtype."""


class LazyDeviceMismatchError(FxLazyError, ValueError):
    """A lazy module lives on another device than the example's tensors."""


class SharedLazyModuleError(FxLazyError, ValueError):
    """One lazy module is called at several places with different input widths."""


class LazyInitializationError(FxLazyError):
    """A lazy module's ``initialize_parameters`` failed or left parameters uninitialized."""


class UnusedLazyModuleError(FxLazyError):
    """A lazy module is never called by ``forward`` for the given example."""


class UnsupportedLazyModuleError(FxLazyError, NotImplementedError):
    """A module owns uninitialized parameters in a way fxlazy does not support yet."""


class ReportError(FxLazyError, ValueError):
    """A shape report was asked for an unknown view, column or format, or has nothing to show."""


class MissingDependencyError(FxLazyError, ImportError):
    """An optional package or program that a feature needs is not installed."""


class ExportError(FxLazyError):
    """An exporter (TorchScript, ONNX or torch.export) failed on the static module."""


class ParityError(ExportError):
    """An exported artifact computes outputs that differ from the static module's.

    Attributes:
        output: the output that differs, such as ``output`` or ``output[1]``.
        inputs: the input set it was run on, such as ``example`` or ``extra input 1``.
        max_abs_diff: the largest absolute difference, or ``inf`` when the number,
            shapes or dtypes of the outputs differ.
        max_rel_diff: the largest relative difference, over the elements whose expected
            value is not zero.
        atol: the absolute tolerance the check allowed.
        rtol: the relative tolerance the check allowed.
    """

    def __init__(
        self,
        message: str,
        *,
        output: str,
        inputs: str,
        max_abs_diff: float,
        max_rel_diff: float,
        atol: float,
        rtol: float,
    ) -> None:
        super().__init__(message)
        self.output = output
        self.inputs = inputs
        self.max_abs_diff = max_abs_diff
        self.max_rel_diff = max_rel_diff
        self.atol = atol
        self.rtol = rtol


class CheckpointError(FxLazyError, ValueError):
    """A checkpoint cannot be read or does not fit the model.

    Attributes:
        keys: the state_dict keys at fault, such as the entries whose shapes differ.
    """

    def __init__(self, message: str, *, keys: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.keys = tuple(keys)


class TargetError(FxLazyError, ValueError):
    """A command-line model target (``module:factory`` or ``file.py:factory``) cannot build a model."""


class InvalidOptionError(FxLazyError, ValueError):
    """An option of materialize has an unsupported value or combination."""
