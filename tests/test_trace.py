"""The tracing pass: lazy modules as call_module leaves, specialized inputs, user source lines."""

from __future__ import annotations

import inspect

import torch
import torch.fx
from torch import nn
from torch.nn import functional as F
from torch.nn.modules.lazy import LazyModuleMixin

import fxlazy
from assertions import source_line_of
from fixture_models import LazyChannelAffine
from fxlazy.passes.source import user_frame_of_node
from fxlazy.passes.trace import LazyLeafTracer, stack_traces_by_node, trace_with_lazy_leaves


class InnerBlock(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.seq = nn.Sequential(nn.LazyConv2d(4, 1), LazyChannelAffine())
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.seq(x))


class TraceNet(nn.Module):
    """Built-in and custom lazy modules inside custom and torch.nn containers."""

    def __init__(self) -> None:
        super().__init__()
        self.block = InnerBlock()
        self.norm = nn.LazyBatchNorm2d()
        self.head = nn.LazyLinear(3)
        self.idle = nn.Sequential(nn.Linear(2, 2))

    def forward(self, x: torch.Tensor, bias: torch.Tensor | None = None, scale: float = 1.0) -> torch.Tensor:
        x = self.norm(self.block(x))
        if bias is not None:
            x = x + bias
        return self.head(x.mean((2, 3))) * scale


