"""The result of an export: the artifact, the method that made it, and the parity checks run on it."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .parity import ParityCheck, Tolerance

__all__ = ["ExportResult", "ExportWarning", "ExportFallbackWarning"]


class ExportWarning(UserWarning):
    """A fact about an export that the caller should know, such as a dynamic dim that stayed static."""


class ExportFallbackWarning(ExportWarning):
    """An exporter failed and fxlazy exported with a fallback method instead."""


@dataclass(frozen=True)
class ExportResult:
    """An exported artifact and the record of its parity check.

    Attributes:
        format: ``torchscript``, ``onnx`` or ``exported-program``.
        path: the file written, or None for an ExportedProgram kept in memory.
        artifact: what the checks ran. A ``torch.jit.ScriptModule`` reloaded from
            ``path``, an ``onnx.ModelProto`` read from ``path`` (without external data), or
            a ``torch.export.ExportedProgram`` (reloaded from ``path`` when one was given).
        method: how it was made, such as ``torch.jit.script`` or ``torch.onnx dynamo``.
        fallback_reason: why the preferred method failed, when a fallback made the artifact.
        dynamic_dims: by input name, the dims the artifact accepts at any size.
        checks: one record per input set compared; empty when the check was skipped.
        tolerance: the tolerance of the checks, or None when the check was skipped.
    """

    format: str
    path: Path | None
    artifact: Any
    method: str
    fallback_reason: str | None = None
    dynamic_dims: dict[str, tuple[int, ...]] = field(default_factory=dict)
    checks: tuple[ParityCheck, ...] = ()
    tolerance: Tolerance | None = None

    @property
    def checked(self) -> bool:
        """Whether a parity check ran (and passed, since a failed one raises)."""
        return bool(self.checks)

    def summary(self) -> str:
        """Describe the export and its parity check in a few lines of text."""
        where = f" to {self.path}" if self.path is not None else ""
        lines = [f"Exported {self.format}{where} with {self.method}."]
        if self.fallback_reason:
            lines.append(f"Fell back to {self.method} because: {self.fallback_reason}")
        if self.dynamic_dims:
            dims = "; ".join(f"{name} dims {', '.join(map(str, d))}" for name, d in self.dynamic_dims.items())
            lines.append(f"Dynamic: {dims}.")
        if not self.checks:
            lines.append("Parity check skipped.")
            return "\n".join(lines)
        lines.append(f"Parity check passed on {len(self.checks)} input set(s) within {self.tolerance}:")
        lines.extend(str(check) for check in self.checks)
        return "\n".join(lines)
