"""The fxlazy command line: ``fxlazy report``, ``fxlazy export``, and the bundled demo.

``fxlazy`` (the console script) and ``python -m fxlazy`` both run :func:`main`. With no
command it materializes a bundled example model and prints its shape report. Errors
print one line to stderr and exit with status 1, with the traceback only under
``--debug``. Usage errors exit with status 2, as argparse does.
"""

from __future__ import annotations

import argparse
import logging
import sys
import traceback
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from tabulate import tabulate_formats
from torch import nn

from . import __version__, examples
from ._materialize import materialize
from ._targets import InputSpec, load_model, parse_input_spec, random_inputs
from .checkpoint import materialize_from_checkpoint
from .errors import FxLazyError
from .export import ExportWarning, Tolerance, export_onnx, export_program, export_torchscript
from .report import ShapeReport, shape_report

__all__ = ["EXAMPLES", "main"]

logger = logging.getLogger(__name__)


def _transposed_conv() -> tuple[nn.Module, tuple[Any, ...]]:
    return examples.TransposedConvExample(), (examples.TransposedConvExample.example_input(),)


def _dcgan() -> tuple[nn.Module, tuple[Any, ...]]:
    model = examples.DCGANGenerator()
    return model, (model.example_input(),)


def _unet() -> tuple[nn.Module, tuple[Any, ...]]:
    return examples.UNetDecoder(), examples.UNetDecoder.example_inputs()


def _resnet() -> tuple[nn.Module, tuple[Any, ...]]:
    return examples.ResNetClassifier(), (examples.ResNetClassifier.example_input(),)


def _decoder() -> tuple[nn.Module, tuple[Any, ...]]:
    model = examples.UpsamplingDecoder(size=1024)
    return model, (model.example_input(batch=8),)


# The bundled models the demo runs, by the name --example takes.
EXAMPLES: dict[str, Callable[[], tuple[nn.Module, tuple[Any, ...]]]] = {
    "transposed-conv": _transposed_conv,
    "dcgan": _dcgan,
    "unet": _unet,
    "resnet": _resnet,
    "decoder-1024": _decoder,
}

# Report formats rendered by a ShapeReport method rather than by tabulate.
_REPORT_METHODS = {"markdown": "to_markdown", "json": "to_json", "csv": "to_csv", "html": "to_html"}

_EXPORT_FORMATS = ("onnx", "torchscript", "exported-program")
_METHODS = {"onnx": ("auto", "dynamo", "torchscript"), "torchscript": ("auto", "script", "trace")}

_DESCRIPTION = """\
Turn a PyTorch model with lazy layers into a static torch.fx GraphModule without running
it, print what was inferred, or export it with a parity check.

With no command, materialize a bundled example model and print its shape report."""

_EPILOG = """\
examples:
  python -m fxlazy --example dcgan
  fxlazy report models/net.py:build --input 2,3,64,64
  fxlazy report mypackage.models:Decoder --input 1x256x4x4 --weights decoder.pt --format markdown
  fxlazy export models/net.py:Net --input 1x3x224x224 --to onnx -o net.onnx --dynamic batch

Run 'fxlazy COMMAND --help' for the options of a command."""

_TARGET_HELP = (
    "the model: package.module:factory or path/to/file.py:factory, where factory is a class "
    "or a function that builds the model without arguments"
)
_INPUT_HELP = (
    "one tensor argument of forward, in order, as SHAPE[:DTYPE] such as 2,3,32,32 or "
    "1x16:int64 (dtype default: float32); repeat for each argument. Values are random "
    "(floats) or 0 and 1 (integers and bools), drawn with --seed"
)


