"""Every failure fxlazy.materialize reports: its class, its message, its cause, and an unchanged model."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
import torch
import torch.fx
from torch import nn
from torch.nn.parameter import UninitializedParameter

import fxlazy
from assertions import assert_model_unchanged, eager_dry_run, snapshot_model, source_line_of
from fixture_models import LazyChannelAffine


class SingleLinear(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.LazyLinear(3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)


class TwoInputs(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.LazyLinear(3)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.proj(x + y)


class VariadicForward(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.LazyLinear(3)

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        return self.proj(inputs[0])


class ContainerInput(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.LazyLinear(3)

    def forward(self, inputs: Any) -> torch.Tensor:
        return self.proj(inputs[0])


class BuildsLayerInForward(nn.Module):
    """A hand-written "lazy" layer: it builds a ConvTranspose2d from the input's channels on every call."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        up = nn.ConvTranspose2d(x.shape[1], 32, kernel_size=3, stride=2)
        return up(x)


class CallsLayerBuiltInForward(nn.Module):
    """Builds a ConvTranspose2d with fixed widths in forward, then calls it."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        up = nn.ConvTranspose2d(64, 32, kernel_size=3, stride=2)
        return up(x)


class ValueBranch(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.LazyConv2d(4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.sum() > 0:
            x = -x
        return self.conv(x)


class ItemInForward(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.LazyLinear(3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x) * x.max().item()


class ToListInForward(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.LazyLinear(3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x) + x.new_tensor(x.tolist()).sum()


class LayerShapeMismatch(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.LazyLinear(3)
        self.out = nn.Linear(5, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.proj(x))


class ReadsLazyWeightFirst(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.LazyLinear(3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj.weight.sum() + self.proj(x)


class Float64Linear(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.LazyLinear(3, dtype=torch.float64)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)


class SharedLinear(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.LazyLinear(3)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        first = self.proj(x)
        second = self.proj(y)
        return first + second


class SharedAffine(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.affine = LazyChannelAffine()

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        first = self.affine(x)
        second = self.affine(y)
        return first, second


class GroupedConv(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.LazyConv2d(4, 1, groups=4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class RaisingLazyAffine(LazyChannelAffine):
    def initialize_parameters(self, x: torch.Tensor) -> None:
        raise ValueError(f"expected a 4-dim input, got {x.dim()} dims")


class HalfInitializedLazyAffine(LazyChannelAffine):
    def initialize_parameters(self, x: torch.Tensor) -> None:
        self.num_channels = x.shape[1]
        self.scale.materialize((self.num_channels,))


class RealTensorFailingLazyAffine(LazyChannelAffine):
    """A lazy layer that initializes on meta tensors but fails on real ones, so only after propagation."""

    def initialize_parameters(self, x: torch.Tensor) -> None:
        if x.device.type != "meta":
            raise RuntimeError(f"cannot initialize from a {x.device.type} tensor")
        self.num_channels = x.shape[1]
        self.scale.materialize((self.num_channels,))
        self.shift.materialize((self.num_channels,))


class CustomLayerModel(nn.Module):
    """A LazyLinear followed by a custom lazy layer, so a later failure can follow a success."""

    def __init__(self, layer: nn.Module) -> None:
        super().__init__()
        self.proj = nn.LazyLinear(4)
        self.layer = layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(self.proj(x))


class UnusedLazy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.LazyLinear(3)
        self.spare = nn.LazyLinear(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)


class RawUninitialized(nn.Module):
    """A module that owns an UninitializedParameter without LazyModuleMixin and never initializes it."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = UninitializedParameter()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


