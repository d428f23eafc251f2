"""Export a static module to an ONNX file, and check the file with onnxruntime against the module.

The dynamo-based exporter (``torch.onnx.export(..., dynamo=True)``, built on torch.export)
is tried first. When it fails, the reason is logged and the TorchScript-based exporter
runs instead. onnx and onnxscript are needed to export, onnxruntime to check; all three
come with the ``onnx`` extra of fxlazy.
"""

from __future__ import annotations

import importlib
import logging
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from fxlazy.errors import ExportError, MissingDependencyError

from ._failures import describe_failure
from ._static import build_input_sets, check_output_path, eval_mode, input_names, prepare_static
from .dynamic import (
    check_batch_request,
    inputs_for_tracing,
    onnx_dynamic_axes,
    axes_from_examples,
    parse_dynamic,
    requested_dims,
    second_batch_size,
    torch_dynamic_shapes,
    warn_about_static_dims,
)
from .parity import Tolerance, flatten_outputs, run_parity_checks
from .result import ExportResult

__all__ = ["export_onnx"]

logger = logging.getLogger(__name__)

OnnxExporter = Literal["auto", "dynamo", "torchscript"]

# ONNX protobuf files cannot exceed 2 GiB; larger weights go to an external data file.
_PROTOBUF_LIMIT_BYTES = 2**31
# Room left under the limit for the graph itself.
_EXTERNAL_DATA_THRESHOLD_BYTES = int(_PROTOBUF_LIMIT_BYTES * 0.9)


def _require_packages(check: bool) -> None:
    """Import the packages the export needs, or raise MissingDependencyError naming the extra."""
    needed = ["onnx", "onnxscript"] + (["onnxruntime"] if check else [])
    missing = []
    for name in needed:
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    if missing:
        purpose = "export to ONNX and check the result" if check else "export to ONNX"
        raise MissingDependencyError(
            f"fxlazy needs {', '.join(missing)} to {purpose}, but they are not installed. "
            'Install the onnx extra: pip install "fxlazy[onnx]"'
        )


class _ForwardCaller(nn.Module):
    """Wrap a GraphModule for the TorchScript-based exporter.

    That exporter reads a ``graph`` attribute as a TorchScript graph, so it fails on a
    GraphModule, whose ``graph`` is a torch.fx Graph (torch 2.13).
    """

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module
        # The exporter restores the wrapper's training mode after exporting, and train()
        # sets it on every submodule, so the wrapper must start in the module's mode.
        self.training = module.training

    def forward(self, *inputs: torch.Tensor) -> Any:
        return self.module(*inputs)


def _onnx_output_names(static: nn.Module, inputs: tuple[torch.Tensor, ...]) -> list[str]:
    """Name the ONNX outputs after their place in the module's result: ``output``, ``output_0``."""
    with torch.no_grad():
        names = [name for name, _ in flatten_outputs(static(*inputs))]
    return [re.sub(r"\W+", "_", name).strip("_") for name in names]


def _state_bytes(module: nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in (*module.parameters(), *module.buffers()))


def _export_with_dynamo(
    static: nn.Module,
    inputs: tuple[torch.Tensor, ...],
    path: Path,
    names: list[str],
    output_names: list[str],
    axes: frozenset[str],
    opset_version: int | None,
) -> None:
    torch.onnx.export(
        static,
        inputs,
        str(path),
        dynamo=True,
        input_names=names,
        output_names=output_names,
        dynamic_shapes=torch_dynamic_shapes(inputs, names, axes),
        opset_version=opset_version,
        external_data=_state_bytes(static) > _EXTERNAL_DATA_THRESHOLD_BYTES,
        verbose=False,
    )


def _export_with_torchscript(
    static: nn.Module,
    inputs: tuple[torch.Tensor, ...],
    path: Path,
    names: list[str],
    output_names: list[str],
    axes: frozenset[str],
    opset_version: int | None,
) -> None:
    torch.onnx.export(
        _ForwardCaller(static),
        inputs,
        str(path),
        dynamo=False,
        input_names=names,
        output_names=output_names,
        dynamic_axes=onnx_dynamic_axes(inputs, names, axes),
        opset_version=opset_version,
    )


