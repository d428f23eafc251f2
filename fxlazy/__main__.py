"""``python -m fxlazy``: materialize a bundled example model and print its shape report."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from . import examples
from ._materialize import materialize
from .errors import FxLazyError
from .report import shape_report


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


EXAMPLES: dict[str, Callable[[], tuple[nn.Module, tuple[Any, ...]]]] = {
    "transposed-conv": _transposed_conv,
    "dcgan": _dcgan,
    "unet": _unet,
    "resnet": _resnet,
    "decoder-1024": _decoder,
}


def _parse_arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m fxlazy",
        description="Materialize a bundled example model with lazy layers and print what fxlazy inferred.",
    )
    parser.add_argument(
        "--example",
        choices=sorted(EXAMPLES),
        default="transposed-conv",
        help="bundled model to materialize (default: %(default)s, one LazyConvTranspose2d fed 64 channels)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed for parameter initialization (default: %(default)s)")
    parser.add_argument("--tablefmt", default="simple", help="tabulate table format (default: %(default)s)")
    parser.add_argument("--show-module", action="store_true", help="also print the static module")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the process exit status."""
    arguments = _parse_arguments(argv)
    model, example = EXAMPLES[arguments.example]()
    try:
        static = materialize(model, example, seed=arguments.seed)
    except FxLazyError as error:
        print(f"fxlazy: error: {error}", file=sys.stderr)
        return 1

    inputs = ", ".join(str(tuple(x.shape)) for x in example if isinstance(x, torch.Tensor))
    print(f"{type(model).__name__} materialized for input shape(s) {inputs}\n")
    if arguments.show_module:
        print(static, end="\n\n")
    print(shape_report(static).to_string(arguments.tablefmt))
    return 0


if __name__ == "__main__":
    sys.exit(main())
