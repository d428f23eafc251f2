"""The installed package layout and the public names of fxlazy."""

from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys

import pytest

import fxlazy
import fxlazy.errors

# Runs in a fresh interpreter outside the repository, so only the installed package
# is importable, never the checkout's top-level folders.
_LAYOUT_PROBE = """
import importlib.util, json
import fxlazy.passes.propagate
print(json.dumps({
    "passes_spec": repr(importlib.util.find_spec("passes")),
    "propagate_name": fxlazy.passes.propagate.__name__,
    "has_shape_prop": hasattr(fxlazy.passes.propagate, "LazyShapeProp"),
    "passes_file": fxlazy.passes.__file__,
}))
"""


def test_passes_installed_under_fxlazy(tmp_path):
    environment = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    finished = subprocess.run(
        [sys.executable, "-c", _LAYOUT_PROBE],
        cwd=tmp_path,
        env=environment,
        capture_output=True,
        text=True,
        timeout=180,
    )

    assert finished.returncode == 0, finished.stderr
    probe = json.loads(finished.stdout)
    assert probe["passes_spec"] == "None"
    assert probe["propagate_name"] == "fxlazy.passes.propagate"
    assert probe["has_shape_prop"] is True
    assert os.path.basename(os.path.dirname(probe["passes_file"])) == "passes"


def test_all_names_exist():
    assert len(fxlazy.__all__) == len(set(fxlazy.__all__))
    for name in fxlazy.__all__:
        assert hasattr(fxlazy, name), name
    assert callable(fxlazy.materialize)
    assert callable(fxlazy.shape_report)


def test_error_classes_exported():
    defined = {
        name
        for name, value in vars(fxlazy.errors).items()
        if inspect.isclass(value) and issubclass(value, BaseException) and value.__module__ == fxlazy.errors.__name__
    }
    assert defined == set(fxlazy.errors.__all__)
    assert defined <= set(fxlazy.__all__)
    for name in defined:
        assert getattr(fxlazy, name) is getattr(fxlazy.errors, name), name


def test_error_classes_derive_from_base():
    for name in fxlazy.errors.__all__:
        assert issubclass(getattr(fxlazy.errors, name), fxlazy.FxLazyError), name
    assert issubclass(fxlazy.FxLazyError, Exception)


def test_error_builtin_categories():
    # The categories the errors module documents, so `except TypeError` handlers keep working.
    assert issubclass(fxlazy.ExampleInputError, TypeError)
    assert issubclass(fxlazy.LazyDtypeMismatchError, TypeError)
    assert issubclass(fxlazy.SharedLazyModuleError, ValueError)
    assert issubclass(fxlazy.UnsupportedLazyModuleError, NotImplementedError)


_IMPORT_PROBE = """
import sys
import pytest

import fxlazy
heavy = ["tabulate", "graphviz", "onnx", "onnxruntime", "fxlazy.report", "fxlazy.export"]
print(",".join(name for name in heavy if name in sys.modules))
print(fxlazy.shape_report.__module__, "tabulate" in sys.modules)
"""


def test_import_leaves_report_and_export_unloaded(tmp_path):
    finished = subprocess.run(
        [sys.executable, "-c", _IMPORT_PROBE], cwd=tmp_path, capture_output=True, text=True, timeout=180
    )
    assert finished.returncode == 0, finished.stderr
    loaded, after_use = finished.stdout.splitlines()
    assert loaded == ""
    assert after_use == "fxlazy.report True"


def test_unknown_attribute_raises():
    with pytest.raises(AttributeError, match=r"module 'fxlazy' has no attribute 'not_there'"):
        fxlazy.not_there  # noqa: B018 - the attribute access is the test
