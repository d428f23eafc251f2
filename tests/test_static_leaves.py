"""Static modules built directly from built-in lazy layers, and the layers left to the general path."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn.parameter import UninitializedTensorMixin

import fxlazy
from assertions import assert_model_unchanged, assert_state_dicts_equal, eager_dry_run, snapshot_model
from fxlazy.passes.clone import TensorCopier
from fxlazy.passes.records import CallSpec
from fxlazy.passes.static_leaves import build_static_leaves


def _first_calls(*entries: tuple[str, int | None]) -> list[tuple[CallSpec, int | None]]:
    # build_static_leaves reads only the module names and widths of the first calls.
    return [(CallSpec(name, (), {}), width) for name, width in entries]


@pytest.mark.parametrize(
    ("layer", "width", "static_class", "shapes"),
    [
        (nn.LazyLinear(3), 5, nn.Linear, {"weight": (3, 5), "bias": (3,)}),
        (nn.LazyConv2d(6, 3, groups=2), 4, nn.Conv2d, {"weight": (6, 2, 3, 3), "bias": (6,)}),
        (nn.LazyConvTranspose1d(6, 2, groups=3), 9, nn.ConvTranspose1d, {"weight": (9, 2, 2), "bias": (6,)}),
        (
            nn.LazyBatchNorm2d(),
            4,
            nn.BatchNorm2d,
            {"weight": (4,), "bias": (4,), "running_mean": (4,), "running_var": (4,), "num_batches_tracked": ()},
        ),
    ],
    ids=["linear", "grouped-conv2d", "grouped-conv-transpose1d", "batch-norm2d"],
)
def test_layer_built_as_static_class(layer, width, static_class, shapes):
    model = nn.Sequential(layer)
    before = snapshot_model(model)

    built = build_static_leaves(model, _first_calls(("0", width)), TensorCopier())

    static = built["0"]
    assert type(static) is static_class
    assert {key: tuple(t.shape) for key, t in static.state_dict(keep_vars=True).items()} == shapes
    assert not hasattr(static, "_initialize_hook")
    assert len(static._forward_pre_hooks) == 0
    for key, tensor in static.state_dict(keep_vars=True).items():
        assert not isinstance(tensor, UninitializedTensorMixin), key
        assert tensor is not model[0].state_dict(keep_vars=True)[key], key
    assert_model_unchanged(model, before)


def test_tensor_kinds_and_flags_kept():
    layer = nn.LazyLinear(3, dtype=torch.float64)
    layer.weight = nn.UninitializedParameter(requires_grad=False, dtype=torch.float64)
    norm = nn.LazyBatchNorm1d(dtype=torch.float64)
    model = nn.Sequential(layer, norm)

    built = build_static_leaves(model, _first_calls(("0", 5), ("1", 3)), TensorCopier())

    assert type(built["0"].weight) is nn.Parameter
    assert built["0"].weight.requires_grad is False
    assert built["0"].bias.requires_grad is True
    assert built["0"].weight.dtype == torch.float64
    assert type(built["1"].running_mean) is torch.Tensor
    assert built["1"].running_mean.dtype == torch.float64
    assert built["1"].num_features == 3


def _conv_with_real_bias() -> nn.Module:
    layer = nn.LazyConv2d(4, 3)
    layer.bias = nn.Parameter(torch.zeros(4))
    return layer


def _linear_with_extra_tensor() -> nn.Module:
    layer = nn.LazyLinear(3)
    layer.register_parameter("extra", nn.UninitializedParameter())
    return layer


def _linear_with_hook() -> nn.Module:
    layer = nn.LazyLinear(3)
    layer.register_forward_hook(lambda module, args, output: None)
    return layer


@pytest.mark.parametrize(
    ("build", "width"),
    [
        (_conv_with_real_bias, 3),
        (_linear_with_extra_tensor, 5),
        (_linear_with_hook, 5),
        (lambda: nn.LazyConv2d(4, 3, groups=4), 6),
        (lambda: nn.LazyBatchNorm1d(affine=False, track_running_stats=False), 3),
        (lambda: nn.LazyLinear(2**40), 5),
    ],
    ids=["real-bias", "extra-uninitialized", "user-hook", "groups-not-dividing", "no-tensors", "too-large"],
)
def test_layer_left_to_general_path(build, width):
    model = nn.Sequential(build())
    built = build_static_leaves(model, _first_calls(("0", width)), TensorCopier())
    assert built == {}


def test_user_layer_left_to_general_path():
    class ScaledLinear(nn.LazyLinear):
        """A user's subclass, whose initialization torch.nn's rules do not describe."""

    model = nn.Sequential(ScaledLinear(3))
    assert build_static_leaves(model, _first_calls(("0", 5)), TensorCopier()) == {}


def test_hooked_layer_matches_dry_run():
    # The general path: a copy with the hook, then new tensors in place of the uninitialized ones.
    def build() -> nn.Sequential:
        return nn.Sequential(_linear_with_hook(), nn.LazyLinear(2))

    x = torch.randn(4, 5)
    static = fxlazy.materialize(build(), x, seed=5)
    reference, expected = eager_dry_run(build(), (x,), seed=5)

    assert type(static.get_submodule("0")) is nn.Linear
    assert len(static.get_submodule("0")._forward_hooks) == 1
    assert_state_dicts_equal(static.state_dict(), reference.state_dict())
    with torch.no_grad():
        assert torch.equal(static.eval()(x), expected)


class StackedBlocks(nn.Module):
    """Lazy layers in a ModuleList, which forward iterates but never calls."""

    def __init__(self) -> None:
        super().__init__()
        self.blocks = nn.ModuleList([nn.LazyConv2d(4, 3, padding=1), nn.LazyBatchNorm2d(), nn.LazyConv2d(2, 1)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return x


def test_layers_in_module_list_matches_dry_run():
    x = torch.randn(2, 3, 6, 6)
    model = StackedBlocks()
    before = snapshot_model(model)

    static = fxlazy.materialize(model, x, seed=2)
    reference, expected = eager_dry_run(StackedBlocks(), (x,), seed=2)

    assert type(static.blocks) is nn.ModuleList
    assert [type(block) for block in static.blocks] == [nn.Conv2d, nn.BatchNorm2d, nn.Conv2d]
    assert_state_dicts_equal(static.state_dict(), reference.state_dict())
    with torch.no_grad():
        assert torch.equal(static.eval()(x), expected)
    assert_model_unchanged(model, before)
