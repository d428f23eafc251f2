"""Export a static module to a ``torch.export.ExportedProgram``, and check it against the module."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fxlazy.errors import ExportError

from ._failures import describe_failure
from ._static import build_input_sets, check_output_path, eval_mode, input_names, prepare_static
from .dynamic import (
    check_batch_request,
    inputs_for_tracing,
    axes_from_examples,
    parse_dynamic,
    requested_dims,
    second_batch_size,
    torch_dynamic_shapes,
    warn_about_static_dims,
)
from .parity import Tolerance, flatten_outputs, run_parity_checks
from .result import ExportResult

__all__ = ["export_program", "program_dynamic_dims"]

logger = logging.getLogger(__name__)


def program_dynamic_dims(program: torch.export.ExportedProgram, names: Sequence[str]) -> dict[str, tuple[int, ...]]:
    """Return, by input name, the dims of the program's inputs that have symbolic sizes."""
    user_inputs = list(program.graph_signature.user_inputs)
    placeholders = {n.name: n for n in program.graph.nodes if n.op == "placeholder"}
    dims: dict[str, tuple[int, ...]] = {}
    for name, placeholder_name in zip(names, user_inputs):
        value = placeholders[placeholder_name].meta.get("val")
        if isinstance(value, torch.Tensor):
            symbolic = tuple(i for i, size in enumerate(value.shape) if isinstance(size, torch.SymInt))
            if symbolic:
                dims[name] = symbolic
    return dims


def export_program(
    module: nn.Module,
    example: Any,
    path: str | Path | None = None,
    *,
    dynamic: str | Iterable[str] = (),
    dynamic_shapes: Any = None,
    extra_inputs: Sequence[Any] = (),
    check: bool = True,
    tolerance: Tolerance | None = None,
) -> ExportResult:
    """Export ``module`` with ``torch.export.export`` and check the program against the module.

    The module is exported in eval mode, and each submodule's mode is restored after.
    It is never changed otherwise: strict or not, torch.export runs the static module,
    never a lazy one, so no lazy module is initialized on the way.

    Args:
        module: the static module, such as the result of :func:`fxlazy.materialize`. A
            model that still has lazy modules is materialized first, without changing it.
        example: the positional inputs: a tensor or a tuple of tensors.
        path: when given, the program is saved there with ``torch.export.save``, and
            the check runs the program reloaded from it.
        dynamic: ``"batch"``, ``"spatial"`` or both. ``batch`` makes dim 0 of every input
            one shared dynamic size, ``spatial`` makes dims 2 and up dynamic wherever the
            model allows. With a dynamic batch, the check also runs a second batch size.
            When empty, the axes come from the dims that varied across the examples
            given to ``materialize(..., more_examples=...)``, if any.
        dynamic_shapes: torch.export's own ``dynamic_shapes`` argument, for full control;
            it cannot be combined with ``dynamic``.
        extra_inputs: further inputs to check, each given like ``example``.
        check: run the parity check: run ``program.module()`` on the example, on the
            second batch size when the batch is dynamic, and on the extra inputs, and
            compare with ``module``.
        tolerance: the difference the check allows; ``Tolerance()`` when None.

    Returns:
        An :class:`ExportResult` whose ``artifact`` is the ExportedProgram.

    Raises:
        ValueError: ``dynamic`` names an unknown axis, or is combined with ``dynamic_shapes``.
        ExportError: torch.export failed, the inputs share no batch dim for a dynamic
            batch, or ``path``'s folder does not exist.
        ParityError: an output of the program differs beyond ``tolerance``.

    Example:
        >>> import torch, fxlazy
        >>> model = torch.nn.Sequential(torch.nn.LazyLinear(4), torch.nn.ReLU())
        >>> result = fxlazy.export_program(model, torch.randn(2, 3), dynamic="batch")
        >>> result.dynamic_dims, [check.inputs for check in result.checks]
        ({'input': (0,)}, ['example', 'example at batch 3'])
    """
    axes = parse_dynamic(dynamic)
    if axes and dynamic_shapes is not None:
        raise ValueError("Pass either dynamic= or dynamic_shapes=, not both.")
    if path is not None:
        path = check_output_path(path)
    tolerance = tolerance or Tolerance()
    static, inputs = prepare_static(module, example)
    names = input_names(static, len(inputs))
    if not axes and dynamic_shapes is None:
        axes = axes_from_examples(static)
    check_batch_request(inputs, names, axes)
    trace_inputs = inputs_for_tracing(inputs, names, axes)
    if dynamic_shapes is None:
        dynamic_shapes = torch_dynamic_shapes(trace_inputs, names, axes)
    second_batch = second_batch_size(inputs) if "batch" in axes else None
    input_sets = build_input_sets(inputs, extra_inputs, names, second_batch)

    with eval_mode(static):
        try:
            program = torch.export.export(static, trace_inputs, dynamic_shapes=dynamic_shapes)
        except Exception as error:
            advice = (
                " The dynamic dims may be what fails: export without them, or with only the batch."
                if axes or dynamic_shapes is not None
                else ""
            )
            raise ExportError(
                f"torch.export.export failed on {type(static).__name__}: {describe_failure(error)}.{advice} "
                "Run torch.export.export on the static module to see the full error."
            ) from error
        if path is not None:
            torch.export.save(program, str(path))
            program = torch.export.load(str(path))
            logger.info("Wrote %s with torch.export.save.", path)

        obtained = program_dynamic_dims(program, names)
        warn_about_static_dims(requested_dims(inputs, names, axes), obtained, "ExportedProgram")

        checks = ()
        if check:
            runnable = program.module()
            checks = run_parity_checks(
                static,
                lambda tensors: [t for _, t in flatten_outputs(runnable(*tensors))],
                input_sets,
                tolerance,
                "ExportedProgram" + (f" {str(path)!r} (reloaded)" if path is not None else ""),
            )
    return ExportResult(
        format="exported-program",
        path=path,
        artifact=program,
        method="torch.export",
        dynamic_dims=obtained,
        checks=checks,
        tolerance=tolerance if check else None,
    )