class WithRawUninitialized(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.LazyLinear(3)
        self.raw = RawUninitialized()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.raw(self.proj(x))


class LockedBlock(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.LazyLinear(3)
        self.lock = threading.Lock()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)


class LockedInside(nn.Module):
    """A model whose uncopyable attribute sits on a submodule, not on the root."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Linear(4, 4)
        self.block = LockedBlock()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(self.stem(x))


class LockedLazyAffine(LazyChannelAffine):
    """A custom lazy layer with a threading.Lock attribute, which copy.deepcopy cannot copy."""

    def __init__(self) -> None:
        super().__init__()
        self.lock = threading.Lock()


class LockedModel(nn.Module):
    """A model whose leaf ``block.1`` cannot be copied, so it cannot be materialized out of place.

    Its output shape comes from a formula, so propagation needs no copy of it, and an
    in-place materialization succeeds.
    """

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.LazyLinear(3)
        locked = nn.ReLU()
        locked.lock = threading.Lock()
        self.block = nn.Sequential(nn.Tanh(), locked)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(self.proj(x))


class LockedLazyModel(nn.Module):
    """A model whose custom lazy layer cannot be copied, not even to the meta device."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.LazyLinear(3)
        self.affine = LockedLazyAffine()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.affine(self.proj(x))


BuiltCase = tuple[nn.Module, tuple[Any, ...], dict[str, Any]]


def _source_location(function: Callable[..., Any], text: str) -> str:
    """Return the ``file:line`` prefix fxlazy writes for the source line of ``function`` containing ``text``."""
    return f"{__file__}:{source_line_of(function, text)}"


@dataclass(frozen=True)
class ErrorCase:
    """One failure of materialize.

    Attributes:
        case_id: the pytest id.
        build: returns a fresh model, its positional example and its keyword example.
        error: the exception class materialize raises.
        match: a regex that the message must match (``re.search``).
        fragments: texts that must each appear in the message.
        cause: the class of ``__cause__``, or None where no underlying exception exists.
        fails_before_changes: the failure comes before any module is changed, so
            ``inplace=True`` must leave the model unchanged as well.
    """

    case_id: str
    build: Callable[[], BuiltCase]
    error: type[fxlazy.FxLazyError]
    match: str
    fragments: tuple[str, ...] = ()
    cause: type[BaseException] | None = None
    fails_before_changes: bool = True


ERROR_CASES = [
    ErrorCase(
        "too-many-arguments",
        lambda: (SingleLinear(), (torch.randn(2, 4), torch.randn(2, 4)), {}),
        fxlazy.ExampleInputError,
        r"The example does not fit SingleLinear\.forward\(x\b.*: too many positional arguments",
        fragments=("Got 2 positional argument(s)",),
        cause=TypeError,
    ),
    ErrorCase(
        "unknown-keyword",
        lambda: (SingleLinear(), (torch.randn(2, 4),), {"scale": 2.0}),
        fxlazy.ExampleInputError,
        r"does not fit SingleLinear\.forward.*got an unexpected keyword argument 'scale'",
        fragments=("keyword argument(s) ['scale']",),
        cause=TypeError,
    ),
    ErrorCase(
        "missing-argument",
        lambda: (TwoInputs(), (torch.randn(2, 4),), {}),
        fxlazy.ExampleInputError,
        r"does not fit TwoInputs\.forward.*missing a required argument: 'y'",
        cause=TypeError,
    ),
    ErrorCase(
        "variadic-forward",
        lambda: (VariadicForward(), (torch.randn(2, 4),), {}),
        fxlazy.ExampleInputError,
        r"VariadicForward\.forward\(\*inputs\b.* takes variadic arguments \(inputs\)",
    ),
    ErrorCase(
        "tensor-in-list",
        lambda: (ContainerInput(), ([torch.randn(2, 4), torch.randn(2, 4)],), {}),
        fxlazy.ExampleInputError,
        r"Argument 'inputs' of ContainerInput\.forward is a list that contains tensors",
    ),
    ErrorCase(
        "tensor-in-dict",
        lambda: (ContainerInput(), (), {"inputs": {0: torch.randn(2, 4)}}),
        fxlazy.ExampleInputError,
        r"Argument 'inputs' of ContainerInput\.forward is a dict that contains tensors",
    ),
    ErrorCase(
        "module-built-in-forward",
        lambda: (BuildsLayerInForward(), (torch.randn(1, 64, 8, 8),), {}),
        fxlazy.ModuleCreatedInForwardError,
        r"BuildsLayerInForward\.forward builds a ConvTranspose2d on every call",
        fragments=(
            _source_location(BuildsLayerInForward.forward, "up = nn.ConvTranspose2d("),
            "new random values at each call",
            "nn.LazyConvTranspose2d",
        ),
    ),
    ErrorCase(
        "module-called-after-built-in-forward",
        lambda: (CallsLayerBuiltInForward(), (torch.randn(1, 64, 8, 8),), {}),
        fxlazy.ModuleCreatedInForwardError,
        r"CallsLayerBuiltInForward\.forward builds a ConvTranspose2d on every call",
        fragments=(_source_location(CallsLayerBuiltInForward.forward, "return up(x)"), "Create it once in __init__"),
    ),
    ErrorCase(
        "lazy-module-on-other-device",
        lambda: (nn.Sequential(nn.LazyLinear(3, device="meta")), (torch.randn(2, 4),), {}),
        fxlazy.LazyDeviceMismatchError,
        r"Lazy module '0' \(LazyLinear\) was built on device meta, but the example's tensors are on cpu",
        fragments=(".to('meta')",),
    ),
    ErrorCase(
        "lazy-model-moved-to-meta",
        lambda: (nn.Sequential(nn.LazyLinear(3)).to("meta"), (torch.randn(2, 4),), {}),
        fxlazy.LazyInitializationError,
        r"Lazy module '0' \(LazyLinear\) has zero-size tensors \['weight', 'bias'\]",
        fragments=("model.to('meta')", "device='meta'"),
    ),
    ErrorCase(
        "string-where-tensor-needed",
        lambda: (nn.Sequential(nn.LazyLinear(3)), ("not a tensor",), {}),
        fxlazy.ExampleInputError,
        r"Lazy module '0' \(LazyLinear\) receives 'not a tensor' \(str\)",
        fragments=("Pass tensors in the example",),
    ),
    ErrorCase(
        "scalar-where-tensor-needed",
        lambda: (nn.Sequential(nn.LazyLinear(3)), (3.0,), {}),
        fxlazy.ExampleInputError,
        r"Lazy module '0' \(LazyLinear\) receives 3\.0 \(float\)",
    ),
    ErrorCase(
        "branch-on-value",
        lambda: (ValueBranch(), (torch.randn(1, 3, 2, 2),), {}),
        fxlazy.UntraceableModelError,
        r"torch\.fx cannot trace ValueBranch\.forward: TraceError",
        fragments=(
            "test_errors.py",
            _source_location(ValueBranch.forward, "if x.sum() > 0:"),
            "if x.sum() > 0:",
        ),
        cause=torch.fx.proxy.TraceError,
    ),
    ErrorCase(
        "item-in-forward",
        lambda: (ItemInForward(), (torch.randn(2, 4),), {}),
        fxlazy.ShapePropagationError,
        r"Shape propagation failed at node 'item' \(call_method item\)",
        fragments=(
            _source_location(ItemInForward.forward, ".item()"),
            "return self.proj(x) * x.max().item()",
            "Tensor.item() cannot be called on meta tensors",
        ),
        cause=RuntimeError,
    ),
    ErrorCase(
        "tolist-in-forward",
        lambda: (ToListInForward(), (torch.randn(2, 4),), {}),
        fxlazy.ShapePropagationError,
        r"Shape propagation failed at node 'tolist' \(call_method tolist\)",
        fragments=(_source_location(ToListInForward.forward, ".tolist()"), "(2, 4)"),
        cause=NotImplementedError,
    ),
    ErrorCase(
        "layer-shape-mismatch",
        lambda: (LayerShapeMismatch(), (torch.randn(2, 4),), {}),
        fxlazy.ShapePropagationError,
        r"Shape propagation failed at node 'out' \(call_module out\)",
        fragments=(_source_location(LayerShapeMismatch.forward, "self.out("), "(2, 3)", "[5, 2]"),
        cause=RuntimeError,
    ),
    ErrorCase(
        "lazy-weight-read-before-call",
        lambda: (ReadsLazyWeightFirst(), (torch.randn(2, 4),), {}),
        fxlazy.ShapePropagationError,
        r"reads the uninitialized tensor 'proj\.weight'",
    ),
    ErrorCase(
        "dtype-mismatch",
        lambda: (Float64Linear(), (torch.randn(2, 4),), {}),
        fxlazy.LazyDtypeMismatchError,
        r"Lazy module 'proj' \(LazyLinear\) was built with dtype=torch\.float64, "
        r"but its input .* has dtype torch\.float32",
        fragments=(".to(torch.float64)", "dtype=torch.float32"),
    ),
    ErrorCase(
        "shared-module-two-widths",
        lambda: (SharedLinear(), (torch.randn(2, 4), torch.randn(2, 5)), {}),
        fxlazy.SharedLazyModuleError,
        r"Lazy module 'proj' \(LazyLinear\) is called at two places with different widths",
        fragments=(
            "node 'proj' (call_module proj)",
            "node 'proj_1' (call_module proj)",
            _source_location(SharedLinear.forward, "first = self.proj(x)"),
            _source_location(SharedLinear.forward, "second = self.proj(y)"),
            "in_features=4",
            "in_features=5",
        ),
    ),
    ErrorCase(
        "shared-custom-layer-two-shapes",
        lambda: (SharedAffine(), (torch.randn(2, 4, 3, 3), torch.randn(2, 5, 3, 3)), {}),
        fxlazy.SharedLazyModuleError,
        r"Lazy module 'affine' \(LazyChannelAffine\) is called at two places with inputs it cannot both accept",
        fragments=(
            "node 'affine' (call_module affine)",
            "node 'affine_1' (call_module affine)",
            _source_location(SharedAffine.forward, "first = self.affine(x)"),
            _source_location(SharedAffine.forward, "second = self.affine(y)"),
            "(2, 4, 3, 3)",
            "(2, 5, 3, 3)",
        ),
        cause=RuntimeError,
    ),
    ErrorCase(
        "groups-not-dividing-channels",
        lambda: (GroupedConv(), (torch.randn(1, 6, 3, 3),), {}),
        fxlazy.LazyInitializationError,
        r"Module 'conv' \(LazyConv2d\) has groups=4, which does not divide the inferred in_channels=6",
    ),
    ErrorCase(
        "initialize-parameters-raises",
        lambda: (CustomLayerModel(RaisingLazyAffine()), (torch.randn(2, 3),), {}),
        fxlazy.LazyInitializationError,
        r"Module 'layer' \(RaisingLazyAffine\) failed in initialize_parameters for inputs \(\(2, 4\)\)",
        fragments=("expected a 4-dim input, got 2 dims",),
        cause=ValueError,
    ),
    ErrorCase(
        "initialize-parameters-leaves-uninitialized",
        lambda: (CustomLayerModel(HalfInitializedLazyAffine()), (torch.randn(2, 3),), {}),
        fxlazy.LazyInitializationError,
        r"Module 'layer' \(HalfInitializedLazyAffine\) still has uninitialized tensors \['shift'\]",
    ),
    ErrorCase(
        "initialize-parameters-fails-on-real-tensor",
        lambda: (CustomLayerModel(RealTensorFailingLazyAffine()), (torch.randn(2, 3),), {}),
        fxlazy.LazyInitializationError,
        r"Module 'layer' \(RealTensorFailingLazyAffine\) failed in initialize_parameters",
        fragments=("cannot initialize from a cpu tensor",),
        cause=RuntimeError,
        fails_before_changes=False,
    ),
    ErrorCase(
        "parameters-too-large-to-allocate",
        lambda: (nn.Sequential(nn.LazyLinear(2**40)), (torch.randn(2, 5),), {}),
        fxlazy.LazyInitializationError,
        r"Module '0' \(LazyLinear\) failed in initialize_parameters for inputs \(\(2, 5\)\)",
        fragments=("can't allocate memory", "Materialize with device='meta'"),
        cause=RuntimeError,
        # torch sets in_features before it allocates the weight.
        fails_before_changes=False,
    ),
    ErrorCase(
        "unused-lazy-module",
        lambda: (UnusedLazy(), (torch.randn(2, 4),), {}),
        fxlazy.UnusedLazyModuleError,
        r"forward of UnusedLazy never calls the lazy module\(s\) 'spare' \(LazyLinear\)",
    ),
    ErrorCase(
        "uninitialized-parameter-never-initialized",
        lambda: (WithRawUninitialized(), (torch.randn(2, 4),), {}),
        fxlazy.LazyInitializationError,
        r"Module 'raw' \(RawUninitialized\) still has uninitialized tensors \['weight'\] after its first call",
        fragments=("forward pre-hook must materialize",),
    ),
    ErrorCase(
        "model-is-lazy-module",
        lambda: (nn.LazyLinear(3), (torch.randn(2, 4),), {}),
        fxlazy.UnsupportedLazyModuleError,
        r"The model itself is a lazy module \(LazyLinear\)",
        fragments=("nn.Sequential(model)",),
    ),
    ErrorCase(
        "model-not-deep-copyable",
        lambda: (LockedModel(), (torch.randn(2, 4),), {}),
        fxlazy.ModelCopyError,
        r"Cannot copy module 'block\.1' \(ReLU\) .*cannot pickle '_thread\.lock' object",
        fragments=("pass inplace=True", "'lock' of the module itself (ReLU)"),
        cause=TypeError,
        # With inplace=True nothing is copied, so materialize succeeds.
        fails_before_changes=False,
    ),
    ErrorCase(
        "lazy-layer-not-deep-copyable",
        lambda: (LockedLazyModel(), (torch.randn(2, 4),), {}),
        fxlazy.ModelCopyError,
        r"Cannot copy module 'affine' \(LockedLazyAffine\) to the meta device",
        fragments=("'lock' of the module itself (LockedLazyAffine)", "__deepcopy__"),
        cause=TypeError,
    ),
]


@pytest.mark.parametrize("case", ERROR_CASES, ids=[case.case_id for case in ERROR_CASES])
def test_materialize_failure(case: ErrorCase):
    model, example, example_kwargs = case.build()
    before = snapshot_model(model)

    with pytest.raises(case.error, match=case.match) as raised:
        fxlazy.materialize(model, example, example_kwargs=example_kwargs)

    error = raised.value
    assert isinstance(error, fxlazy.FxLazyError)
    message = str(error)
    for fragment in case.fragments:
        assert fragment in message, fragment
    if case.cause is not None:
        assert isinstance(error.__cause__, case.cause), repr(error.__cause__)
    assert_model_unchanged(model, before)

    if case.fails_before_changes:
        model, example, example_kwargs = case.build()
        before = snapshot_model(model)
        with pytest.raises(case.error, match=case.match):
            fxlazy.materialize(model, example, example_kwargs=example_kwargs, inplace=True)
        assert_model_unchanged(model, before)


def test_uncopyable_model_materializes_inplace():
    model = LockedModel()
    static = fxlazy.materialize(model, torch.randn(2, 4), inplace=True)

    assert type(model.proj) is nn.Linear
    assert model.proj.in_features == 4
    assert static.get_submodule("proj") is model.proj
    assert static.get_submodule("block.1") is model.block[1]


@pytest.mark.xfail(
    strict=True,
    reason="Known limitation, listed in the README: with inplace=True an "
    "initialize_parameters that fails on real tensors leaves the lazy modules initialized "
    "before it materialized (proj becomes Linear).",
    raises=AssertionError,
)
def test_initialize_failure_inplace_keeps_model():
    model = CustomLayerModel(RealTensorFailingLazyAffine())
    before = snapshot_model(model)

    with pytest.raises(fxlazy.LazyInitializationError, match=r"'layer' \(RealTensorFailingLazyAffine\)"):
        fxlazy.materialize(model, torch.randn(2, 3), inplace=True)

    assert type(model.proj) is nn.LazyLinear
    assert_model_unchanged(model, before)


def test_uncopyable_container_attribute_not_copied():
    # Inlined containers become plain modules in the result, so their other attributes,
    # the lock included, are neither copied nor needed.
    model = LockedInside()
    static = fxlazy.materialize(model, torch.randn(2, 4))

    assert type(static.get_submodule("block.proj")) is nn.Linear
    assert not hasattr(static.get_submodule("block"), "lock")
    assert type(model.block.proj) is nn.LazyLinear


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bfloat16", "float16"])
def test_norm_accepts_low_precision_input(dtype):
    x = torch.randn(2, 3, 4, 4, dtype=dtype)
    reference, expected = eager_dry_run(nn.Sequential(nn.LazyBatchNorm2d()), (x,), seed=0)
    assert reference[0].weight.dtype == torch.float32

    static = fxlazy.materialize(nn.Sequential(nn.LazyBatchNorm2d()), x).eval()

    assert static.get_submodule("0").weight.dtype == torch.float32
    with torch.no_grad():
        assert torch.equal(static(x), expected)
