"""The committed notebooks carry the outputs of a clean run, and the quickstart matches its builder.

.ci/run executes every notebook (notebooks/execute_notebooks.py); these tests check the
committed files, which readers on the web see without running anything.
"""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

import pytest

NOTEBOOK_DIR = Path(__file__).resolve().parent.parent / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))


def _code_cells(path: Path) -> list[dict]:
    notebook = json.loads(path.read_text(encoding="utf-8"))
    return [cell for cell in notebook["cells"] if cell["cell_type"] == "code"]


def test_quickstart_committed():
    assert NOTEBOOK_DIR / "quickstart.ipynb" in NOTEBOOKS


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[path.name for path in NOTEBOOKS])
def test_cells_ran_in_order(path):
    cells = _code_cells(path)

    assert [cell["execution_count"] for cell in cells] == list(range(1, len(cells) + 1))
    for index, cell in enumerate(cells):
        assert cell["outputs"], f"code cell {index + 1} has no output"
        kinds = {output["output_type"] for output in cell["outputs"]}
        assert "error" not in kinds, f"code cell {index + 1} raised"
        streams = [output for output in cell["outputs"] if output["output_type"] == "stream"]
        assert all(output["name"] == "stdout" for output in streams), f"code cell {index + 1} wrote to stderr"


def test_quickstart_shows_table_and_picture():
    outputs = [output for cell in _code_cells(NOTEBOOK_DIR / "quickstart.ipynb") for output in cell["outputs"]]
    rich = [output["data"] for output in outputs if output["output_type"] in ("execute_result", "display_data")]
    html_tables = [data["text/html"] for data in rich if "text/html" in data]
    pictures = [data["image/svg+xml"] for data in rich if "image/svg+xml" in data]

    assert len(html_tables) == 2
    assert "<td style=\"text-align: left\">in_channels=64</td>" in "".join(html_tables[0])
    assert len(pictures) == 1
    assert "in_channels=64 (input dim 1), out_channels=32" in "".join(pictures[0])
    printed = "".join("".join(output["text"]) for output in outputs if output["output_type"] == "stream")
    assert "same parameters: True" in printed
    assert "same outputs: True" in printed


def test_quickstart_matches_builder(monkeypatch):
    pytest.importorskip("nbformat", reason='the notebooks extra is missing; pip install -e ".[notebooks]"')
    pytest.importorskip("nbclient", reason='the notebooks extra is missing; pip install -e ".[notebooks]"')
    monkeypatch.syspath_prepend(str(NOTEBOOK_DIR))
    sys.modules.pop("build_quickstart", None)
    builder = importlib.import_module("build_quickstart")

    committed = json.loads((NOTEBOOK_DIR / "quickstart.ipynb").read_text(encoding="utf-8"))["cells"]
    assert [cell["cell_type"] for cell in committed] == [cell.cell_type for cell in builder.CELLS]
    for index, (cell, expected) in enumerate(zip(committed, builder.CELLS)):
        assert "".join(cell["source"]) == expected.source, f"cell {index + 1} differs; run python notebooks/build_quickstart.py"
