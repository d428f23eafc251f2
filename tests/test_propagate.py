"""The shape propagation pass: tensor_meta, lazy call records, and no side effects."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest
import torch
from torch import nn
from torch.nn.parameter import is_lazy

import fxlazy
from assertions import assert_model_unchanged, assert_state_dicts_equal, eager_dry_run, snapshot_model
from fixture_models import LazyChannelAffine, TiedLinear
from fxlazy.passes.propagate import LazyShapeProp
from fxlazy.passes.records import LAZY_CALL_KEY, TENSOR_META_KEY, LazyCallRecord, TensorSpec
from fxlazy.passes.trace import trace_with_lazy_leaves


class PropagationNet(nn.Module):
    """A plain conv, three built-in lazy classes, a custom lazy layer and a non-tensor node."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 3, 1)
        self.conv = nn.LazyConv2d(6, 3, padding=1)
        self.norm = nn.LazyBatchNorm2d()
        self.affine = LazyChannelAffine()
        self.head = nn.LazyLinear(5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.affine(self.norm(self.conv(self.stem(x))))
        pooled = x.mean((2, 3))
        return self.head(pooled) / pooled.size(1)


class LazyNoisyAffine(LazyChannelAffine):
    """A custom lazy layer whose initialize_parameters draws from the global CPU generator."""

    def reset_parameters(self) -> None:
        pass

    def initialize_parameters(self, x: torch.Tensor) -> None:
        if self.has_uninitialized_params():
            self.num_channels = x.shape[1]
            self.scale.materialize((self.num_channels,))
            self.shift.materialize((self.num_channels,))
            with torch.no_grad():
                # torch.randn draws on the CPU whatever device x is on.
                self.scale.copy_(1 + 0.1 * torch.randn(self.num_channels))
                self.shift.copy_(torch.rand(self.num_channels))


class NoisyNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.LazyConv2d(6, 1)
        self.noisy = LazyNoisyAffine()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.noisy(self.conv(x))


class ReadsLazyWeightAfterCall(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.LazyLinear(3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x) + self.proj.weight.sum()


def _propagate(model: nn.Module, *inputs: torch.Tensor) -> tuple[torch.fx.Graph, LazyShapeProp, Any]:
    traced = trace_with_lazy_leaves(model, {})
    propagation = LazyShapeProp(model, traced.graph)
    output = propagation.propagate(*inputs)
    return traced.graph, propagation, output


def _nodes_by_name(graph: torch.fx.Graph) -> dict[str, torch.fx.Node]:
    return {node.name: node for node in graph.nodes}


def test_tensor_meta_on_tensor_nodes():
    graph, _, output = _propagate(PropagationNet(), torch.randn(2, 3, 4, 4))
    nodes = _nodes_by_name(graph)
    expected_shapes = {
        "x": (2, 3, 4, 4),
        "stem": (2, 3, 4, 4),
        "conv": (2, 6, 4, 4),
        "norm": (2, 6, 4, 4),
        "affine": (2, 6, 4, 4),
        "mean": (2, 6),
        "head": (2, 5),
        "truediv": (2, 5),
        "output": (2, 5),
    }

    assert set(nodes) == {*expected_shapes, "size"}
    for name, shape in expected_shapes.items():
        meta = nodes[name].meta[TENSOR_META_KEY]
        assert tuple(meta.shape) == shape, name
        assert meta.dtype == torch.float32, name
    # pooled.size(1) produces an int, so its node has no tensor_meta.
    assert TENSOR_META_KEY not in nodes["size"].meta
    assert output.device.type == "meta"
    assert output.shape == (2, 5)


def test_lazy_call_records():
    graph, _, _ = _propagate(PropagationNet(), torch.randn(2, 3, 4, 4))
    records = {node.name: node.meta.get(LAZY_CALL_KEY) for node in graph.nodes}

    assert records["conv"] == LazyCallRecord(
        "conv", "LazyConv2d", "Conv2d", {"in_channels": 3}, "input dim 1", ("out_channels", 6)
    )
    assert records["norm"] == LazyCallRecord(
        "norm", "LazyBatchNorm2d", "BatchNorm2d", {"num_features": 6}, "input dim 1", ("num_features", 6)
    )
    assert records["affine"] == LazyCallRecord(
        "affine", "LazyChannelAffine", "ChannelAffine", {"num_channels": 6}, "initialize_parameters", None
    )
    assert records["head"] == LazyCallRecord(
        "head", "LazyLinear", "Linear", {"in_features": 6}, "last input dim", ("out_features", 5)
    )
    for name in ("x", "stem", "mean", "size", "truediv", "output"):
        assert records[name] is None, name


def test_first_calls_in_execution_order():
    _, propagation, _ = _propagate(PropagationNet(), torch.randn(2, 3, 4, 4))
    calls = [(spec.module, width) for spec, width in propagation.first_calls]

    assert calls == [("conv", 3), ("norm", 6), ("affine", None), ("head", 6)]
    first_spec = propagation.first_calls[0][0]
    # The input comes out of stem, whose parameters require grad.
    assert first_spec.args == (TensorSpec((2, 3, 4, 4), torch.float32, True),)
    assert first_spec.kwargs == {}
    head_spec = propagation.first_calls[3][0]
    assert head_spec.args[0].shape == (2, 6)


@pytest.mark.parametrize(
    ("layer", "input_shape", "output_shape"),
    [
        (nn.LazyConv1d(4, 3), (3, 8), (4, 6)),
        (nn.LazyConv2d(4, 3), (3, 6, 6), (4, 4, 4)),
        (nn.LazyConvTranspose2d(4, 3), (3, 5, 5), (4, 7, 7)),
    ],
    ids=["conv1d", "conv2d", "conv-transpose2d"],
)
def test_unbatched_conv_record(layer, input_shape, output_shape):
    graph, _, _ = _propagate(nn.Sequential(layer), torch.randn(*input_shape))
    node = _nodes_by_name(graph)["_0"]
    record = node.meta[LAZY_CALL_KEY]

    assert record.source == "input dim 0 (unbatched)"
    assert record.inferred == {"in_channels": 3}
    assert record.output == ("out_channels", 4)
    assert tuple(node.meta[TENSOR_META_KEY].shape) == output_shape


def test_second_call_record():
    graph, propagation, _ = _propagate(TiedLinear(), torch.randn(3, 6))
    nodes = _nodes_by_name(graph)
    first = nodes["shared"].meta[LAZY_CALL_KEY]
    second = nodes["shared_1"].meta[LAZY_CALL_KEY]

    assert first.call_index == 0
    assert second.call_index == 1
    assert first.inferred == second.inferred == {"in_features": 6}
    assert [spec.module for spec, _ in propagation.first_calls] == ["shared"]


def test_modules_of_graph_unchanged():
    torch.manual_seed(0)
    model = PropagationNet()
    before = snapshot_model(model)
    _propagate(model, torch.randn(2, 3, 4, 4))

    assert_model_unchanged(model, before)
    assert type(model.conv) is nn.LazyConv2d
    assert type(model.affine) is LazyChannelAffine
    assert is_lazy(model.conv.weight)
    assert is_lazy(model.norm.running_mean)
    assert is_lazy(model.affine.scale)
    assert is_lazy(model.head.weight)
    assert model.stem.weight.device.type == "cpu"
    # Only the custom layer's meta twin was initialized.
    assert model.affine.initialized_with == []


def test_global_rng_unchanged():
    x = torch.randn(2, 3, 4, 4)
    model = PropagationNet()
    before = torch.get_rng_state()
    _propagate(model, x)
    assert torch.equal(torch.get_rng_state(), before)


def test_custom_layer_draws_outside_propagation():
    # The layer does draw from the global generator when it initializes.
    before = torch.get_rng_state()
    LazyNoisyAffine().initialize_parameters(torch.zeros(2, 6, 4, 4))
    assert not torch.equal(torch.get_rng_state(), before)

    x = torch.randn(2, 3, 4, 4)
    model = NoisyNet()
    before = torch.get_rng_state()
    graph, _, _ = _propagate(model, x)

    assert torch.equal(torch.get_rng_state(), before)
    assert _nodes_by_name(graph)["noisy"].meta[LAZY_CALL_KEY].inferred == {"num_channels": 6}


def test_custom_layer_draws_once_in_materialize():
    x = torch.randn(2, 3, 4, 4)
    torch.manual_seed(5)
    static = fxlazy.materialize(NoisyNet(), x)
    after_materialize = torch.get_rng_state()

    reference, _ = eager_dry_run(NoisyNet(), (x,), seed=5)
    after_dry_run = torch.get_rng_state()

    assert torch.equal(after_materialize, after_dry_run)
    assert_state_dicts_equal(static.state_dict(), reference.state_dict())


def test_lazy_weight_read_after_first_call():
    x = torch.randn(2, 4)
    torch.manual_seed(1)
    static = fxlazy.materialize(ReadsLazyWeightAfterCall(), x).eval()
    _, expected = eager_dry_run(ReadsLazyWeightAfterCall(), (x,), seed=1)

    with torch.no_grad():
        assert torch.equal(static(x), expected)


@pytest.mark.parametrize(
    "build",
    [
        lambda: torch.empty(2, 3, 4, 5),
        lambda: torch.empty(2, 3, 4, 5).to(memory_format=torch.channels_last),
        lambda: torch.empty(2, 3, 4, 5, 6).to(memory_format=torch.channels_last_3d),
        lambda: torch.empty(2, 1, 4, 1),
        lambda: torch.empty(4, 6).t(),
        lambda: torch.empty(3, 8)[:, ::2],
        lambda: torch.empty(0, 3),
        lambda: torch.empty(()),
        lambda: torch.empty(5, dtype=torch.float16, requires_grad=True),
    ],
    ids=["contiguous", "channels-last", "channels-last-3d", "size-one-dims", "transposed", "strided", "empty", "scalar", "half-requires-grad"],
)
def test_tensor_metadata_matches_shape_prop(build):
    from torch.fx.passes.shape_prop import _extract_tensor_metadata

    from fxlazy.passes.records import tensor_metadata
    from fxlazy.passes.twins import to_meta

    tensor = to_meta(build())
    assert tensor_metadata(tensor) == _extract_tensor_metadata(tensor)


# Models whose first meta calls of add, cat or adaptive pooling imported sympy and torch's
# compiler modules (more than a second) before those calls had shape formulas.
COLD_START_SCRIPT = """
import sys
import torch
import fxlazy
from fxlazy import examples
before = set(sys.modules)
fxlazy.materialize(examples.ResNetClassifier(lazy=True), examples.ResNetClassifier.example_input())
fxlazy.materialize(examples.UNetDecoder(lazy=True), examples.UNetDecoder.example_inputs())
fxlazy.materialize(examples.UpsamplingDecoder(64, lazy=True), examples.UpsamplingDecoder(64).example_input())
heavy = ("sympy", "torch._dynamo", "torch._inductor", "torch._prims_common", "torch._decomp")
print(sorted(name for name in set(sys.modules) - before if name.startswith(heavy)))
"""


def test_first_calls_import_no_compiler_modules():
    completed = subprocess.run([sys.executable, "-c", COLD_START_SCRIPT], capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.strip().splitlines()[-1] == "[]"


class _InPlaceAfterLazy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.LazyConv2d(4, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        y.add_(1.0)
        y.mul_(y)
        return y.clamp_(0.0, 2.0)


def test_in_place_calls_after_lazy_layer():
    x = torch.randn(2, 3, 5, 5)
    model = _InPlaceAfterLazy()
    before = snapshot_model(model)
    static = fxlazy.materialize(model, x, seed=3)
    reference, expected = eager_dry_run(_InPlaceAfterLazy(), (x,), seed=3)

    assert_model_unchanged(model, before)
    assert_state_dicts_equal(static.state_dict(), reference.state_dict())
    assert torch.equal(static(x), expected)
    output = next(iter(static.graph.find_nodes(op="output")))
    assert output.meta[TENSOR_META_KEY].requires_grad is True

