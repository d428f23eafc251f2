"""The examples in public docstrings run and print what they show."""

from __future__ import annotations

import doctest

import pytest

import fxlazy
from fxlazy import _materialize, checkpoint, drawing, report
from fxlazy.export import program, torchscript

MODULES = {
    "materialize": _materialize,
    "report": report,
    "drawing": drawing,
    "checkpoint": checkpoint,
    "export.program": program,
    "export.torchscript": torchscript,
}


@pytest.mark.parametrize("name", sorted(MODULES))
def test_docstring_examples_run(name):
    result = doctest.testmod(MODULES[name], optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0
    assert result.failed == 0


def test_public_functions_documented():
    for name in fxlazy.__all__:
        assert getattr(fxlazy, name).__doc__, name


def test_onnx_docstring_examples_run():
    pytest.importorskip("onnxruntime", reason='the onnx extra is not installed (pip install "fxlazy[onnx]")')
    from fxlazy.export import onnx as export_onnx_module

    result = doctest.testmod(export_onnx_module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0
    assert result.failed == 0
