"""Models shared by the tests, next to the bundled ones in ``fxlazy.examples``.

Each ``CASES`` entry builds a fresh lazy model and its example inputs. Models are built
under a fixed seed so that non-lazy layers have the same values in every copy.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn.modules.lazy import LazyModuleMixin
from torch.nn.parameter import UninitializedParameter

from fxlazy import examples


class ChannelAffine(nn.Module):
    """A per-channel scale and shift; the concrete class of ``LazyChannelAffine``."""

    def __init__(self, num_channels: int) -> None:
        super().__init__()
        self.num_channels = num_channels
        self.scale = nn.Parameter(torch.empty(num_channels))
        self.shift = nn.Parameter(torch.empty(num_channels))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.normal_(self.scale, mean=1.0, std=0.1)
        nn.init.uniform_(self.shift, -0.1, 0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        view = (1, -1) + (1,) * (x.dim() - 2)
        return x * self.scale.view(view) + self.shift.view(view)


class LazyChannelAffine(LazyModuleMixin, ChannelAffine):
    """A user's own lazy layer: infers ``num_channels`` from input dim 1.

    It records the type and device of what ``initialize_parameters`` received, so tests
    can check that it was a real tensor and never an fx Proxy.
    """

    cls_to_become = ChannelAffine

    def __init__(self) -> None:
        super().__init__(0)
        self.scale = UninitializedParameter()
        self.shift = UninitializedParameter()
        self.initialized_with: list[tuple[type, torch.device, tuple[int, ...]]] = []

    def reset_parameters(self) -> None:
        if not self.has_uninitialized_params() and self.num_channels != 0:
            super().reset_parameters()

    def initialize_parameters(self, x: torch.Tensor) -> None:
        self.initialized_with.append((type(x), x.device, tuple(x.shape)))
        if self.has_uninitialized_params():
            with torch.no_grad():
                self.num_channels = x.shape[1]
                self.scale.materialize((self.num_channels,))
                self.shift.materialize((self.num_channels,))
                self.reset_parameters()


class MixedNet(nn.Module):
    """Ordinary layers before, between and after lazy ones, with a custom lazy layer."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.lazy_conv = nn.LazyConv2d(16, 3, padding=1)
        self.affine = LazyChannelAffine()
        self.pool = nn.AdaptiveAvgPool2d(2)
        self.hidden = nn.Linear(64, 32)
        self.head = nn.LazyLinear(5)
        self.unused = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.stem(x))
        x = self.affine(self.lazy_conv(x))
        x = torch.flatten(self.pool(x), 1)
        return self.head(torch.relu(self.hidden(x)))


class ReportNet(nn.Module):
    """Four lazy classes, one of them custom, and a LazyLinear called twice."""

    def __init__(self) -> None:
        super().__init__()
        self.up = nn.LazyConvTranspose2d(32, 3, stride=2)
        self.norm = nn.LazyBatchNorm2d()
        self.affine = LazyChannelAffine()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.LazyLinear(32)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.affine(self.norm(self.up(x)))
        x = torch.flatten(self.pool(x), 1)
        return self.fc(torch.relu(self.fc(x)))


class Sequence1d(nn.Module):
    """1d convolutions, transposed convolutions and norms on ``(N, C, L)`` input."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.LazyConv1d(12, 5, stride=2, padding=2, dilation=1)
        self.bn = nn.LazyBatchNorm1d()
        self.up = nn.LazyConvTranspose1d(6, 4, stride=2, padding=1, groups=3)
        self.inorm = nn.LazyInstanceNorm1d(affine=True)
        self.inorm_plain = nn.LazyInstanceNorm1d(affine=False, track_running_stats=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn(self.conv(x)))
        return self.inorm_plain(self.inorm(self.up(x)))


class Volume3d(nn.Module):
    """3d convolutions, transposed convolutions and norms on ``(N, C, D, H, W)`` input."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.LazyConv3d(8, 3, padding=1, bias=False)
        self.bn = nn.LazyBatchNorm3d(momentum=0.2)
        self.up = nn.LazyConvTranspose3d(4, 2, stride=2, output_padding=0)
        self.inorm = nn.LazyInstanceNorm3d(affine=True, track_running_stats=False)
        self.inorm_stats = nn.LazyInstanceNorm3d(affine=False, track_running_stats=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn(self.conv(x)))
        return self.inorm_stats(self.inorm(self.up(x)))


class InstanceNorm2dNet(nn.Module):
    """LazyInstanceNorm2d with and without affine weights and running statistics."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.LazyConv2d(6, 3)
        self.affine = nn.LazyInstanceNorm2d(affine=True, track_running_stats=False)
        self.plain = nn.LazyInstanceNorm2d(affine=False, track_running_stats=False)
        self.tracked = nn.LazyInstanceNorm2d()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.tracked(self.plain(self.affine(self.conv(x))))


class MLP(nn.Module):
    """LazyLinear layers with LazyBatchNorm1d on ``(N, features)`` input."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.LazyLinear(32)
        self.bn1 = nn.LazyBatchNorm1d()
        self.fc2 = nn.LazyLinear(8, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.relu(self.bn1(self.fc1(x))))