def _input_spec(text: str) -> InputSpec:
    try:
        return parse_input_spec(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from error


def _report_format(text: str) -> str:
    if text in _REPORT_METHODS or text in tabulate_formats:
        return text
    raise argparse.ArgumentTypeError(
        f"unknown format {text!r}: choose markdown, json, csv, html, or a tabulate format "
        f"({', '.join(tabulate_formats)})"
    )


def _tolerance_value(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid number {text!r}") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be a non-negative number, got {text}")
    return value


def _add_common_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("target", metavar="TARGET", help=_TARGET_HELP)
    parser.add_argument("-i", "--input", dest="inputs", action="append", type=_input_spec, default=[], metavar="SHAPE[:DTYPE]", help=_INPUT_HELP)
    parser.add_argument(
        "-w", "--weights", type=Path, metavar="CKPT",
        help="a state_dict saved with torch.save, read with torch.load(weights_only=True) and "
        "loaded after checking that its widths agree with the inputs",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed for parameter initialization and random inputs (default: %(default)s)")
    # SUPPRESS keeps a --debug given before the command from being reset here.
    parser.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks and the exporters' own logs and warnings")


def _build_parser(prog: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog, description=_DESCRIPTION, epilog=_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--debug", action="store_true", default=False, help="show tracebacks and the exporters' own logs and warnings")
    demo = parser.add_argument_group("demo options, without a command")
    demo.add_argument(
        "--example",
        choices=sorted(EXAMPLES),
        default=None,
        help="bundled model to materialize (default: transposed-conv, one LazyConvTranspose2d fed 64 channels)",
    )
    demo.add_argument("--seed", type=int, default=0, help="seed for parameter initialization (default: %(default)s)")
    demo.add_argument(
        "--tablefmt",
        default=None,
        choices=tabulate_formats,
        metavar="FORMAT",
        help="tabulate table format, such as simple, github or grid (default: simple)",
    )
    demo.add_argument("--show-module", action="store_true", help="also print the static module")

    commands = parser.add_subparsers(dest="command", title="commands", metavar="COMMAND")

    report = commands.add_parser(
        "report",
        help="print the shape report of a model",
        description="Materialize a model and print what fxlazy inferred for each lazy layer.",
    )
    _add_common_options(report)
    report.add_argument(
        "-f", "--format", type=_report_format, default="simple", metavar="FORMAT",
        help="markdown, json, csv, html, or a tabulate format such as simple, github or grid (default: %(default)s)",
    )
    report.set_defaults(handler=_run_report, parser=report)

    export = commands.add_parser(
        "export",
        help="export a model and check the artifact against it",
        description=(
            "Materialize a model, export it, run the artifact on the inputs and compare its "
            "outputs with the static module's. A mismatch beyond the tolerance is an error."
        ),
    )
    _add_common_options(export)
    export.add_argument("-t", "--to", required=True, choices=_EXPORT_FORMATS, help="the artifact format")
    export.add_argument("-o", "--output", required=True, type=Path, metavar="PATH", help="the file to write")
    export.add_argument(
        "--dynamic", action="append", choices=("batch", "spatial"), default=[],
        help="make dim 0 of every input (batch) or dims 2 and up (spatial) dynamic; onnx and "
        "exported-program only; repeat for both. A dynamic batch is also checked at a second batch size",
    )
    export.add_argument(
        "--method", default="auto", metavar="METHOD",
        help="torchscript: script, trace or auto (script, else trace); onnx: dynamo, torchscript "
        "or auto (dynamo, else the TorchScript-based exporter) (default: %(default)s)",
    )
    export.add_argument("--opset", type=int, metavar="VERSION", help="ONNX opset version (default: the exporter's)")
    export.add_argument("--no-check", dest="check", action="store_false", help="skip the parity check")
    default_tolerance = Tolerance()
    export.add_argument("--atol", type=_tolerance_value, default=default_tolerance.atol, help="absolute tolerance of the parity check (default: %(default)g)")
    export.add_argument("--rtol", type=_tolerance_value, default=default_tolerance.rtol, help="relative tolerance of the parity check (default: %(default)g)")
    export.set_defaults(handler=_run_export, parser=export)
    return parser


def _validate(parser: argparse.ArgumentParser, arguments: argparse.Namespace) -> None:
    """Reject option combinations argparse cannot express; exits with status 2."""
    if arguments.command is None:
        return
    demo_only = [flag for flag, value in (("--example", arguments.example), ("--tablefmt", arguments.tablefmt), ("--show-module", arguments.show_module)) if value]
    if demo_only:
        parser.error(f"{', '.join(demo_only)} apply only without a command")
    command_parser = arguments.parser
    if not arguments.inputs:
        purpose = "the report shows their shapes" if arguments.command == "report" else "the export traces and checks with them"
        command_parser.error(f"give --input for each tensor argument of forward; {purpose}")
    if arguments.command == "export":
        if arguments.dynamic and arguments.to == "torchscript":
            command_parser.error("--dynamic applies to onnx and exported-program; TorchScript has no dynamic dims option")
        allowed = _METHODS.get(arguments.to, ("auto",))
        if arguments.method not in allowed:
            command_parser.error(f"--method for {arguments.to} must be one of {', '.join(allowed)}, got {arguments.method!r}")
        if arguments.opset is not None and arguments.to != "onnx":
            command_parser.error("--opset applies to onnx only")


def _materialize_target(arguments: argparse.Namespace) -> tuple[nn.Module, torch.fx.GraphModule, tuple[torch.Tensor, ...]]:
    model = load_model(arguments.target)
    inputs = random_inputs(arguments.inputs, arguments.seed)
    if arguments.weights is not None:
        static = materialize_from_checkpoint(model, arguments.weights, inputs)
    else:
        static = materialize(model, inputs, seed=arguments.seed)
    return model, static, inputs


def _render_report(report: ShapeReport, form: str) -> str:
    method_name = _REPORT_METHODS.get(form)
    if method_name is None:
        return report.to_string(tablefmt=form)
    render = getattr(report, method_name, None)
    if render is None:
        raise FxLazyError(f"This version of fxlazy cannot render the report as {form}. Choose a tabulate format such as simple or github.")
    return render()


def _run_report(arguments: argparse.Namespace) -> int:
    _, static, _ = _materialize_target(arguments)
    print(_render_report(shape_report(static), arguments.format))
    return 0


def _run_export(arguments: argparse.Namespace) -> int:
    model, static, inputs = _materialize_target(arguments)
    tolerance = Tolerance(atol=arguments.atol, rtol=arguments.rtol)
    common = {"check": arguments.check, "tolerance": tolerance}
    if arguments.to == "torchscript":
        result = export_torchscript(static, inputs, arguments.output, method=arguments.method, **common)
    elif arguments.to == "onnx":
        result = export_onnx(
            static, inputs, arguments.output, dynamic=arguments.dynamic, exporter=arguments.method,
            opset_version=arguments.opset, **common,
        )
    else:
        result = export_program(static, inputs, arguments.output, dynamic=arguments.dynamic, **common)
    shapes = ", ".join(str(tuple(x.shape)) for x in inputs)
    print(f"{type(model).__name__} materialized for input shape(s) {shapes}")
    print(result.summary())
    return 0


def _run_demo(arguments: argparse.Namespace) -> int:
    model, example = EXAMPLES[arguments.example or "transposed-conv"]()
    static = materialize(model, example, seed=arguments.seed)
    inputs = ", ".join(str(tuple(x.shape)) for x in example if isinstance(x, torch.Tensor))
    print(f"{type(model).__name__} materialized for input shape(s) {inputs}\n")
    if arguments.show_module:
        print(static, end="\n\n")
    print(shape_report(static).to_string(arguments.tablefmt or "simple"))
    return 0


def _one_line(error: BaseException) -> str:
    text = " ".join(line.strip() for line in str(error).splitlines() if line.strip())
    if isinstance(error, FxLazyError):
        return text
    return f"{type(error).__name__}: {text} (run again with --debug for the traceback)"


def _show_export_warning(message, category, filename, lineno, file=None, line=None) -> None:  # noqa: ANN001 (warnings.showwarning's signature)
    print(f"fxlazy: warning: {message}", file=sys.stderr)


def _configure_output(debug: bool) -> None:
    """Send fxlazy's log records and export warnings to stderr as one line each.

    Without --debug, the exporters' own logs and warnings (torch.onnx, TorchScript
    deprecations) are hidden, because they are about torch internals and not actionable.
    """
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("fxlazy: %(levelname)s: %(message)s"))
    package_logger = logging.getLogger("fxlazy")
    package_logger.addHandler(handler)
    package_logger.setLevel(logging.DEBUG if debug else logging.WARNING)
    package_logger.propagate = False
    if debug:
        return
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    warnings.simplefilter("ignore")
    warnings.simplefilter("always", ExportWarning)
    warnings.showwarning = _show_export_warning


def main(argv: Sequence[str] | None = None, prog: str = "fxlazy") -> int:
    """Run the command line and return the process exit status.

    Args:
        argv: the arguments after the program name; ``sys.argv[1:]`` when None.
        prog: the program name shown in usage and help.
    """
    parser = _build_parser(prog)
    arguments = parser.parse_args(argv)
    _validate(parser, arguments)
    debug = arguments.debug

    with warnings.catch_warnings():
        saved_logging = _logging_state()
        _configure_output(debug)
        try:
            handler = arguments.handler if arguments.command else _run_demo
            return handler(arguments)
        except KeyboardInterrupt:
            print("fxlazy: interrupted", file=sys.stderr)
            return 130
        except Exception as error:
            if debug:
                traceback.print_exc()
            print(f"fxlazy: error: {_one_line(error)}", file=sys.stderr)
            return 1
        finally:
            _restore_logging(saved_logging)


def _logging_state() -> tuple[Any, ...]:
    package_logger = logging.getLogger("fxlazy")
    return (list(package_logger.handlers), package_logger.level, package_logger.propagate, logging.getLogger("torch.onnx").level)


def _restore_logging(state: tuple[Any, ...]) -> None:
    """Undo _configure_output, so that calling main from Python leaves logging as it was."""
    handlers, level, propagate, onnx_level = state
    package_logger = logging.getLogger("fxlazy")
    package_logger.handlers = handlers
    package_logger.setLevel(level)
    package_logger.propagate = propagate
    logging.getLogger("torch.onnx").setLevel(onnx_level)
