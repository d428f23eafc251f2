"""Models that bench_materialize.py measures, each as a lazy and a static twin.

``build(lazy=True)`` returns the model with lazy layers and ``build(lazy=False)`` the same
architecture from concrete layers with the widths written out, so both have the same
qualified names and parameter shapes. Every model's forward returns one tensor.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from fxlazy.examples import ResNetClassifier, UpsamplingDecoder

# The wide MLP: 24 blocks of Linear(8192, 8192) and ReLU, about 6 GiB of float32 weights.
MLP_WIDTH = 8192
MLP_BLOCKS = 24
MLP_BATCH = 64

# The deep chain of 1x1 convolutions that stresses the per-node cost of tracing.
TINY_LAYERS = 2000
TINY_CHANNELS = 8
TINY_SIDE = 16

DECODER_BATCH = 8
RESNET_BATCH = 8


@dataclass(frozen=True)
class BenchModel:
    """One benchmark model with its example input and default repeat counts."""

    name: str
    description: str
    build: Callable[[bool], nn.Module]
    make_example: Callable[[], torch.Tensor]
    # Timed round-robin rounds of the timing stage, after one warm-up round.
    repeats: int
    # Timed rounds of the forward stage, after one warm-up call per module.
    forward_repeats: int


def build_decoder(size: int, channels: int) -> Callable[[bool], nn.Module]:
    def build(lazy: bool) -> nn.Module:
        return UpsamplingDecoder(size, channels=channels, lazy=lazy)

    return build


def make_decoder_example(size: int, channels: int) -> Callable[[], torch.Tensor]:
    def make_example() -> torch.Tensor:
        return UpsamplingDecoder(size, channels=channels).example_input(batch=DECODER_BATCH)

    return make_example


def decoder_model(name: str, size: int, channels: int, repeats: int) -> BenchModel:
    """Return the benchmark entry of an UpsamplingDecoder with ``size`` output side and ``channels`` input channels."""
    return BenchModel(
        name,
        f"UpsamplingDecoder({size}, channels={channels}), batch {DECODER_BATCH}",
        build_decoder(size, channels),
        make_decoder_example(size, channels),
        repeats=repeats,
        forward_repeats=20,
    )


def build_wide_mlp(lazy: bool) -> nn.Module:
    layers: list[nn.Module] = []
    for _ in range(MLP_BLOCKS):
        linear = nn.LazyLinear(MLP_WIDTH) if lazy else nn.Linear(MLP_WIDTH, MLP_WIDTH)
        layers += [linear, nn.ReLU()]
    return nn.Sequential(*layers)


def make_wide_mlp_example() -> torch.Tensor:
    return torch.randn(MLP_BATCH, MLP_WIDTH)


def build_tiny_chain(lazy: bool) -> nn.Module:
    layers = [
        nn.LazyConv2d(TINY_CHANNELS, kernel_size=1) if lazy else nn.Conv2d(TINY_CHANNELS, TINY_CHANNELS, kernel_size=1)
        for _ in range(TINY_LAYERS)
    ]
    return nn.Sequential(*layers)


def make_tiny_chain_example() -> torch.Tensor:
    return torch.randn(1, TINY_CHANNELS, TINY_SIDE, TINY_SIDE)


def build_resnet(lazy: bool) -> nn.Module:
    return ResNetClassifier(lazy=lazy)


def make_resnet_example() -> torch.Tensor:
    return ResNetClassifier.example_input(batch=RESNET_BATCH)


MODELS: dict[str, BenchModel] = {
    model.name: model
    for model in (
        decoder_model("decoder-256", 256, 512, repeats=30),
        # An eager dry run of this model takes seconds, and each round runs three.
        decoder_model("decoder-1024", 1024, 512, repeats=15),
        decoder_model("decoder-256-c256", 256, 256, repeats=30),
        BenchModel(
            "mlp-wide",
            f"{MLP_BLOCKS} x (Linear({MLP_WIDTH}, {MLP_WIDTH}), ReLU), batch {MLP_BATCH}",
            build_wide_mlp,
            make_wide_mlp_example,
            # Each call allocates and initializes about 6 GiB of weights, and one forward is
            # about 2 * 64 * 8192 * 8192 * 24 = 206 GFLOP.
            repeats=3,
            forward_repeats=5,
        ),
        BenchModel(
            "tiny-2000",
            f"{TINY_LAYERS} x Conv2d({TINY_CHANNELS}, {TINY_CHANNELS}, 1), "
            f"input (1, {TINY_CHANNELS}, {TINY_SIDE}, {TINY_SIDE})",
            build_tiny_chain,
            make_tiny_chain_example,
            repeats=10,
            forward_repeats=20,
        ),
        BenchModel(
            "resnet",
            f"ResNetClassifier(), batch {RESNET_BATCH}",
            build_resnet,
            make_resnet_example,
            repeats=30,
            forward_repeats=20,
        ),
    )
}
