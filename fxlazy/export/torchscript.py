"""Export a static module to a TorchScript file, and check the reloaded file against it."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from fxlazy.errors import ExportError

from ._failures import describe_failure
from ._static import build_input_sets, check_output_path, eval_mode, input_names, prepare_static
from .parity import Tolerance, flatten_outputs, run_parity_checks
from .result import ExportFallbackWarning, ExportResult

__all__ = ["export_torchscript"]

logger = logging.getLogger(__name__)

TorchScriptMethod = Literal["auto", "script", "trace"]


def _compile(static: nn.Module, inputs: tuple[torch.Tensor, ...], method: TorchScriptMethod) -> tuple[torch.jit.ScriptModule, str, str | None]:
    """Script or trace ``static``; return the ScriptModule, the method used and why script failed."""
    if method not in ("auto", "script", "trace"):
        raise ValueError(f"method must be 'auto', 'script' or 'trace', got {method!r}.")

    script_failure: str | None = None
    if method in ("auto", "script"):
        try:
            return torch.jit.script(static), "torch.jit.script", None
        except Exception as error:
            if method == "script":
                raise ExportError(
                    f"torch.jit.script failed on {type(static).__name__}: {describe_failure(error)}. "
                    "Pass method='trace' (or 'auto') to record the operations run for the example "
                    "instead, or make the failing code scriptable."
                ) from error
            script_failure = describe_failure(error)
            warnings.warn(
                f"torch.jit.script failed on {type(static).__name__} ({script_failure}); exporting "
                "with torch.jit.trace instead, which records the operations run for the example. "
                "The parity check compares the traced module on every input given.",
                ExportFallbackWarning,
                stacklevel=3,
            )

    try:
        # The parity check below replaces trace's own check, which reruns the module.
        traced = torch.jit.trace(static, inputs, check_trace=False)
    except Exception as error:
        before = f"torch.jit.script failed ({script_failure}), and " if script_failure else ""
        raise ExportError(
            f"Cannot export {type(static).__name__} to TorchScript: {before}torch.jit.trace failed: "
            f"{describe_failure(error)}. Export to ONNX or an ExportedProgram instead, or change the "
            "failing code."
        ) from error
    return traced, "torch.jit.trace", script_failure


def export_torchscript(
    module: nn.Module,
    example: Any,
    path: str | Path,
    *,
    method: TorchScriptMethod = "auto",
    extra_inputs: Sequence[Any] = (),
    check: bool = True,
    tolerance: Tolerance | None = None,
) -> ExportResult:
    """Export ``module`` to a TorchScript file and check the reloaded file against the module.

    The module is exported in eval mode, and each submodule's mode is restored after.

    Args:
        module: the static module, such as the result of :func:`fxlazy.materialize`. A
            model that still has lazy modules is materialized first, without changing it.
        example: the positional inputs: a tensor or a tuple of tensors.
        path: the file to write.
        method: ``"script"`` (``torch.jit.script``), ``"trace"`` (``torch.jit.trace`` on
            the example), or ``"auto"``: script, and trace with an
            :class:`ExportFallbackWarning` naming the script error when scripting fails.
        extra_inputs: further inputs to check, each given like ``example``.
        check: run the parity check: reload ``path`` with ``torch.jit.load``, run it on the
            example and the extra inputs, and compare with ``module``.
        tolerance: the difference the check allows; ``Tolerance()`` when None.

    Returns:
        An :class:`ExportResult` whose ``artifact`` is the reloaded ScriptModule.

    Raises:
        ExportError: scripting and tracing failed, or ``path``'s folder does not exist.
        ParityError: an output of the reloaded module differs beyond ``tolerance``.

    Example:
        >>> import os, tempfile, torch, fxlazy
        >>> model = torch.nn.Sequential(torch.nn.LazyLinear(4), torch.nn.ReLU())
        >>> folder = tempfile.mkdtemp()
        >>> result = fxlazy.export_torchscript(model, torch.randn(2, 3), os.path.join(folder, "model.pt"))
        >>> result.method, [check.inputs for check in result.checks]
        ('torch.jit.script', ['example'])
    """
    path = check_output_path(path)
    tolerance = tolerance or Tolerance()
    static, inputs = prepare_static(module, example)
    names = input_names(static, len(inputs))
    input_sets = build_input_sets(inputs, extra_inputs, names, second_batch=None)

    with eval_mode(static), torch.no_grad():
        compiled, used, script_failure = _compile(static, inputs, method)
        torch.jit.save(compiled, str(path))
        loaded = torch.jit.load(str(path))
        logger.info("Wrote %s with %s.", path, used)

        checks = ()
        if check:
            checks = run_parity_checks(
                static,
                lambda tensors: [t for _, t in flatten_outputs(loaded(*tensors))],
                input_sets,
                tolerance,
                f"TorchScript module {str(path)!r} (reloaded)",
            )
    return ExportResult(
        format="torchscript",
        path=path,
        artifact=loaded,
        method=used,
        fallback_reason=script_failure,
        checks=checks,
        tolerance=tolerance if check else None,
    )

