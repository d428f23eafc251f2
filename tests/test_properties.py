"""materialize on random lazy architectures, checked against an eager dry run.

The default profile runs 200 derandomized examples, the same ones on every run. For a
longer search with fresh random examples on each run:

    FXLAZY_HYPOTHESIS_PROFILE=thorough pytest -q -p no:warnings tests/test_properties.py
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch
import torch.fx
from hypothesis import given, note, reject, settings
from hypothesis import strategies as st
from hypothesis.configuration import set_hypothesis_home_dir

import fxlazy
from assertions import assert_model_unchanged, assert_state_dicts_equal, eager_dry_run, snapshot_model
from lazy_architectures import FEATURED_KINDS, Architecture, LazyCall, architectures

# database=None stores no failing examples. Hypothesis 6.170 also caches constants that it
# reads from local source files, in ./.hypothesis by default. Its pytest plugin fills that
# cache during collection, after this module is imported, so the cache lands in the temp dir.
set_hypothesis_home_dir(Path(tempfile.gettempdir()) / "fxlazy-hypothesis")
settings.register_profile(
    "fxlazy-default", max_examples=200, deadline=None, derandomize=True, database=None, print_blob=True
)
settings.register_profile(
    "fxlazy-thorough", max_examples=5000, deadline=None, derandomize=False, database=None, print_blob=True
)
PROFILE = settings.get_profile("fxlazy-" + os.environ.get("FXLAZY_HYPOTHESIS_PROFILE", "default"))


def _record_node_values(gm: torch.fx.GraphModule, example: tuple[torch.Tensor, ...]) -> dict[str, Any]:
    """Run ``gm`` on real tensors and return every node's value by node name."""
    values: dict[str, Any] = {}

    class Recorder(torch.fx.Interpreter):
        def run_node(self, n: torch.fx.Node) -> Any:
            values[n.name] = super().run_node(n)
            return values[n.name]

    with torch.no_grad():
        Recorder(gm).run(*example)
    return values


def _inferred_width(call: LazyCall) -> dict[str, int]:
    """Return the constructor argument a lazy layer infers from its first input, as torch does."""
    kind, dims = FEATURED_KINDS[call.spec.factory]
    if kind == "lazy-linear":
        return {"in_features": call.input_shape[-1]}
    if kind in ("lazy-batch-norm", "lazy-instance-norm"):
        # Every lazy norm reads input dim 1, also for unbatched InstanceNorm input.
        return {"num_features": call.input_shape[1]}
    channel_dim = 1 if len(call.input_shape) == dims + 2 else 0
    return {"in_channels": call.input_shape[channel_dim]}


def _output_argument(call: LazyCall) -> tuple[str, int]:
    """Return the constructor argument that fixes a lazy layer's output width, with its value."""
    kwargs = dict(call.spec.kwargs)
    if "out_features" in kwargs:
        return ("out_features", kwargs["out_features"])
    if "out_channels" in kwargs:
        return ("out_channels", kwargs["out_channels"])
    return ("num_features", call.input_shape[1])


def _check_tensor_meta(static: torch.fx.GraphModule, example: tuple[torch.Tensor, ...]) -> None:
    values = _record_node_values(static, example)
    for node in static.graph.nodes:
        value = values[node.name]
        if not isinstance(value, torch.Tensor):
            continue
        assert "tensor_meta" in node.meta, node.name
        meta = node.meta["tensor_meta"]
        assert meta.shape == value.shape, node.name
        assert meta.dtype == value.dtype, node.name


def _check_report(static: torch.fx.GraphModule, architecture: Architecture) -> None:
    report = fxlazy.shape_report(static)
    expected = architecture.lazy_calls()
    assert [row.name for row in report.rows] == [call.name for call in expected]
    for row, call in zip(report.rows, expected):
        assert row.lazy_class == call.spec.factory.__name__, row.name
        assert row.concrete_class == call.spec.factory.cls_to_become.__name__, row.name
        assert row.calls == call.calls, row.name
        assert row.inferred == _inferred_width(call), row.name
        assert row.output == _output_argument(call), row.name
        assert row.input_shapes == (call.input_shape,), row.name
        assert row.output_shapes == (call.output_shape,), row.name
        parameters = sum(p.numel() for p in static.get_submodule(row.name).parameters())
        assert row.parameters == parameters, row.name


@settings(PROFILE)
@given(architecture=architectures(), seed=st.integers(0, 2**16 - 1), seed_argument=st.booleans())
def test_random_architecture_matches_dry_run(architecture, seed, seed_argument):
    # Each use gets its own example, because an in-place ReLU on the input changes it.
    example = architecture.build_example

    # The eager dry run comes first: it is the reference, and it rejects an invalid model.
    try:
        reference, expected = eager_dry_run(architecture.build_model(), example(), seed)
    except (RuntimeError, ValueError) as error:
        note(f"eager dry run failed: {type(error).__name__}: {error}")
        reject()
    rng_after_dry_run = torch.get_rng_state()
    # A mismatch here is a bug in the generator, not in fxlazy.
    assert tuple(expected.shape) == architecture.output_shape

    model = architecture.build_model()
    before = snapshot_model(model)
    if seed_argument:
        # seed= must initialize as the dry run did and leave this other global state alone.
        torch.manual_seed(seed + 1)
        rng_expected = torch.get_rng_state()
        static = fxlazy.materialize(model, example(), seed=seed)
    else:
        torch.manual_seed(seed)
        rng_expected = rng_after_dry_run
        static = fxlazy.materialize(model, example())
    assert torch.equal(torch.get_rng_state(), rng_expected)

    assert_state_dicts_equal(static.state_dict(), reference.state_dict())
    assert_model_unchanged(model, before)
    assert static.training == architecture.training

    static.eval()
    with torch.no_grad():
        actual = static(*example())
    assert actual.dtype == expected.dtype
    assert torch.equal(actual, expected)

    _check_tensor_meta(static, example())
    _check_report(static, architecture)
