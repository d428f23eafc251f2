"""Export a static module to TorchScript, ONNX or a torch.export ExportedProgram, with parity checks.

Each exporter writes or builds the artifact. By default it then runs the artifact on
the example and any extra inputs, and compares the outputs with the static module's
(:mod:`fxlazy.export.parity`).
"""

from .onnx import export_onnx
from .parity import OutputDifference, ParityCheck, Tolerance
from .program import export_program
from .result import ExportFallbackWarning, ExportResult, ExportWarning
from .torchscript import export_torchscript

__all__ = [
    "export_torchscript",
    "export_onnx",
    "export_program",
    "ExportResult",
    "ExportWarning",
    "ExportFallbackWarning",
    "ParityCheck",
    "OutputDifference",
    "Tolerance",
]