def _onnx_dynamic_dims(model: Any, names: Sequence[str]) -> dict[str, tuple[int, ...]]:
    """Return, by input name, the dims an ONNX model leaves without a fixed size."""
    dims: dict[str, tuple[int, ...]] = {}
    for graph_input in model.graph.input:
        if graph_input.name not in names:
            continue
        shape = graph_input.type.tensor_type.shape
        dynamic = tuple(i for i, dim in enumerate(shape.dim) if not dim.HasField("dim_value"))
        if dynamic:
            dims[graph_input.name] = dynamic
    return dims


def _onnxruntime_runner(path: Path, names: Sequence[str]):
    import onnxruntime

    try:
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as error:
        raise ExportError(
            f"onnxruntime cannot load {path}: {describe_failure(error)}. The ONNX file was "
            "written; pass check=False (--no-check on the command line) to keep it without the "
            "check, or export the model in float32 for onnxruntime's CPU kernels."
        ) from error
    session_inputs = [i.name for i in session.get_inputs()]

    def run(tensors: tuple[torch.Tensor, ...]) -> list[torch.Tensor]:
        by_name = dict(zip(names, tensors))
        if set(session_inputs) <= set(by_name):
            # An exporter drops inputs the graph never reads, so the feed follows the session.
            feed = {name: by_name[name] for name in session_inputs}
        else:
            feed = dict(zip(session_inputs, tensors))
        unsupported = [name for name, tensor in feed.items() if tensor.dtype == torch.bfloat16]
        if unsupported:
            raise ExportError(
                f"Cannot run the ONNX model on inputs {unsupported}: onnxruntime takes NumPy "
                "arrays, and NumPy has no bfloat16. The ONNX file was written; pass check=False "
                "(--no-check on the command line), or export with float32 inputs to check it."
            )
        arrays = {name: tensor.detach().cpu().numpy() for name, tensor in feed.items()}
        return [torch.from_numpy(array) for array in session.run(None, arrays)]

    return run


