"""Test options: ``--regen-golden`` rewrites the golden files in tests/golden/."""

from __future__ import annotations

from pathlib import Path

import pytest

GOLDEN_DIR = Path(__file__).parent / "golden"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--regen-golden",
        action="store_true",
        default=False,
        help="write the current output to the golden files in tests/golden/ instead of comparing with them",
    )


class GoldenFiles:
    """Compare printed output with the files in tests/golden/, or rewrite them."""

    def __init__(self, folder: Path, regenerate: bool) -> None:
        self.folder = folder
        self.regenerate = regenerate

    def check(self, name: str, text: str) -> None:
        """Assert that ``text`` equals the golden file ``name``; with --regen-golden, write it."""
        path = self.folder / name
        if self.regenerate:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
            return
        if not path.exists():
            pytest.fail(f"golden file {path} is missing; run pytest --regen-golden to write it")
        expected = path.read_text(encoding="utf-8")
        assert text == expected, f"output differs from {path}; if the change is intended, run pytest --regen-golden"


@pytest.fixture
def golden(request: pytest.FixtureRequest) -> GoldenFiles:
    return GoldenFiles(GOLDEN_DIR, request.config.getoption("--regen-golden"))
