"""The assembled GraphModule keeps the model's full module tree, state and flags."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import fxlazy


class GainBlock(nn.Module):
    """A traced-through block that owns a parameter, a buffer and a plain tensor attribute."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.LazyConv2d(4, 1)
        self.gain = nn.Parameter(torch.full((1, 4, 1, 1), 2.0))
        self.register_buffer("mask", torch.tensor([1.0, 0.0, 1.0, 1.0]).view(4, 1, 1))
        self.offset = torch.tensor(0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x) * self.gain * self.mask + self.offset


class SpareBlock(nn.Module):
    """A custom container that forward never calls."""

    def __init__(self) -> None:
        super().__init__()
        self.inner = nn.Linear(2, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x)


class AssembleNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.block = GainBlock()
        self.spare = nn.Linear(3, 3)
        self.spare_block = SpareBlock()
        self.tail = nn.Sequential(nn.ReLU(), nn.Dropout(0.5))
        self.head = nn.LazyLinear(2)
        # The same module under a second name.
        self.alias = self.head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.tail(self.block(x)).mean((2, 3))
        return self.alias(self.head(x)[:, :1].expand(-1, 4))


@pytest.fixture
def built():
    torch.manual_seed(0)
    model = AssembleNet()
    model.tail.eval()
    x = torch.randn(2, 3, 5, 5)
    return model, x, fxlazy.materialize(model, x)


def test_uncalled_modules_kept(built):
    model, _, static = built

    assert type(static.spare) is nn.Linear
    assert torch.equal(static.spare.weight, model.spare.weight)
    assert torch.equal(static.spare.bias, model.spare.bias)
    assert type(static.spare_block) is SpareBlock
    assert torch.equal(static.spare_block.inner.weight, model.spare_block.inner.weight)
    assert "spare.weight" in static.state_dict()
    assert "spare_block.inner.weight" in static.state_dict()


def test_container_parameter_kept(built):
    model, x, static = built
    parameters = dict(static.named_parameters())

    assert isinstance(static.block.gain, nn.Parameter)
    assert torch.equal(static.block.gain, model.block.gain)
    assert parameters["block.gain"] is static.block.gain
    # The graph reads the parameter, so it receives a gradient.
    static(x).sum().backward()
    assert static.block.gain.grad is not None
    assert static.block.gain.grad.abs().sum() > 0


def test_container_buffer_and_plain_tensor_kept(built):
    _, x, static = built

    assert torch.equal(static.block.mask, torch.tensor([1.0, 0.0, 1.0, 1.0]).view(4, 1, 1))
    assert "block.mask" in dict(static.named_buffers())
    assert torch.equal(static.block.offset, torch.tensor(0.5))
    assert "block.offset" not in static.state_dict()

    static.eval()
    with torch.no_grad():
        conv_out = static.block.conv(x) * 2.0 * static.block.mask + 0.5
        hidden = static.head(torch.relu(conv_out).mean((2, 3)))
        expected = static.head(hidden[:, :1].expand(-1, 4))
        assert torch.equal(static(x), expected)


def test_state_dict_order_matches_model(built):
    model, _, static = built
    assert list(static.state_dict()) == list(model.state_dict())
    assert list(static.state_dict()) == [
        "block.gain",
        "block.mask",
        "block.conv.weight",
        "block.conv.bias",
        "spare.weight",
        "spare.bias",
        "spare_block.inner.weight",
        "spare_block.inner.bias",
        "head.weight",
        "head.bias",
        "alias.weight",
        "alias.bias",
    ]


def test_tied_module_one_object(built):
    _, _, static = built
    names = [name for name, _ in static.named_modules(remove_duplicate=False)]

    assert static.alias is static.head
    assert "alias" in names
    assert type(static.head) is nn.Linear
    assert static.head.in_features == 4
    state = static.state_dict()
    assert state["alias.weight"].data_ptr() == state["head.weight"].data_ptr()


def test_inlined_containers_plain_leaves_keep_class(built):
    _, _, static = built

    assert type(static.block) is nn.Module
    assert type(static.tail) is nn.Module
    assert type(static.block.conv) is nn.Conv2d
    assert type(static.get_submodule("tail.0")) is nn.ReLU
    assert type(static.get_submodule("tail.1")) is nn.Dropout
    assert [name for name, _ in static.named_modules()][1:] == [
        "block",
        "block.conv",
        "spare",
        "spare_block",
        "spare_block.inner",
        "tail",
        "tail.0",
        "tail.1",
        "head",
    ]


def test_training_flags_kept(built):
    model, _, static = built
    expected = {name: module.training for name, module in model.named_modules()}
    actual = {name: module.training for name, module in static.named_modules()}

    assert actual == expected
    assert static.training
    assert static.block.training
    assert not static.tail.training
    assert not static.get_submodule("tail.1").training
