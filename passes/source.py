"""Locate the user's source line behind a traced node or a tracing failure.

Error messages point at the line of the user's model, not at torch.fx or fxlazy
internals. Frames whose file lies inside the torch or fxlazy packages are skipped.
"""

from __future__ import annotations

import os
import re
import traceback
from types import TracebackType

import torch
import torch.fx

import fxlazy

_INTERNAL_DIRS = tuple(
    os.path.dirname(os.path.abspath(package.__file__)) + os.sep
    for package in (torch, fxlazy)
) + (os.path.dirname(os.path.abspath(__file__)) + os.sep,)

# One frame of a formatted stack, as `traceback.StackSummary.format` writes it.
# The code line is missing for code without a source file, such as ``python -c``.
_FRAME_PATTERN = re.compile(
    r'File "(?P<file>[^"]+)", line (?P<line>\d+), in (?P<function>\S+)(?:\n {3,}(?P<code>[^\n]*))?'
)


def _is_user_file(filename: str) -> bool:
    return not os.path.abspath(filename).startswith(_INTERNAL_DIRS)


def _describe(filename: str, line: int | str, function: str, code: str | None) -> str:
    location = f"{filename}:{line} in {function}"
    return f"{location} (`{code.strip()}`)" if code else location


def user_frame_of_traceback(tb: TracebackType | None) -> str | None:
    """Describe the innermost frame of ``tb`` that belongs to user code, or return None."""
    for frame in reversed(traceback.extract_tb(tb)):
        if _is_user_file(frame.filename):
            return _describe(frame.filename, frame.lineno or "?", frame.name, frame.line)
    return None


def current_user_frame() -> str | None:
    """Describe the innermost frame of the current call stack that belongs to user code."""
    for frame in reversed(traceback.extract_stack()):
        if _is_user_file(frame.filename):
            return _describe(frame.filename, frame.lineno or "?", frame.name, frame.line)
    return None


def user_frame_of_node(node: torch.fx.Node) -> str | None:
    """Describe the user's source line that created ``node``, or return None.

    The tracer must have run with ``record_stack_traces = True``, which stores the
    formatted stack in ``node.stack_trace``.
    """
    if not node.stack_trace:
        return None
    user_frames = [
        match
        for match in _FRAME_PATTERN.finditer(node.stack_trace)
        if _is_user_file(match["file"])
    ]
    if not user_frames:
        return None
    last = user_frames[-1]
    return _describe(last["file"], last["line"], last["function"], last["code"])


def describe_node(node: torch.fx.Node) -> str:
    """Name ``node`` with its op and target, followed by its user source line where known."""
    target = node.target if isinstance(node.target, str) else getattr(node.target, "__name__", repr(node.target))
    text = f"node '{node.name}' ({node.op} {target})"
    source = user_frame_of_node(node)
    return f"{text}, {source}" if source else text
