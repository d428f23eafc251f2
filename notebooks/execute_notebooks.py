"""Execute every notebook in notebooks/ with nbclient, and fail on an error in any cell.

    python notebooks/execute_notebooks.py            # execute, keep the files as they are
    python notebooks/execute_notebooks.py --write    # execute and save the outputs into the files

Each notebook runs in a fresh ``python3`` kernel with notebooks/ as its working directory.
Needs the ``notebooks`` extra: ``pip install -e ".[notebooks]"``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

NOTEBOOK_DIR = Path(__file__).resolve().parent

# Seconds one cell may run. The quickstart's cells take a few seconds on a 2-core machine.
CELL_TIMEOUT = 300


def execute_notebook(path: Path, write: bool) -> None:
    """Execute the notebook at ``path``; with ``write``, save its outputs into the file.

    Raises:
        CellExecutionError: a cell raised; the message shows the cell and the traceback.
    """
    notebook = nbformat.read(path, as_version=4)
    client = NotebookClient(
        notebook,
        timeout=CELL_TIMEOUT,
        kernel_name="python3",
        resources={"metadata": {"path": str(path.parent)}},
    )
    client.execute()
    if write:
        nbformat.write(notebook, path)


def main(argv: list[str] | None = None) -> int:
    """Execute the notebooks named on the command line, or all of notebooks/; return the exit status."""
    parser = argparse.ArgumentParser(description="Execute notebooks with nbclient and fail on any cell error.")
    parser.add_argument("notebooks", nargs="*", type=Path, help="notebooks to run (default: every .ipynb in notebooks/)")
    parser.add_argument("--write", action="store_true", help="save the outputs into the notebook files")
    arguments = parser.parse_args(argv)

    paths = arguments.notebooks or sorted(NOTEBOOK_DIR.glob("*.ipynb"))
    if not paths:
        print(f"error: no notebooks found in {NOTEBOOK_DIR}", file=sys.stderr)
        return 1
    failed = []
    for path in paths:
        started = time.monotonic()
        try:
            execute_notebook(path, arguments.write)
        except CellExecutionError as error:
            failed.append(path)
            print(f"FAILED {path}:\n{error}", file=sys.stderr)
            continue
        print(f"ok {path} ({time.monotonic() - started:.1f} s)")
    print(f"{len(paths) - len(failed)} passed, {len(failed)} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