class TiedLinear(nn.Module):
    """One LazyLinear called twice, with the same width each time."""

    def __init__(self) -> None:
        super().__init__()
        self.shared = nn.LazyLinear(6)
        self.mix = nn.Linear(6, 6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.shared(self.mix(self.shared(x)))


class KeywordNet(nn.Module):
    """A forward with an optional mask and a Python scalar."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.LazyLinear(4)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None, scale: float = 1.0) -> torch.Tensor:
        if mask is not None:
            x = x * mask
        return self.proj(x) * scale


class HookedLazyLinear(nn.Module):
    """A linear layer that initializes itself in a forward pre-hook, without LazyModuleMixin.

    This is how PyTorch Geometric's ``Linear(-1, out_channels)`` works: ``in_features``
    is -1 until the hook reads it from the first input and removes itself.
    """

    def __init__(self, out_features: int) -> None:
        super().__init__()
        self.in_features = -1
        self.out_features = out_features
        self.weight = UninitializedParameter()
        self.bias = nn.Parameter(torch.zeros(out_features))
        self._lazy_hook = self.register_forward_pre_hook(self._initialize)

    def _initialize(self, module: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
        self.in_features = args[0].shape[-1]
        with torch.no_grad():
            self.weight.materialize((self.out_features, self.in_features))
            nn.init.kaiming_uniform_(self.weight, a=5**0.5)
        self._lazy_hook.remove()
        del self._lazy_hook

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.linear(x, self.weight, self.bias)


class HookedNet(nn.Module):
    """A hook-initialized layer between built-in lazy layers."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.LazyConv1d(4, 3)
        self.hooked = HookedLazyLinear(5)
        self.head = nn.LazyLinear(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.hooked(self.conv(x))))


class LazyBilinear(LazyModuleMixin, nn.Module):
    """A user's lazy layer that infers two widths, one from an input passed by keyword.

    With ``cls_to_become = None`` it keeps its class after initialization.
    """

    cls_to_become = None

    def __init__(self, out_features: int) -> None:
        super().__init__()
        self.out_features = out_features
        self.left_features = 0
        self.right_features = 0
        self.weight = UninitializedParameter()

    def initialize_parameters(self, x: torch.Tensor, *, context: torch.Tensor) -> None:
        self.left_features = x.shape[-1]
        self.right_features = context.shape[-1]
        with torch.no_grad():
            self.weight.materialize((self.out_features, self.left_features, self.right_features))
            nn.init.normal_(self.weight, std=0.1)

    def forward(self, x: torch.Tensor, *, context: torch.Tensor) -> torch.Tensor:
        return torch.einsum("bi,oij,bj->bo", x, self.weight, context)


class BilinearNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.encode = nn.LazyLinear(6)
        self.bilinear = LazyBilinear(3)

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        return self.bilinear(torch.tanh(self.encode(x)), context=context)


@dataclass(frozen=True)
class Case:
    """A lazy test model and the example inputs to materialize it with."""

    build_model: Callable[[], nn.Module]
    build_example: Callable[[], tuple[Any, ...]]

    def build(self, seed: int = 0) -> tuple[nn.Module, tuple[Any, ...]]:
        """Build the model and its example under ``seed``, so every build is identical."""
        torch.manual_seed(seed)
        model = self.build_model()
        return model, self.build_example()


def _single(factory: Callable[[], torch.Tensor]) -> Callable[[], tuple[torch.Tensor]]:
    return lambda: (factory(),)


CASES: dict[str, Case] = {
    "transposed-conv": Case(examples.TransposedConvExample, _single(examples.TransposedConvExample.example_input)),
    "dcgan": Case(lambda: examples.DCGANGenerator(latent=16, width=8), _single(lambda: torch.randn(2, 16, 1, 1))),
    "unet": Case(examples.UNetDecoder, lambda: examples.UNetDecoder.example_inputs(batch=2, size=5)),
    "resnet": Case(examples.ResNetClassifier, _single(lambda: examples.ResNetClassifier.example_input(batch=2, size=16))),
    "decoder": Case(lambda: examples.UpsamplingDecoder(size=32, channels=32), _single(lambda: torch.randn(2, 32, 4, 4))),
    "mixed": Case(MixedNet, _single(lambda: torch.randn(2, 3, 8, 8))),
    "sequence-1d": Case(Sequence1d, _single(lambda: torch.randn(2, 3, 20))),
    "volume-3d": Case(Volume3d, _single(lambda: torch.randn(2, 2, 4, 6, 6))),
    "instance-norm-2d": Case(InstanceNorm2dNet, _single(lambda: torch.randn(2, 3, 9, 9))),
    "mlp": Case(MLP, _single(lambda: torch.randn(4, 10))),
    "tied-linear": Case(TiedLinear, _single(lambda: torch.randn(3, 6))),
    "hook-initialized": Case(HookedNet, _single(lambda: torch.randn(2, 3, 9))),
    "keyword-custom-layer": Case(BilinearNet, lambda: (torch.randn(2, 4), torch.randn(2, 5))),
    "custom-layer": Case(lambda: nn.Sequential(nn.LazyConv2d(4, 1), LazyChannelAffine()), _single(lambda: torch.randn(2, 3, 5, 5))),
}
