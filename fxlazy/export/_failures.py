"""Short descriptions of exporter failures, for messages, warnings and logs."""

from __future__ import annotations

import re

__all__ = ["describe_failure"]

# Terminal color codes, which torch.onnx writes into its error messages.
_ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*m")


def _first_line(error: BaseException) -> str:
    lines = [line.strip() for line in _ANSI_ESCAPE.sub("", str(error)).splitlines() if line.strip()]
    # Callers end the sentence themselves.
    return lines[0].rstrip(" .:") if lines else ""


def describe_failure(error: BaseException) -> str:
    """Describe ``error`` in one line by the root of its ``__cause__`` chain.

    Exporters wrap the failure that matters (a guard on a data-dependent value, an
    unsupported operator) in generic errors such as ``TorchExportError``, whose own
    message is the same for every failure, so the innermost cause is the one described.
    """
    root = error
    while root.__cause__ is not None:
        root = root.__cause__
    if root is error:
        return f"{type(error).__name__}: {_first_line(error)}"
    return f"{type(error).__name__} caused by {type(root).__name__}: {_first_line(root)}"