def export_onnx(
    module: nn.Module,
    example: Any,
    path: str | Path,
    *,
    dynamic: str | Iterable[str] = (),
    exporter: OnnxExporter = "auto",
    opset_version: int | None = None,
    extra_inputs: Sequence[Any] = (),
    check: bool = True,
    tolerance: Tolerance | None = None,
) -> ExportResult:
    """Export ``module`` to ONNX with ``torch.onnx.export`` and check the file with onnxruntime.

    The module is exported in eval mode, and each submodule's mode is restored after.
    ONNX inputs are named after the parameters of ``module.forward``, outputs after their
    place in its result (``output``, or ``output_0``, ``output_1``, ...).

    Args:
        module: the static module, such as the result of :func:`fxlazy.materialize`. A
            model that still has lazy modules is materialized first, without changing it.
        example: the positional inputs: a tensor or a tuple of tensors.
        path: the ``.onnx`` file to write. Weights over about 1.8 GiB go to an external
            data file next to it.
        dynamic: ``"batch"``, ``"spatial"`` or both. ``batch`` makes dim 0 of every input
            one shared dynamic size, ``spatial`` makes dims 2 and up dynamic wherever the
            model allows. With a dynamic batch, the check also runs a second batch size.
            When empty, the axes come from the dims that varied across the examples
            given to ``materialize(..., more_examples=...)``, if any.
        exporter: ``"dynamo"``, ``"torchscript"`` (the older TorchScript-based exporter),
            or ``"auto"``: dynamo, and the TorchScript-based exporter when dynamo fails,
            with the reason logged as a warning.
        opset_version: the ONNX opset; the exporter's default when None.
        extra_inputs: further inputs to check, each given like ``example``.
        check: run the parity check: run the file with onnxruntime on the example, on
            the second batch size when the batch is dynamic, and on the extra inputs, and
            compare with ``module``.
        tolerance: the difference the check allows; ``Tolerance()`` when None.

    Returns:
        An :class:`ExportResult` whose ``artifact`` is the ``onnx.ModelProto`` read back
        from ``path``.

    Raises:
        MissingDependencyError: onnx, onnxscript or (for the check) onnxruntime is not
            installed; the message names the ``onnx`` extra.
        ValueError: ``dynamic`` names an unknown axis, or ``exporter`` is unknown.
        ExportError: every exporter tried failed, the inputs share no batch dim for a
            dynamic batch, or ``path``'s folder does not exist.
        ParityError: an output of the ONNX model differs beyond ``tolerance``.

    Example:
        >>> import os, tempfile, torch, fxlazy
        >>> model = torch.nn.Sequential(torch.nn.LazyLinear(4), torch.nn.ReLU())
        >>> path = os.path.join(tempfile.mkdtemp(), "model.onnx")
        >>> result = fxlazy.export_onnx(model, torch.randn(2, 3), path, dynamic="batch")
        >>> result.method, result.dynamic_dims, len(result.checks)
        ('torch.onnx dynamo', {'input': (0,)}, 2)
    """
    if exporter not in ("auto", "dynamo", "torchscript"):
        raise ValueError(f"exporter must be 'auto', 'dynamo' or 'torchscript', got {exporter!r}.")
    axes = parse_dynamic(dynamic)
    _require_packages(check)
    import onnx

    path = check_output_path(path)
    tolerance = tolerance or Tolerance()
    static, inputs = prepare_static(module, example)
    names = input_names(static, len(inputs))
    axes = axes or axes_from_examples(static)
    check_batch_request(inputs, names, axes)
    trace_inputs = inputs_for_tracing(inputs, names, axes)
    second_batch = second_batch_size(inputs) if "batch" in axes else None
    input_sets = build_input_sets(inputs, extra_inputs, names, second_batch)

    with eval_mode(static):
        output_names = _onnx_output_names(static, inputs)
        arguments = (static, trace_inputs, path, names, output_names, axes, opset_version)
        method, fallback_reason = "torch.onnx dynamo", None
        try:
            if exporter == "torchscript":
                method = "torch.onnx torchscript"
                _export_with_torchscript(*arguments)
            else:
                _export_with_dynamo(*arguments)
        except Exception as error:
            if exporter != "auto":
                raise ExportError(
                    f"torch.onnx.export ({exporter} exporter) failed on {type(static).__name__}: "
                    f"{describe_failure(error)}. Try exporter='auto', or export to an ExportedProgram "
                    "to see which operation fails."
                ) from error
            fallback_reason = describe_failure(error)
            logger.warning(
                "The dynamo ONNX exporter failed on %s (%s); exporting with the TorchScript-based exporter instead.",
                type(static).__name__, fallback_reason,
            )
            method = "torch.onnx torchscript"
            try:
                _export_with_torchscript(*arguments)
            except Exception as second_error:
                raise ExportError(
                    f"Cannot export {type(static).__name__} to ONNX: the dynamo exporter failed "
                    f"({fallback_reason}), and the TorchScript-based exporter failed "
                    f"({describe_failure(second_error)}). Export to an ExportedProgram to see which "
                    "operation fails, or replace it."
                ) from second_error
        logger.info("Wrote %s with %s.", path, method)

        model = onnx.load(str(path), load_external_data=False)
        obtained = _onnx_dynamic_dims(model, names)
        warn_about_static_dims(requested_dims(inputs, names, axes), obtained, "ONNX model")

        checks = ()
        if check:
            checks = run_parity_checks(
                static,
                _onnxruntime_runner(path, names),
                input_sets,
                tolerance,
                f"ONNX model {str(path)!r} run by onnxruntime",
            )
    return ExportResult(
        format="onnx",
        path=path,
        artifact=model,
        method=method,
        fallback_reason=fallback_reason,
        dynamic_dims=obtained,
        checks=checks,
        tolerance=tolerance if check else None,
    )
