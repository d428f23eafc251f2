"""Example models built from lazy layers, used by ``python -m fxlazy``, the tests and benchmarks.

Each model takes ``lazy=True`` (the default) to use lazy layers, or ``lazy=False`` to
build the same architecture from concrete layers with the widths written out, which is
what a user would write by hand. Both versions have the same qualified names, so their
state_dicts have the same keys.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = [
    "TransposedConvExample",
    "DCGANGenerator",
    "UNetDecoder",
    "ResNetClassifier",
    "UpsamplingDecoder",
]


def _conv_transpose2d(lazy: bool, in_channels: int, out_channels: int, **kwargs) -> nn.Module:
    if lazy:
        return nn.LazyConvTranspose2d(out_channels, **kwargs)
    return nn.ConvTranspose2d(in_channels, out_channels, **kwargs)


def _conv2d(lazy: bool, in_channels: int, out_channels: int, **kwargs) -> nn.Module:
    if lazy:
        return nn.LazyConv2d(out_channels, **kwargs)
    return nn.Conv2d(in_channels, out_channels, **kwargs)


def _batch_norm2d(lazy: bool, num_features: int) -> nn.Module:
    return nn.LazyBatchNorm2d() if lazy else nn.BatchNorm2d(num_features)


class TransposedConvExample(nn.Module):
    """One ``LazyConvTranspose2d(out_channels=32, kernel_size=3, stride=2)`` layer.

    Fed a ``(1, 64, 8, 8)`` input, it becomes ``ConvTranspose2d(64, 32, kernel_size=3,
    stride=2)`` with a ``(1, 32, 17, 17)`` output.
    """

    in_channels = 64

    def __init__(self, lazy: bool = True) -> None:
        super().__init__()
        self.up = _conv_transpose2d(lazy, self.in_channels, 32, kernel_size=3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(x)

    @staticmethod
    def example_input(batch: int = 1) -> torch.Tensor:
        """Return a random input of shape ``(batch, 64, 8, 8)``."""
        return torch.randn(batch, 64, 8, 8)


class DCGANGenerator(nn.Module):
    """The DCGAN generator: a latent vector upsampled to a ``3 x 64 x 64`` image.

    Args:
        latent: size of the latent vector; the input has shape ``(N, latent, 1, 1)``.
        width: channels of the last hidden layer; earlier layers use 8, 4 and 2 times it.
    """

    def __init__(self, latent: int = 100, width: int = 64, lazy: bool = True) -> None:
        super().__init__()
        self.latent = latent
        widths = [latent, width * 8, width * 4, width * 2, width]
        layers: list[nn.Module] = []
        for index, (in_channels, out_channels) in enumerate(zip(widths, widths[1:])):
            stride, padding = (1, 0) if index == 0 else (2, 1)
            layers += [
                _conv_transpose2d(lazy, in_channels, out_channels, kernel_size=4, stride=stride, padding=padding, bias=False),
                _batch_norm2d(lazy, out_channels),
                nn.ReLU(inplace=True),
            ]
        layers += [_conv_transpose2d(lazy, width, 3, kernel_size=4, stride=2, padding=1, bias=False), nn.Tanh()]
        self.main = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.main(z)

    def example_input(self, batch: int = 2) -> torch.Tensor:
        """Return a random latent batch of shape ``(batch, latent, 1, 1)``."""
        return torch.randn(batch, self.latent, 1, 1)


class _UpBlock(nn.Module):
    def __init__(self, in_channels: int, skip_channels: int, out_channels: int, lazy: bool) -> None:
        super().__init__()
        self.up = _conv_transpose2d(lazy, in_channels, out_channels, kernel_size=3, stride=2, padding=1)
        self.conv = _conv2d(lazy, out_channels + skip_channels, out_channels, kernel_size=3, padding=1, bias=False)
        self.norm = _batch_norm2d(lazy, out_channels)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        # A stride-2 transposed convolution can produce two sizes; output_size picks the skip's.
        x = self.up(x, output_size=skip.shape[-2:])
        x = torch.cat([x, skip], dim=1)
        return torch.relu(self.norm(self.conv(x)))


class UNetDecoder(nn.Module):
    """A U-Net decoder: three upsampling blocks joined to encoder features by ``torch.cat``.

    ``forward(bottleneck, skip1, skip2, skip3)`` takes the bottleneck and the encoder's
    skip features from deep to shallow. Odd skip sizes are handled by ``output_size=``.
    """

    bottleneck_channels = 256
    skip_channels = (128, 64, 32)

    def __init__(self, classes: int = 2, lazy: bool = True) -> None:
        super().__init__()
        channels = [self.bottleneck_channels, 128, 64, 32]
        self.blocks = nn.ModuleList(
            _UpBlock(channels[i], self.skip_channels[i], channels[i + 1], lazy) for i in range(3)
        )
        self.head = _conv2d(lazy, channels[-1], classes, kernel_size=1)

    def forward(self, bottleneck: torch.Tensor, skip1: torch.Tensor, skip2: torch.Tensor, skip3: torch.Tensor) -> torch.Tensor:
        x = bottleneck
        for block, skip in zip(self.blocks, (skip1, skip2, skip3)):
            x = block(x, skip)
        return self.head(x)

    @classmethod
    def example_inputs(cls, batch: int = 1, size: int = 9) -> tuple[torch.Tensor, ...]:
        """Return random inputs; ``size`` is the bottleneck's side, the skips are about 2, 4 and 8 times it.

        Each upsampling block can produce ``2 * side - 1`` or ``2 * side`` pixels; the skip
        sides alternate between the two, so both output sizes are exercised.
        """
        sides = [size]
        for index in range(3):
            sides.append(2 * sides[-1] - index % 2)
        bottleneck = torch.randn(batch, cls.bottleneck_channels, sides[0], sides[0])
        skips = tuple(torch.randn(batch, c, s, s) for c, s in zip(cls.skip_channels, sides[1:]))
        return (bottleneck, *skips)


class _ResidualBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, stride: int, lazy: bool) -> None:
        super().__init__()
        self.conv1 = _conv2d(lazy, in_channels, out_channels, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn1 = _batch_norm2d(lazy, out_channels)
        self.conv2 = _conv2d(lazy, out_channels, out_channels, kernel_size=3, padding=1, bias=False)
        self.bn2 = _batch_norm2d(lazy, out_channels)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                _conv2d(lazy, in_channels, out_channels, kernel_size=1, stride=stride, bias=False),
                _batch_norm2d(lazy, out_channels),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


class ResNetClassifier(nn.Module):
    """A small ResNet: a LazyConv2d stem, residual blocks with LazyBatchNorm2d, a LazyLinear head."""

    in_channels = 3

    def __init__(self, classes: int = 10, widths: tuple[int, ...] = (16, 32, 64), lazy: bool = True) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            _conv2d(lazy, self.in_channels, widths[0], kernel_size=3, padding=1, bias=False),
            _batch_norm2d(lazy, widths[0]),
            nn.ReLU(inplace=True),
        )
        blocks = []
        previous = widths[0]
        for index, width in enumerate(widths):
            blocks.append(_ResidualBlock(previous, width, 1 if index == 0 else 2, lazy))
            previous = width
        self.blocks = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.LazyLinear(classes) if lazy else nn.Linear(widths[-1], classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(self.stem(x))
        return self.head(torch.flatten(self.pool(x), 1))

    @classmethod
    def example_input(cls, batch: int = 2, size: int = 32) -> torch.Tensor:
        """Return a random image batch of shape ``(batch, 3, size, size)``."""
        return torch.randn(batch, cls.in_channels, size, size)


class UpsamplingDecoder(nn.Module):
    """A decoder from a ``4 x 4`` feature map up to ``size x size`` pixels.

    Each stage doubles the side with a stride-2 transposed convolution, then applies
    batch norm and ReLU, and halves the channels (at least 8). At ``size=1024`` and
    batch 8 an eager dry run needs about 1.2 GiB for the activations.

    Args:
        size: output side, a power of two of at least 8.
        channels: channels of the ``(N, channels, 4, 4)`` input.
    """

    def __init__(self, size: int = 256, channels: int = 256, lazy: bool = True) -> None:
        super().__init__()
        if size < 8 or size & (size - 1):
            raise ValueError(f"size must be a power of two of at least 8, got {size}")
        self.channels = channels
        stages: list[nn.Module] = []
        side, width = 4, channels
        while side < size:
            out_width = max(width // 2, 8)
            stages += [
                _conv_transpose2d(lazy, width, out_width, kernel_size=4, stride=2, padding=1, bias=False),
                _batch_norm2d(lazy, out_width),
                nn.ReLU(inplace=True),
            ]
            side, width = side * 2, out_width
        self.stages = nn.Sequential(*stages)
        self.to_rgb = _conv2d(lazy, width, 3, kernel_size=3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.to_rgb(self.stages(x)))

    def example_input(self, batch: int = 8) -> torch.Tensor:
        """Return a random input of shape ``(batch, channels, 4, 4)``."""
        return torch.randn(batch, self.channels, 4, 4)
