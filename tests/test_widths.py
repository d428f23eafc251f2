"""Facts read from lazy modules: their uninitialized tensors' dtype, device and requires_grad."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from fxlazy.passes.widths import lazy_tensor_device, lazy_tensor_dtype, tensor_properties


@pytest.mark.parametrize(
    "tensor",
    [
        nn.UninitializedParameter(requires_grad=False, dtype=torch.float64),
        nn.UninitializedBuffer(dtype=torch.bfloat16, device="meta"),
        nn.Parameter(torch.zeros(2, dtype=torch.float16)),
        torch.zeros(3, dtype=torch.int64),
    ],
    ids=["uninitialized-parameter", "uninitialized-buffer", "parameter", "tensor"],
)
def test_tensor_properties_match_attributes(tensor):
    assert tensor_properties([tensor]) == [(tensor.dtype, tensor.device, tensor.requires_grad)]


def test_lazy_tensor_facts_of_lazy_layer():
    layer = nn.LazyConv2d(4, 3, dtype=torch.float64, device="meta")
    assert lazy_tensor_dtype(layer) == torch.float64
    assert lazy_tensor_device(layer) == torch.device("meta")


def test_lazy_tensor_facts_of_static_layer():
    layer = nn.Conv2d(3, 4, 3)
    assert lazy_tensor_dtype(layer) is None
    assert lazy_tensor_device(layer) is None
