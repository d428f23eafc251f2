"""``python -m fxlazy``: the fxlazy command line run as a module; see :mod:`fxlazy.cli`."""

from __future__ import annotations

import sys
from collections.abc import Sequence

# EXAMPLES is re-exported so that `fxlazy.__main__.EXAMPLES` keeps naming the bundled demos.
from .cli import EXAMPLES
from .cli import main as run_command_line

__all__ = ["EXAMPLES", "main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line under the program name ``python -m fxlazy``; return the exit status."""
    return run_command_line(argv, prog="python -m fxlazy")


if __name__ == "__main__":
    sys.exit(main())
