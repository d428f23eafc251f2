"""Several examples: widths must agree, and the dims that vary are reported as dynamic."""

from __future__ import annotations

import re

import pytest
import torch
from torch import nn

import fxlazy
from assertions import assert_model_unchanged, snapshot_model
from fxlazy.passes.records import DYNAMIC_DIMS_KEY
from test_specialize import ChannelSwitch


def test_two_widths_name_layer_and_examples():
    model = ChannelSwitch()
    before = snapshot_model(model)
    with pytest.raises(fxlazy.SharedLazyModuleError, match=r"Lazy module 'up' gets different widths from the examples") as raised:
        fxlazy.materialize(model, torch.randn(1, 64, 8, 8), more_examples=[torch.randn(1, 128, 8, 8)])

    message = str(raised.value)
    assert re.search(r"example 0:\s+in_channels=64 at node 'up'", message)
    assert re.search(r"example 1:\s+in_channels=128 at node 'up'", message)
    assert "fixes its widths at its first call" in message
    assert "one lazy layer per width" in message
    assert_model_unchanged(model, before)


def test_varying_dims_reported_dynamic():
    model = nn.Sequential(nn.LazyConv2d(4, 3), nn.LazyBatchNorm2d(), nn.ReLU())
    static = fxlazy.materialize(
        model, torch.randn(2, 3, 9, 9), more_examples=[torch.randn(4, 3, 12, 9), (torch.randn(1, 3, 9, 9),)]
    )

    assert static.meta[DYNAMIC_DIMS_KEY] == {"input": (0, 2)}
    report = fxlazy.shape_report(static)
    assert str(report).splitlines()[-1] == "Dynamic across the examples: 'input' dims 0, 2"
    assert report.to_dict()["dynamic_dims"] == {"input": [0, 2]}
    # The result serves every example.
    for x in (torch.randn(4, 3, 12, 9), torch.randn(1, 3, 9, 9)):
        assert static.eval()(x).shape == (x.shape[0], 4, x.shape[2] - 2, x.shape[3] - 2)


def test_single_example_has_no_dynamic_dims():
    static = fxlazy.materialize(nn.Sequential(nn.LazyLinear(3)), torch.randn(2, 4))
    assert static.meta[DYNAMIC_DIMS_KEY] == {}


def test_other_branch_rejected():
    class TwoPaths(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.proj = nn.LazyLinear(4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if x.shape[0] > 2:
                return self.proj(x) * 2
            return self.proj(x)

    with pytest.raises(fxlazy.UntraceableModelError, match=r"Example 1 takes other branches of forward than example 0"):
        fxlazy.materialize(TwoPaths(), torch.randn(4, 5), more_examples=[torch.randn(2, 5)])


@pytest.mark.parametrize(
    ("more", "match"),
    [
        ([torch.randn(3, 2, 4)], r"Argument 'input' has 2 dims in example 0 but \[2, 3\] across the examples"),
        ([(torch.randn(2, 4), torch.randn(2, 4))], r"The example does not fit Sequential\.forward"),
    ],
    ids=["dims-differ", "too-many-arguments"],
)
def test_bad_further_example(more, match):
    with pytest.raises(fxlazy.ExampleInputError, match=match):
        fxlazy.materialize(nn.Sequential(nn.LazyLinear(3)), torch.randn(2, 4), more_examples=more)


def test_export_takes_dynamic_dims_from_examples():
    model = nn.Sequential(nn.LazyConv2d(4, 3), nn.ReLU())
    x = torch.randn(2, 3, 9, 9)
    static = fxlazy.materialize(model, x, more_examples=[torch.randn(5, 3, 9, 9)])

    result = fxlazy.export_program(static, x)

    assert result.dynamic_dims == {"input": (0,)}
    assert [check.inputs for check in result.checks] == ["example", "example at batch 3"]
    program = result.artifact.module()
    assert program(torch.randn(5, 3, 9, 9)).shape == (5, 4, 7, 7)


def test_onnx_takes_dynamic_dims_from_examples(tmp_path):
    pytest.importorskip("onnxruntime", reason="needs the onnx extra: pip install -e '.[onnx]'")
    model = nn.Sequential(nn.LazyConv2d(4, 3), nn.ReLU())
    x = torch.randn(2, 3, 9, 9)
    static = fxlazy.materialize(model, x, more_examples=[torch.randn(5, 3, 9, 9)])

    result = fxlazy.export_onnx(static, x, tmp_path / "model.onnx")

    assert result.dynamic_dims == {"input": (0,)}
    assert len(result.checks) == 2
