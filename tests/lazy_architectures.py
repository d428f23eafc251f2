"""Hypothesis strategies for random lazy architectures that an eager forward accepts.

An ``Architecture`` is plain data: an input shape and dtype, a list of layer specs, and a
plan of steps that ``PlannedNet.forward`` follows (apply layer i, add or concatenate an
earlier value, call an activation function, transpose, flatten). The generator tracks the
shape of every value with the output size formulas of the torch.nn documentation, so it
proposes only layers, skip connections and concatenations whose shapes fit. The property
tests still run the eager dry run first and reject an example it fails on. None of 1,500
random examples failed it when this was written.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
from hypothesis import strategies as st
from torch import nn
from torch.nn import functional as F
from torch.nn.modules.lazy import LazyModuleMixin

# Size limits that keep every tensor small, so that hundreds of examples run in under a minute.
MAX_BATCH = 3
MAX_WIDTH = 12
MAX_CAT_CHANNELS = 24
MAX_SPATIAL = {1: 12, 2: 12, 3: 6}
MAX_LAYERS = 6

LAZY_CONV = {1: nn.LazyConv1d, 2: nn.LazyConv2d, 3: nn.LazyConv3d}
LAZY_CONV_TRANSPOSE = {1: nn.LazyConvTranspose1d, 2: nn.LazyConvTranspose2d, 3: nn.LazyConvTranspose3d}
CONV = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}
MAX_POOL = {1: nn.MaxPool1d, 2: nn.MaxPool2d, 3: nn.MaxPool3d}
LAZY_BATCH_NORM = {1: nn.LazyBatchNorm1d, 2: nn.LazyBatchNorm2d, 3: nn.LazyBatchNorm3d}
LAZY_INSTANCE_NORM = {1: nn.LazyInstanceNorm1d, 2: nn.LazyInstanceNorm2d, 3: nn.LazyInstanceNorm3d}

# Input ranks each norm accepts. BatchNorm1d takes (N, C) and (N, C, L), and InstanceNormNd
# takes unbatched (C, *spatial) and batched (N, C, *spatial) input.
BATCH_NORM_RANKS = {1: (2, 3), 2: (4,), 3: (5,)}
INSTANCE_NORM_RANKS = {k: (k + 1, k + 2) for k in (1, 2, 3)}


@dataclass(frozen=True)
class LayerSpec:
    """A module class and the keyword arguments to build it with."""

    factory: type[nn.Module]
    kwargs: tuple[tuple[str, Any], ...] = ()

    @property
    def is_lazy(self) -> bool:
        return issubclass(self.factory, LazyModuleMixin)

    def build(self) -> nn.Module:
        return self.factory(**dict(self.kwargs))

    def __repr__(self) -> str:
        arguments = ", ".join(f"{name}={value!r}" for name, value in self.kwargs)
        return f"nn.{self.factory.__name__}({arguments})"


ELEMENTWISE = (
    LayerSpec(nn.ReLU),
    LayerSpec(nn.Tanh),
    LayerSpec(nn.Identity),
    LayerSpec(nn.Dropout),
    LayerSpec(nn.ReLU, (("inplace", True),)),
)


# Functions a plan step can call; torch.fx records them as call_function nodes.
FUNCTIONS = (torch.relu, torch.tanh, torch.sigmoid, F.gelu)


class PlanStep(NamedTuple):
    """One step of ``PlannedNet.forward``.

    ``values[0]`` is the input, and every step appends its result to ``values``.

    ``op`` is one of:

    - ``"layer"``: apply ``layers[index]``
    - ``"add"``: add ``values[index]``
    - ``"cat"``: concatenate ``values[index]`` after the current value along ``dim``
    - ``"function"``: call ``FUNCTIONS[index]``
    - ``"transpose"``: swap the last two dims, which leaves a non-contiguous tensor
    - ``"flatten"``: ``torch.flatten`` from ``dim`` on.
    """

    op: str
    index: int = 0
    dim: int = 0

    def __repr__(self) -> str:
        if self.op == "layer":
            return f"layers[{self.index}]"
        if self.op == "add":
            return f"+ values[{self.index}]"
        if self.op == "cat":
            return f"cat values[{self.index}] dim={self.dim}"
        if self.op == "function":
            return f"{FUNCTIONS[self.index].__name__}"
        if self.op == "transpose":
            return "transpose(-1, -2)"
        return f"flatten from dim {self.dim}"


class PlannedNet(nn.Module):
    """A model whose forward follows a plan. torch.fx unrolls the loop over the plan."""

    def __init__(self, layers: list[nn.Module], plan: list[PlanStep]) -> None:
        super().__init__()
        self.layers = nn.ModuleList(layers)
        self.plan = plan

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        values = [x]
        for step in self.plan:
            if step.op == "layer":
                x = self.layers[step.index](x)
            elif step.op == "add":
                x = x + values[step.index]
            elif step.op == "cat":
                x = torch.cat([x, values[step.index]], dim=step.dim)
            elif step.op == "function":
                x = FUNCTIONS[step.index](x)
            elif step.op == "transpose":
                x = x.transpose(-1, -2)
            else:
                x = torch.flatten(x, step.dim)
            values.append(x)
        return x


@dataclass(frozen=True)
class LazyCall:
    """A lazy layer's qualified name and spec, the shapes of its first call, and its number of calls."""

    name: str
    spec: LayerSpec
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    calls: int


