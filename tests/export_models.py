"""Small models for the export tests, each built to make one exporter path run."""

from __future__ import annotations

import torch
from torch import nn


class NoisyHead(nn.Module):
    """Adds fresh random noise in forward, so no artifact can match the static module."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.LazyLinear(4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.fc(x)
        return y + torch.randn_like(y)


def sum_tensors(*tensors: torch.Tensor) -> torch.Tensor:
    """Add the tensors; its ``*tensors`` signature is what torch.jit.script rejects."""
    total = tensors[0]
    for tensor in tensors[1:]:
        total = total + tensor
    return total


# Keeps the helper as one call_function node, so the static module calls it and
# torch.jit.script has to compile it.
torch.fx.wrap("sum_tensors")


class VariadicHelperNet(nn.Module):
    """Calls a helper with ``*args``: scripting fails, tracing works."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.LazyLinear(4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.fc(x)
        return sum_tensors(y, y)


class VariadicHelperWithCount(nn.Module):
    """Like VariadicHelperNet, but also returns a Python int, which tracing rejects."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.LazyLinear(4)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, int]:
        y = self.fc(x)
        return sum_tensors(y, y), 3


class SignFlip(nn.Module):
    """A static model whose forward branches on a tensor value.

    torch.export (and so the dynamo ONNX exporter) rejects the branch; torch.jit.trace
    records the branch taken for the example.
    """

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.fc = nn.Linear(3, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.fc(x)
        if y.sum() > 0:
            return -y
        return y


class TwoOutputs(nn.Module):
    """Returns a tuple, so outputs are named ``output[0]`` and ``output[1]``."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.LazyLinear(4)
        self.norm = nn.LazyBatchNorm1d()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y = self.fc(x)
        return y, self.norm(y)


class CastToFloat(nn.Module):
    """Casts its input to float32 first, so onnxruntime loads it even for bfloat16 input."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.LazyLinear(4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.float())
