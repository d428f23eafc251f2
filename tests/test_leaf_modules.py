"""leaf_modules: blocks kept as one node, with the lazy layers inside them materialized."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import fxlazy
from assertions import assert_model_unchanged, assert_state_dicts_equal, eager_dry_run, snapshot_model


class LoopBlock(nn.Module):
    """A block torch.fx cannot trace: it loops over len() of its input's shape."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.LazyConv2d(8, 3, padding=1)
        self.norm = nn.LazyBatchNorm2d()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for _ in range(len(x.shape) - 3):
            x = torch.relu(self.norm(self.conv(x)))
        return x


class WithLoopBlock(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.LazyConv2d(4, 1)
        self.block = LoopBlock()
        self.head = nn.LazyLinear(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.block(self.stem(x)).mean((2, 3)))


def test_untraceable_block_needs_leaf():
    with pytest.raises(fxlazy.UntraceableModelError, match=r"'len' is not supported in symbolic tracing"):
        fxlazy.materialize(WithLoopBlock(), torch.randn(2, 3, 8, 8))


@pytest.mark.parametrize("leaf", ["block", LoopBlock], ids=["by-name", "by-class"])
def test_leaf_block_matches_dry_run(leaf):
    x = torch.randn(2, 3, 8, 8)
    model = WithLoopBlock()
    before = snapshot_model(model)

    torch.manual_seed(6)
    static = fxlazy.materialize(model, x, leaf_modules=[leaf]).eval()
    reference, expected = eager_dry_run(WithLoopBlock(), (x,), seed=6)

    assert [n.target for n in static.graph.nodes if n.op == "call_module"] == ["stem", "block", "head"]
    assert type(static.block.conv) is nn.Conv2d
    assert static.block.conv.in_channels == 4
    assert_state_dicts_equal(static.state_dict(), reference.state_dict())
    with torch.no_grad():
        assert torch.equal(static(x), expected)
    assert_model_unchanged(model, before)


def test_leaf_block_statistics_fresh():
    static = fxlazy.materialize(WithLoopBlock(), torch.randn(2, 3, 8, 8), leaf_modules=["block"])
    norm = static.block.norm
    assert static.block.training
    assert torch.equal(norm.running_var, torch.ones(8))
    assert int(norm.num_batches_tracked) == 0


def test_leaf_block_in_report():
    static = fxlazy.materialize(WithLoopBlock(), torch.randn(2, 3, 8, 8), leaf_modules=["block"])
    row = next(row for row in fxlazy.shape_report(static).rows if row.name == "block")
    assert row.class_change == "LoopBlock -> LoopBlock"
    assert row.source == "first forward call"
    assert row.output_shapes == ((2, 8, 8, 8),)
    assert row.parameters == 4 * 8 * 9 + 8 + 16