@dataclass(frozen=True)
class Architecture:
    """A generated model and example input, with the shapes the generator predicts.

    Attributes:
        input_shape: shape of the single example input.
        dtype: dtype of the input and of every layer.
        layers: the layers, in the order of their first call.
        plan: the steps of forward; only layer steps in order when ``sequential``.
        sequential: build an ``nn.Sequential`` instead of a ``PlannedNet``.
        training: the model's mode when it is materialized.
        output_shape: the shape the generator predicts for the output.
        layer_shapes: input and output shape of each layer's first call.
    """

    input_shape: tuple[int, ...]
    dtype: torch.dtype
    layers: tuple[LayerSpec, ...]
    plan: tuple[PlanStep, ...]
    sequential: bool
    training: bool
    output_shape: tuple[int, ...]
    layer_shapes: tuple[tuple[tuple[int, ...], tuple[int, ...]], ...]

    def build_model(self) -> nn.Module:
        """Build the model under a fixed seed, so ordinary layers get equal values in every build."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            layers = [spec.build() for spec in self.layers]
        model = nn.Sequential(*layers) if self.sequential else PlannedNet(layers, list(self.plan))
        return model.train(self.training)

    def build_example(self) -> tuple[torch.Tensor]:
        generator = torch.Generator().manual_seed(1)
        return (torch.randn(self.input_shape, generator=generator, dtype=self.dtype),)

    def module_name(self, index: int) -> str:
        return str(index) if self.sequential else f"layers.{index}"

    def lazy_calls(self) -> list[LazyCall]:
        """List the lazy layers in the order of their first call, with their call counts."""
        counts: dict[int, int] = {}
        for step in self.plan:
            if step.op == "layer" and self.layers[step.index].is_lazy:
                counts[step.index] = counts.get(step.index, 0) + 1
        return [
            LazyCall(self.module_name(index), self.layers[index], *self.layer_shapes[index], calls)
            for index, calls in counts.items()
        ]


@dataclass(frozen=True)
class _Value:
    """A value in forward as the generator tracks it: a shape and its number of spatial dims.

    Spatial values are ``(N, C, *spatial)`` or unbatched ``(C, *spatial)``. Feature
    values (``spatial == 0``) are ``(N, features)``, or ``(features,)`` after an unbatched
    value is flattened.
    """

    shape: tuple[int, ...]
    spatial: int

    @property
    def channel_dim(self) -> int:
        return len(self.shape) - self.spatial - 1

    @property
    def channels(self) -> int:
        return self.shape[self.channel_dim]

    @property
    def sizes(self) -> tuple[int, ...]:
        return self.shape[self.channel_dim + 1:]

    def with_channels(self, channels: int, sizes: tuple[int, ...] | None = None) -> _Value:
        sizes = self.sizes if sizes is None else tuple(sizes)
        return _Value((*self.shape[:self.channel_dim], channels, *sizes), self.spatial)


def _factory_kwargs(dtype: torch.dtype) -> tuple[tuple[str, Any], ...]:
    return () if dtype == torch.float32 else (("dtype", dtype),)


# Output sizes per spatial dim, as the torch.nn documentation gives them.


def conv_output_size(size: int, kernel: int, stride: int, padding: int, dilation: int) -> int:
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


def conv_transpose_output_size(size: int, kernel: int, stride: int, padding: int, dilation: int, output_padding: int) -> int:
    return (size - 1) * stride - 2 * padding + dilation * (kernel - 1) + output_padding + 1


def _conv_options(size: int) -> list[tuple[int, int, int, int]]:
    """List the (kernel, stride, padding, dilation) choices that leave ``size`` at least 1."""
    return [
        (kernel, stride, padding, dilation)
        for kernel in range(1, 5)
        for stride in range(1, 4)
        for padding in range(3)
        for dilation in range(1, 3)
        if conv_output_size(size, kernel, stride, padding, dilation) >= 1
    ]


def _conv_transpose_options(size: int, limit: int) -> list[tuple[int, int, int, int, int]]:
    """List the (kernel, stride, padding, dilation, output_padding) choices with an output in [1, limit].

    torch requires output_padding to be smaller than the stride or the dilation.
    """
    return [
        (kernel, stride, padding, dilation, output_padding)
        for kernel in range(1, 4)
        for stride in range(1, 4)
        for padding in range(3)
        for dilation in range(1, 3)
        for output_padding in range(max(stride, dilation))
        if 1 <= conv_transpose_output_size(size, kernel, stride, padding, dilation, output_padding) <= limit
    ]


def _options_for_all(options_by_size: list[list[tuple]]) -> list[tuple]:
    """Keep the options, in order, that fit every spatial dim. The all-ones choice always fits."""
    first, *rest = options_by_size
    return [option for option in first if all(option in others for others in rest)]


_CONV_ARGUMENTS = ("kernel_size", "stride", "padding", "dilation")
_CONV_TRANSPOSE_ARGUMENTS = (*_CONV_ARGUMENTS, "output_padding")
# Defaults left out of the kwargs, so a failing example prints short.
_CONV_DEFAULTS = {"stride": 1, "padding": 0, "dilation": 1, "output_padding": 0}


@st.composite
def _conv_geometry(draw: st.DrawFn, sizes: tuple[int, ...], transposed: bool) -> tuple[list[tuple[str, Any]], tuple[int, ...]]:
    """Draw kernel, stride, padding, dilation (and output_padding) as ints, tuples or a padding string.

    Returns the keyword arguments and the output spatial sizes.
    """
    if transposed:
        limit = max(MAX_SPATIAL[len(sizes)], *sizes)
        per_size = [_conv_transpose_options(size, limit) for size in sizes]
        names, output_size = _CONV_TRANSPOSE_ARGUMENTS, conv_transpose_output_size
        styles = ["int", "per-dim"]
    else:
        per_size = [_conv_options(size) for size in sizes]
        names, output_size = _CONV_ARGUMENTS, conv_output_size
        styles = ["int", "per-dim", "same", "valid"]
    style = draw(st.sampled_from(styles))

    if style == "same":
        # padding="same" requires stride 1. torch pads unevenly for even effective kernels.
        kernel = draw(st.integers(1, 4))
        dilation = draw(st.integers(1, 2))
        kwargs = [("kernel_size", kernel), ("padding", "same")]
        if dilation != 1:
            kwargs.append(("dilation", dilation))
        return kwargs, sizes

    if style == "per-dim":
        chosen = [draw(st.sampled_from(options)) for options in per_size]
        kwargs = [(name, tuple(option[i] for option in chosen)) for i, name in enumerate(names)]
        out_sizes = tuple(output_size(size, *option) for size, option in zip(sizes, chosen))
    else:
        options = _options_for_all(per_size)
        if style == "valid":
            options = [option for option in options if option[2] == 0]
        option = draw(st.sampled_from(options))
        chosen = [option] * len(sizes)
        kwargs = [
            (name, value) for name, value in zip(names, option)
            if name == "kernel_size" or value != _CONV_DEFAULTS[name]
        ]
        if style == "valid":
            kwargs = [(name, value) for name, value in kwargs if name != "padding"] + [("padding", "valid")]
        out_sizes = tuple(output_size(size, *option) for size in sizes)

    paddings = [option[2] for option in chosen]
    if not transposed and style != "valid" and any(paddings):
        mode = draw(st.sampled_from(_padding_modes(sizes, paddings)))
        if mode != "zeros":
            kwargs.append(("padding_mode", mode))
    return kwargs, out_sizes


def _padding_modes(sizes: tuple[int, ...], paddings: list[int]) -> list[str]:
    """List the padding modes a conv accepts for these paddings (transposed convs accept only zeros)."""
    modes = ["zeros", "replicate"]
    # Reflect padding must be smaller than the dim, and circular padding at most the dim.
    if all(padding < size for padding, size in zip(paddings, sizes)):
        modes.append("reflect")
    if all(padding <= size for padding, size in zip(paddings, sizes)):
        modes.append("circular")
    return modes


def _divisors(number: int, limit: int) -> list[int]:
    return [d for d in range(1, min(number, limit) + 1) if number % d == 0]


# Drawers: each takes the current value and returns a layer spec and its output value.


@st.composite
def _draw_conv(draw: st.DrawFn, value: _Value, dtype: torch.dtype, kind: str) -> tuple[LayerSpec, _Value]:
    """Draw a lazy conv, lazy transposed conv or ordinary conv of the value's spatial rank."""
    groups = draw(st.sampled_from(_divisors(value.channels, MAX_WIDTH)))
    out_channels = groups * draw(st.integers(1, MAX_WIDTH // groups))
    geometry, out_sizes = draw(_conv_geometry(value.sizes, transposed=kind == "lazy-conv-transpose"))
    bias = draw(st.booleans())

    kwargs: list[tuple[str, Any]] = [("out_channels", out_channels), *geometry]
    if kind == "conv":
        factory = CONV[value.spatial]
        kwargs.insert(0, ("in_channels", value.channels))
    else:
        table = LAZY_CONV_TRANSPOSE if kind == "lazy-conv-transpose" else LAZY_CONV
        factory = table[value.spatial]
    if groups != 1:
        kwargs.append(("groups", groups))
    if not bias:
        kwargs.append(("bias", False))
    kwargs.extend(_factory_kwargs(dtype))
    return LayerSpec(factory, tuple(kwargs)), value.with_channels(out_channels, out_sizes)


@st.composite
def _draw_linear(draw: st.DrawFn, value: _Value, dtype: torch.dtype, lazy: bool) -> tuple[LayerSpec, _Value]:
    """Draw a LazyLinear or Linear. On a spatial value it maps the last spatial dim."""
    limit = MAX_WIDTH if value.spatial == 0 else MAX_SPATIAL[value.spatial]
    out_features = draw(st.integers(1, limit))
    kwargs: list[tuple[str, Any]] = [("out_features", out_features)]
    if not lazy:
        kwargs.insert(0, ("in_features", value.shape[-1]))
    if not draw(st.booleans()):
        kwargs.append(("bias", False))
    kwargs.extend(_factory_kwargs(dtype))
    factory = nn.LazyLinear if lazy else nn.Linear
    return LayerSpec(factory, tuple(kwargs)), _Value((*value.shape[:-1], out_features), value.spatial)


@st.composite
def _norm_kwargs(draw: st.DrawFn, affine: bool, track: bool, dtype: torch.dtype) -> tuple[tuple[str, Any], ...]:
    """Spell out affine and track_running_stats, and draw the bias of affine norms.

    Both flags are always written because the lazy norms of torch 2.13 default them to
    True, while InstanceNorm1d/2d/3d default them to False.
    """
    kwargs: list[tuple[str, Any]] = [("affine", affine), ("track_running_stats", track)]
    if affine and not draw(st.booleans()):
        kwargs.append(("bias", False))
    return (*kwargs, *_factory_kwargs(dtype))


@st.composite
def _draw_batch_norm(draw: st.DrawFn, value: _Value, dtype: torch.dtype, dims: int | None = None) -> tuple[LayerSpec, _Value]:
    """Draw a LazyBatchNorm that accepts the value's rank.

    Lazy norms read num_features from input dim 1 whatever the value's own channel dim.
    """
    rank = len(value.shape)
    if dims is None:
        dims = draw(st.sampled_from([k for k, ranks in BATCH_NORM_RANKS.items() if rank in ranks]))
    affine = draw(st.booleans())
    # Without running statistics, eval mode normalizes with batch statistics, which
    # torch rejects when each channel has a single value.
    single_value = math.prod(value.shape) == value.shape[1]
    track = True if single_value else draw(st.booleans())
    return LayerSpec(LAZY_BATCH_NORM[dims], draw(_norm_kwargs(affine, track, dtype))), value


def _instance_norm_options(value: _Value) -> dict[int, list[tuple[bool, bool]]]:
    """Map each LazyInstanceNormNd that accepts the value to its valid (affine, track_running_stats) pairs.

    The lazy class reads num_features from input dim 1 even for unbatched input, whose
    channels are dim 0. When the two differ, torch accepts only a norm without affine
    weights and running statistics, and warns. Without running statistics, eval mode
    normalizes with the input's own statistics, which needs more than one spatial element.
    """
    rank = len(value.shape)
    options = {}
    for dims, ranks in INSTANCE_NORM_RANKS.items():
        if rank not in ranks:
            continue
        unbatched = rank == dims + 1
        channels = value.shape[0] if unbatched else value.shape[1]
        spatial_elements = math.prod(value.shape[1:] if unbatched else value.shape[2:])
        pairs = [
            (affine, track)
            for affine in (False, True)
            for track in (False, True)
            if (channels == value.shape[1] or not (affine or track))
            and (track or spatial_elements > 1)
        ]
        if pairs:
            options[dims] = pairs
    return options


@st.composite
def _draw_instance_norm(draw: st.DrawFn, value: _Value, dtype: torch.dtype, dims: int | None = None) -> tuple[LayerSpec, _Value]:
    options = _instance_norm_options(value)
    if dims is None:
        dims = draw(st.sampled_from(sorted(options)))
    affine, track = draw(st.sampled_from(options[dims]))
    return LayerSpec(LAZY_INSTANCE_NORM[dims], draw(_norm_kwargs(affine, track, dtype))), value


@st.composite
def _draw_max_pool(draw: st.DrawFn, value: _Value) -> tuple[LayerSpec, _Value]:
    """Draw a MaxPool whose output keeps every spatial dim at least 1."""

    def pool_size(size: int, kernel: int, stride: int, padding: int) -> int:
        return (size + 2 * padding - kernel) // stride + 1

    # torch requires padding to be at most half the kernel size.
    options = [
        (kernel, stride, padding)
        for kernel in range(1, 4)
        for stride in (kernel, 1)
        for padding in range(kernel // 2 + 1)
        if all(pool_size(size, kernel, stride, padding) >= 1 for size in value.sizes)
    ]
    kernel, stride, padding = draw(st.sampled_from(options))
    kwargs: list[tuple[str, Any]] = [("kernel_size", kernel)]
    if stride != kernel:
        kwargs.append(("stride", stride))
    if padding:
        kwargs.append(("padding", padding))
    out_sizes = tuple(pool_size(size, kernel, stride, padding) for size in value.sizes)
    return LayerSpec(MAX_POOL[value.spatial], tuple(kwargs)), value.with_channels(value.channels, out_sizes)


def _flatten(value: _Value) -> tuple[LayerSpec, _Value]:
    """Flatten channels and spatial dims into features: (N, C, *S) to (N, F), or (C, *S) to (F,)."""
    start = value.channel_dim
    kwargs = () if start == 1 else (("start_dim", start),)
    shape = (*value.shape[:start], math.prod(value.shape[start:]))
    return LayerSpec(nn.Flatten, kwargs), _Value(shape, 0)


def _flatten_spatial(value: _Value) -> tuple[LayerSpec, _Value]:
    """Flatten the spatial dims into one: (N, C, H, W) to (N, C, H * W)."""
    start = value.channel_dim + 1
    shape = (*value.shape[:start], math.prod(value.sizes))
    return LayerSpec(nn.Flatten, (("start_dim", start),)), _Value(shape, 1)


class _Builder:
    """The layers, plan and values generated so far."""

    def __init__(self, value: _Value, dtype: torch.dtype) -> None:
        self.dtype = dtype
        self.layers: list[LayerSpec] = []
        self.layer_shapes: list[tuple[tuple[int, ...], tuple[int, ...]]] = []
        self.plan: list[PlanStep] = []
        self.values = [value]
        # For each layer index: the value it was first called on and the value it made.
        self.first_calls: list[tuple[_Value, _Value]] = []

    @property
    def current(self) -> _Value:
        return self.values[-1]

    def _layer_kinds(self) -> list[str]:
        """List the kinds of layer that fit the current value, lazy kinds twice to draw them more often.

        A full Flatten only comes before the LazyLinear head, so that most layers see
        spatial values.
        """
        value = self.current
        lazy_kinds = ["lazy-linear"]
        if value.spatial:
            lazy_kinds += ["lazy-conv", "lazy-conv-transpose"]
        if any(len(value.shape) in ranks for ranks in BATCH_NORM_RANKS.values()):
            lazy_kinds.append("lazy-batch-norm")
        if _instance_norm_options(value):
            lazy_kinds.append("lazy-instance-norm")
        kinds = [*lazy_kinds, *lazy_kinds, "elementwise", "function", "linear"]
        if value.spatial:
            kinds += ["max-pool", "conv", "transpose"]
        if value.spatial >= 2:
            kinds.append("flatten-spatial")
        if self._reusable_layers():
            kinds.append("reuse")
        return kinds

    def _reusable_layers(self) -> list[int]:
        """List the lazy layers first called on a value of the current shape, which fit a second call."""
        return [
            index for index, (first_input, _) in enumerate(self.first_calls)
            if self.layers[index].is_lazy and first_input == self.current
        ]

    def append_step(self, step: PlanStep, value: _Value) -> None:
        self.plan.append(step)
        self.values.append(value)

    def add_layer(self, spec: LayerSpec, output: _Value) -> None:
        index = len(self.layers)
        self.layers.append(spec)
        self.first_calls.append((self.current, output))
        self.layer_shapes.append((self.current.shape, output.shape))
        self.append_step(PlanStep("layer", index), output)

    def draw_layer(self, draw: st.DrawFn, featured: type[nn.Module] | None = None) -> None:
        """Draw a layer or a step that fits the current value, of the lazy class ``featured`` if given."""
        value, dtype = self.current, self.dtype
        dims = None
        if featured is None:
            kind = draw(st.sampled_from(self._layer_kinds()))
        else:
            kind, dims = FEATURED_KINDS[featured]
        if kind == "reuse":
            index = draw(st.sampled_from(self._reusable_layers()))
            self.append_step(PlanStep("layer", index), self.first_calls[index][1])
            return
        if kind == "function":
            self.append_step(PlanStep("function", draw(st.integers(0, len(FUNCTIONS) - 1))), value)
            return
        if kind == "transpose":
            # The spatial dims stay spatial, so a (N, C, L) value becomes (N, L, C) with L channels.
            shape = (*value.shape[:-2], value.shape[-1], value.shape[-2])
            self.append_step(PlanStep("transpose"), _Value(shape, value.spatial))
            return
        if kind in ("lazy-conv", "lazy-conv-transpose", "conv"):
            spec, output = draw(_draw_conv(value, dtype, kind))
        elif kind in ("lazy-linear", "linear"):
            spec, output = draw(_draw_linear(value, dtype, lazy=kind == "lazy-linear"))
        elif kind == "lazy-batch-norm":
            spec, output = draw(_draw_batch_norm(value, dtype, dims))
        elif kind == "lazy-instance-norm":
            spec, output = draw(_draw_instance_norm(value, dtype, dims))
        elif kind == "elementwise":
            spec, output = draw(st.sampled_from(ELEMENTWISE)), value
        elif kind == "max-pool":
            spec, output = draw(_draw_max_pool(value))
        else:
            spec, output = _flatten_spatial(value)
        self.add_layer(spec, output)

    def _merge_choices(self) -> list[PlanStep]:
        """List the add and cat steps whose earlier value fits the current one."""
        value = self.current
        choices = []
        for index, earlier in enumerate(self.values[:-1]):
            if earlier.shape == value.shape:
                choices.append(PlanStep("add", index))
            fits_cat = (
                earlier.spatial == value.spatial
                and len(earlier.shape) == len(value.shape)
                and earlier.shape[:value.channel_dim] == value.shape[:value.channel_dim]
                and earlier.sizes == value.sizes
                and earlier.channels + value.channels <= MAX_CAT_CHANNELS
            )
            if fits_cat:
                choices.append(PlanStep("cat", index, value.channel_dim))
        return choices

    def draw_merge(self, draw: st.DrawFn) -> None:
        """Draw an add or cat step, if any fits the current value."""
        choices = self._merge_choices()
        if not choices:
            return
        step = draw(st.sampled_from(choices))
        value = self.current
        if step.op == "add":
            self.append_step(step, value)
        else:
            channels = value.channels + self.values[step.index].channels
            self.append_step(step, value.with_channels(channels))


# Each lazy class of torch.nn, with the kind of layer the generator draws it as and its
# number of spatial dims (None for LazyLinear).
FEATURED_KINDS: dict[type[nn.Module], tuple[str, int | None]] = {
    nn.LazyLinear: ("lazy-linear", None),
    **{cls: ("lazy-conv", dims) for dims, cls in LAZY_CONV.items()},
    **{cls: ("lazy-conv-transpose", dims) for dims, cls in LAZY_CONV_TRANSPOSE.items()},
    **{cls: ("lazy-batch-norm", dims) for dims, cls in LAZY_BATCH_NORM.items()},
    **{cls: ("lazy-instance-norm", dims) for dims, cls in LAZY_INSTANCE_NORM.items()},
}

# Input layouts as (spatial dims, batched), batched first. Feature inputs are always batched.
LAYOUTS = [(1, True), (2, True), (3, True), (0, True), (1, False), (2, False), (3, False)]


def _accepts_layout(cls: type[nn.Module], spatial: int, batched: bool) -> bool:
    """Tell whether the lazy class accepts input of this layout, judged by its rank."""
    rank = spatial + 1 + batched
    kind, dims = FEATURED_KINDS[cls]
    if kind == "lazy-linear":
        return True
    if kind == "lazy-batch-norm":
        return rank in BATCH_NORM_RANKS[dims]
    if kind == "lazy-instance-norm":
        return rank in INSTANCE_NORM_RANKS[dims]
    return spatial == dims


@st.composite
def architectures(draw: st.DrawFn) -> Architecture:
    """Draw a lazy architecture and input shape whose eager forward is valid by construction.

    A featured lazy class, drawn first, is the first layer when the input fits it, so
    that every one of the 13 classes shows up in a few hundred examples.
    """
    dtype = draw(st.sampled_from([torch.float32, torch.float64]))
    featured = draw(st.sampled_from(list(FEATURED_KINDS)))
    spatial, batched = draw(st.sampled_from([layout for layout in LAYOUTS if _accepts_layout(featured, *layout)]))
    channels = draw(st.integers(1, MAX_WIDTH))
    sizes = tuple(draw(st.integers(1, MAX_SPATIAL[spatial])) for _ in range(spatial))
    batch = (draw(st.integers(1, MAX_BATCH)),) if batched else ()
    input_value = _Value((*batch, channels, *sizes), spatial)
    # An instance norm of a fitting rank may still reject the input (see _instance_norm_options).
    kind, dims = FEATURED_KINDS[featured]
    if kind == "lazy-instance-norm" and dims not in _instance_norm_options(input_value):
        featured = None

    builder = _Builder(input_value, dtype)
    layer_count = draw(st.integers(1, MAX_LAYERS))
    for position in range(layer_count):
        builder.draw_layer(draw, featured if position == 0 else None)
        if draw(st.booleans()):
            builder.draw_merge(draw)

    # A classifier head: flatten a spatial value with nn.Flatten or torch.flatten, then a LazyLinear.
    if layer_count <= MAX_LAYERS - 2 and draw(st.booleans()):
        if builder.current.spatial:
            spec, output = _flatten(builder.current)
            if draw(st.booleans()):
                builder.add_layer(spec, output)
            else:
                builder.append_step(PlanStep("flatten", dim=builder.current.channel_dim), output)
        builder.add_layer(*draw(_draw_linear(builder.current, dtype, lazy=True)))

    plain_stack = all(step == PlanStep("layer", i) for i, step in enumerate(builder.plan))
    sequential = plain_stack and draw(st.booleans())
    return Architecture(
        input_shape=input_value.shape,
        dtype=dtype,
        layers=tuple(builder.layers),
        plan=tuple(builder.plan),
        sequential=sequential,
        training=draw(st.booleans()),
        output_shape=builder.current.shape,
        layer_shapes=tuple(builder.layer_shapes),
    )
