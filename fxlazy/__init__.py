"""fxlazy: turn PyTorch models with lazy layers into static torch.fx GraphModules.

``materialize(model, example)`` traces the model, propagates shapes on meta tensors,
and returns a GraphModule whose lazy modules are replaced by their concrete classes
(``LazyConvTranspose2d`` becomes ``ConvTranspose2d``), without running the model and
without changing it. ``shape_report(gm)`` shows what was inferred, as a table in text,
Markdown, CSV, HTML or JSON, and ``draw_graph(gm)`` draws it.

``export_torchscript``, ``export_onnx`` and ``export_program`` export the static module
and check that the artifact computes what it computes. ``materialize_from_checkpoint``
takes the widths from a checkpoint instead of an example, and ``load_checkpoint`` loads
one into a static module.
"""

import importlib
from typing import TYPE_CHECKING, Any

from ._materialize import materialize
from .errors import (
    CheckpointError,
    ExampleInputError,
    ExportError,
    FxLazyError,
    InvalidOptionError,
    LazyDeviceMismatchError,
    LazyDtypeMismatchError,
    LazyInitializationError,
    MissingDependencyError,
    ModuleCreatedInForwardError,
    ModelCopyError,
    ParityError,
    ReportError,
    ShapePropagationError,
    SharedLazyModuleError,
    TargetError,
    UnsupportedLazyModuleError,
    UntraceableModelError,
    UnusedLazyModuleError,
)
# The report, drawing, export and checkpoint helpers import tabulate, graphviz and the
# exporters' modules, which materialize does not need. They load on first use, so
# `import fxlazy` stays cheap for the step before export.
_LAZY_NAMES = {
    "load_checkpoint": ".checkpoint",
    "materialize_from_checkpoint": ".checkpoint",
    "draw_graph": ".drawing",
    "ExportFallbackWarning": ".export",
    "ExportResult": ".export",
    "ExportWarning": ".export",
    "OutputDifference": ".export",
    "ParityCheck": ".export",
    "Tolerance": ".export",
    "export_onnx": ".export",
    "export_program": ".export",
    "export_torchscript": ".export",
    "LayerRow": ".report",
    "ModuleFrame": ".report",
    "NodeRow": ".report",
    "ShapeReport": ".report",
    "shape_report": ".report",
}

if TYPE_CHECKING:
    from .checkpoint import load_checkpoint, materialize_from_checkpoint
    from .drawing import draw_graph
    from .export import (
        ExportFallbackWarning,
        ExportResult,
        ExportWarning,
        OutputDifference,
        ParityCheck,
        Tolerance,
        export_onnx,
        export_program,
        export_torchscript,
    )
    from .report import LayerRow, ModuleFrame, NodeRow, ShapeReport, shape_report


def __getattr__(name: str) -> Any:
    module_name = _LAZY_NAMES.get(name)
    if module_name is None:
        raise AttributeError(f"module 'fxlazy' has no attribute {name!r}")
    value = getattr(importlib.import_module(module_name, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY_NAMES))


__version__ = "0.1.0"

__all__ = [
    "materialize",
    "shape_report",
    "draw_graph",
    "ShapeReport",
    "LayerRow",
    "NodeRow",
    "ModuleFrame",
    "FxLazyError",
    "InvalidOptionError",
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
    "load_checkpoint",
    "materialize_from_checkpoint",
    "export_torchscript",
    "export_onnx",
    "export_program",
    "ExportResult",
    "ParityCheck",
    "OutputDifference",
    "Tolerance",
    "ExportWarning",
    "ExportFallbackWarning",
    "ExportError",
    "ParityError",
    "CheckpointError",
    "TargetError",
]
