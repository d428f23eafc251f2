"""The methods that bench_materialize.py compares, each a way to get a model with initialized parameters.

Each method builds its model from scratch, so building the model is part of the measured
work, and returns what it created, so that the caller can stop the clock before the
results are freed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.fx
from torch.fx.passes.shape_prop import ShapeProp

import fxlazy
from bench_common import describe_error
from bench_models import BenchModel


def run_fxlazy(model: BenchModel, example: torch.Tensor) -> Any:
    return fxlazy.materialize(model.build(True), example)


def run_eager_dry_run(model: BenchModel, example: torch.Tensor) -> Any:
    lazy_model = model.build(True)
    lazy_model.eval()
    output = lazy_model(example)
    return lazy_model, output


def run_eager_dry_run_no_grad(model: BenchModel, example: torch.Tensor) -> Any:
    lazy_model = model.build(True)
    lazy_model.eval()
    with torch.no_grad():
        output = lazy_model(example)
    return lazy_model, output


def run_shape_prop(model: BenchModel, example: torch.Tensor) -> Any:
    # Lazy layers are torch.nn modules, so symbolic_trace keeps them as leaves, and
    # ShapeProp's real forward initializes them through their forward pre-hooks.
    lazy_model = model.build(True)
    lazy_model.eval()
    graph_module = torch.fx.symbolic_trace(lazy_model)
    with torch.no_grad():
        ShapeProp(graph_module).propagate(example)
    return lazy_model, graph_module


def run_floor(model: BenchModel, example: torch.Tensor) -> Any:
    # The static twin allocates and initializes the same parameters and does nothing else.
    return model.build(False)


def run_floor_symbolic_trace(model: BenchModel, example: torch.Tensor) -> Any:
    return torch.fx.symbolic_trace(model.build(False))


@dataclass(frozen=True)
class Method:
    """A measured way to get the model with initialized parameters.

    ``key`` names the method in the hidden subprocess flags, ``label`` in the tables.
    When ``may_fail`` is set, an exception from ``run`` is recorded in the tables instead
    of ending the benchmark.
    """

    key: str
    label: str
    run: Callable[[BenchModel, torch.Tensor], Any]
    may_fail: bool = False


METHODS = (
    Method("fxlazy", "fxlazy", run_fxlazy),
    Method("eager", "eager dry run", run_eager_dry_run),
    Method("eager-no-grad", "eager dry run, no_grad", run_eager_dry_run_no_grad),
    # torch.fx.symbolic_trace raises on a forward with control flow that depends on tensor
    # values or shapes, so a failure of the two methods that call it is a result to report.
    Method("shape-prop", "fx ShapeProp", run_shape_prop, may_fail=True),
    Method("floor", "floor", run_floor),
    Method("floor-trace", "floor + symbolic_trace", run_floor_symbolic_trace, may_fail=True),
)
METHODS_BY_KEY = {method.key: method for method in METHODS}


def run_method(method: Method, model: BenchModel, example: torch.Tensor) -> tuple[Any, str | None]:
    """Run ``method`` and return its result and None, or None and the error text if a ``may_fail`` method raised."""
    try:
        return method.run(model, example), None
    except Exception as error:  # noqa: BLE001  (ShapeProp can raise anything that the model's forward raises)
        if not method.may_fail:
            raise
        return None, describe_error(error)