class PoolToSize(nn.Module):
    """A forward whose non-tensor default is a tuple."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.LazyConv2d(4, 1)

    def forward(self, x: torch.Tensor, size: tuple[int, int] = (2, 2)) -> torch.Tensor:
        return F.adaptive_avg_pool2d(self.conv(x), size)


SPECIALIZED = {"bias": None, "scale": 2.0}

LAZY_NAMES = ["block.seq.0", "block.seq.1", "norm", "head"]


def _call_module_nodes(graph: torch.fx.Graph) -> dict[str, torch.fx.Node]:
    return {node.target: node for node in graph.nodes if node.op == "call_module"}


def test_graph_nodes_in_order():
    traced = trace_with_lazy_leaves(TraceNet(), SPECIALIZED)
    nodes = [(node.op, node.target if isinstance(node.target, str) else node.target.__name__) for node in traced.graph.nodes]
    assert nodes == [
        ("placeholder", "x"),
        ("call_module", "block.seq.0"),
        ("call_module", "block.seq.1"),
        ("call_module", "block.act"),
        ("call_module", "norm"),
        ("call_method", "mean"),
        ("call_module", "head"),
        ("call_function", "mul"),
        ("output", "output"),
    ]


def test_every_lazy_module_is_one_call():
    model = TraceNet()
    traced = trace_with_lazy_leaves(model, SPECIALIZED)
    lazy_in_model = [name for name, module in model.named_modules() if isinstance(module, LazyModuleMixin)]
    call_targets = [node.target for node in traced.graph.nodes if node.op == "call_module"]

    assert lazy_in_model == LAZY_NAMES
    for name in lazy_in_model:
        assert call_targets.count(name) == 1, name


def test_custom_lazy_layer_is_leaf():
    layer = LazyChannelAffine()
    # The default tracer traces into a user's module, so it would run this layer's
    # initialize_parameters on an fx Proxy.
    assert not torch.fx.Tracer().is_leaf_module(layer, "affine")
    assert LazyLeafTracer().is_leaf_module(layer, "affine")
    assert LazyLeafTracer().is_leaf_module(nn.LazyConv2d(4, 1), "conv")
    assert not LazyLeafTracer().is_leaf_module(nn.Sequential(), "seq")
    assert not LazyLeafTracer().is_leaf_module(InnerBlock(), "block")


def test_custom_lazy_layer_never_sees_proxy():
    model = TraceNet()
    trace_with_lazy_leaves(model, SPECIALIZED)
    assert model.block.seq[1].initialized_with == []
    assert isinstance(model.block.seq[1], LazyChannelAffine)


def test_traced_through_lists_inlined_containers():
    traced = trace_with_lazy_leaves(TraceNet(), SPECIALIZED)
    # The root, the custom block and the nn.Sequential inside it. The leaves and the
    # container that forward never calls are not listed.
    assert traced.traced_through == frozenset({"", "block", "block.seq"})


def test_specialized_placeholders_removed():
    model = TraceNet()
    raw = LazyLeafTracer().trace(model, concrete_args=SPECIALIZED)
    raw_placeholders = [node.target for node in raw.nodes if node.op == "placeholder"]
    raw_functions = {node.target for node in raw.nodes if node.op == "call_function"}
    # fx alone keeps a placeholder and a check for each specialized argument.
    assert raw_placeholders == ["x", "bias_1", "scale_1"]
    assert torch._assert in raw_functions

    traced = trace_with_lazy_leaves(model, SPECIALIZED)
    placeholders = [node.target for node in traced.graph.nodes if node.op == "placeholder"]
    functions = [node.target for node in traced.graph.nodes if node.op == "call_function"]
    assert placeholders == ["x"]
    assert torch._assert not in functions
    assert all(getattr(target, "__name__", "") != "_assert_is_none" for target in functions)
    traced.graph.lint()


def test_input_annotations_dropped():
    traced = trace_with_lazy_leaves(TraceNet(), SPECIALIZED)
    for node in traced.graph.nodes:
        if node.op in ("placeholder", "output"):
            assert node.type is None, node.name


def test_materialized_forward_takes_tensors_only():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 4, 4)
    static = fxlazy.materialize(TraceNet(), (x, None, 2.0)).eval()

    assert list(inspect.signature(static.forward).parameters) == ["x"]
    # The inlined containers are plain modules now, so the expected output chains the leaves.
    conv, affine, act = (static.get_submodule(f"block.{name}") for name in ("seq.0", "seq.1", "act"))
    with torch.no_grad():
        expected = static.head(static.norm(act(affine(conv(x)))).mean((2, 3))) * 2.0
        assert torch.equal(static(x), expected)


def test_tuple_default_baked_in():
    torch.manual_seed(0)
    x = torch.randn(1, 3, 5, 5)
    static = fxlazy.materialize(PoolToSize(), x)

    assert list(inspect.signature(static.forward).parameters) == ["x"]
    output = static(x)
    assert output.shape == (1, 4, 2, 2)


def test_stack_trace_points_at_user_code():
    traced = trace_with_lazy_leaves(TraceNet(), SPECIALIZED, record_stack_traces=True)
    calls = _call_module_nodes(traced.graph)

    head_line = source_line_of(TraceNet.forward, "return self.head(")
    assert f'File "{__file__}", line {head_line}, in forward' in calls["head"].stack_trace
    assert user_frame_of_node(calls["head"]) == (
        f"{__file__}:{head_line} in forward (`return self.head(x.mean((2, 3))) * scale`)"
    )
    # Inside nn.Sequential the innermost user frame is the custom block's forward.
    block_line = source_line_of(InnerBlock.forward, "return self.act(self.seq(x))")
    for target in ("block.seq.0", "block.seq.1", "block.act"):
        assert user_frame_of_node(calls[target]) == (
            f"{__file__}:{block_line} in forward (`return self.act(self.seq(x))`)"
        ), target


def test_stack_traces_off_by_default():
    traced = trace_with_lazy_leaves(TraceNet(), SPECIALIZED)
    assert all(node.stack_trace is None for node in traced.graph.nodes)


def test_stack_traces_by_node_names_match():
    model = TraceNet()
    traced = trace_with_lazy_leaves(model, SPECIALIZED)
    traces = stack_traces_by_node(model, SPECIALIZED)

    assert list(traces) == [node.name for node in traced.graph.nodes]
    norm_line = source_line_of(TraceNet.forward, "x = self.norm(self.block(x))")
    assert f'File "{__file__}", line {norm_line}, in forward' in traces["norm"]


class WritesOnSelf(nn.Module):
    """A forward that counts its calls and caches its input on the module."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.LazyLinear(3)
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        self.last_input = x
        return self.proj(x)


def test_trace_undoes_forward_side_effects():
    model = WritesOnSelf()
    fxlazy.materialize(model, torch.randn(2, 4))
    assert model.calls == 0
    assert not hasattr(model, "last_input")
