"""Models whose forward branches on tensor shapes, traced with the example's branches."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import fxlazy
from assertions import assert_model_unchanged, assert_state_dicts_equal, eager_dry_run, snapshot_model, source_line_of
from fxlazy.passes.records import SPECIALIZATIONS_KEY


class ChannelSwitch(nn.Module):
    """Accepts 64 or 128 channels and feeds either to one LazyConvTranspose2d."""

    def __init__(self) -> None:
        super().__init__()
        self.up = nn.LazyConvTranspose2d(out_channels=32, kernel_size=3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] == 64:
            return self.up(x)
        if x.shape[1] == 128:
            return self.up(x) * 0.5
        raise ValueError(f"expected 64 or 128 channels, got {x.shape[1]}")


class Block(nn.Module):
    """A block that adds a projection only when the channel count changes."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.width = width
        self.conv = nn.LazyConv2d(width, 3, padding=1)
        self.project = nn.LazyConv2d(width, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skip = x if x.size(1) == self.width else self.project(x)
        return torch.relu(self.conv(x)) + skip


class PerSideScale(nn.Module):
    """Loops over the spatial sizes of its input and unpacks its shape."""

    def __init__(self) -> None:
        super().__init__()
        self.block = Block(8)
        self.head = nn.LazyLinear(3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, channels, height, width = x.shape
        y = self.block(x)
        for side in y.shape[2:]:
            y = y * (1.0 / side)
        return self.head(y.reshape(batch, -1))


@pytest.mark.parametrize("channels", [64, 128])
def test_channel_switch_matches_dry_run(channels):
    x = torch.randn(1, channels, 8, 8)
    model = ChannelSwitch()
    before = snapshot_model(model)

    torch.manual_seed(4)
    static = fxlazy.materialize(model, x).eval()
    reference, expected = eager_dry_run(ChannelSwitch(), (x,), seed=4)

    assert static.get_submodule("up").in_channels == channels
    assert_state_dicts_equal(static.state_dict(), reference.state_dict())
    with torch.no_grad():
        assert torch.equal(static(x), expected)
    assert_model_unchanged(model, before)


def test_specializations_recorded():
    static = fxlazy.materialize(ChannelSwitch(), torch.randn(1, 64, 8, 8))
    line = source_line_of(ChannelSwitch.forward, "if x.shape[1] == 64:")

    decisions = static.meta[SPECIALIZATIONS_KEY]
    assert len(decisions) == 1
    assert f"{__file__}:{line} in forward (`if x.shape[1] == 64:`): True" == decisions[0]
    # The condition is resolved, so the graph keeps no node computing it.
    assert [n.op for n in static.graph.nodes] == ["placeholder", "call_module", "output"]


def test_general_model_has_no_specializations():
    static = fxlazy.materialize(nn.Sequential(nn.LazyLinear(3)), torch.randn(2, 4))
    assert static.meta[SPECIALIZATIONS_KEY] == ()


def test_unsupported_shape_names_user_raise():
    with pytest.raises(fxlazy.UntraceableModelError, match=r"ValueError: expected 64 or 128 channels") as raised:
        fxlazy.materialize(ChannelSwitch(), torch.randn(1, 32, 8, 8))
    line = source_line_of(ChannelSwitch.forward, "raise ValueError")
    assert f"{__file__}:{line}" in str(raised.value)
    assert "pass an example it accepts" in str(raised.value)


@pytest.mark.parametrize(("channels", "projected"), [(8, False), (5, True)])
def test_nested_condition_picks_branch(channels, projected):
    x = torch.randn(2, channels, 4, 4)
    model = PerSideScale()
    if not projected:
        # The projection is never called on this branch, so it must not stay lazy.
        model.block.project = nn.Identity()

    torch.manual_seed(1)
    static = fxlazy.materialize(model, x).eval()
    targets = [n.target for n in static.graph.nodes if n.op == "call_module"]
    assert ("block.project" in targets) == projected

    reference_model = PerSideScale()
    if not projected:
        reference_model.block.project = nn.Identity()
    reference, expected = eager_dry_run(reference_model, (x,), seed=1)
    assert_state_dicts_equal(static.state_dict(), reference.state_dict())
    with torch.no_grad():
        assert torch.equal(static(x), expected)
    assert any("items" in decision for decision in static.meta[SPECIALIZATIONS_KEY])


def test_specialized_result_exports():
    x = torch.randn(1, 128, 8, 8)
    static = fxlazy.materialize(ChannelSwitch(), x).eval()
    scripted = torch.jit.script(static)
    with torch.no_grad():
        assert torch.equal(scripted(x), static(x))


def test_report_names_specialization():
    report = fxlazy.shape_report(fxlazy.materialize(ChannelSwitch(), torch.randn(1, 64, 8, 8)))
    line = source_line_of(ChannelSwitch.forward, "if x.shape[1] == 64:")

    expected = f"Specialized to the example's shapes at {__file__}:{line} in forward (`if x.shape[1] == 64:`): True"
    assert str(report).splitlines()[-1] == expected
    assert report.graph_view().to_string().splitlines()[-1] == expected
    assert report.to_dict()["specializations"] == [expected.removeprefix("Specialized to the example's shapes at ")]
