"""Shape formulas agree with real forward calls, and decline what they do not cover."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from fxlazy.passes.shape_formulas import function_output, module_output
from fxlazy.passes.twins import to_meta

MODULE_CASES = {
    "linear-2d": (lambda: nn.Linear(6, 4), (3, 6), {}),
    "linear-3d": (lambda: nn.Linear(6, 4, bias=False), (2, 5, 6), {}),
    "linear-1d": (lambda: nn.Linear(6, 4), (6,), {}),
    "conv1d-stride-dilation": (lambda: nn.Conv1d(3, 5, 3, stride=2, padding=2, dilation=2), (2, 3, 17), {}),
    "conv1d-unbatched": (lambda: nn.Conv1d(3, 5, 4), (3, 11), {}),
    "conv2d-groups": (lambda: nn.Conv2d(4, 8, (3, 2), stride=(2, 1), padding=(1, 0), groups=2), (2, 4, 9, 7), {}),
    "conv2d-same": (lambda: nn.Conv2d(3, 6, 5, padding="same", dilation=2), (1, 3, 10, 13), {}),
    "conv2d-valid": (lambda: nn.Conv2d(3, 6, 3, padding="valid"), (1, 3, 10, 13), {}),
    "conv2d-reflect": (lambda: nn.Conv2d(3, 6, 3, padding=1, padding_mode="reflect"), (1, 3, 8, 8), {}),
    "conv3d": (lambda: nn.Conv3d(2, 3, (1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1)), (1, 2, 4, 9, 9), {}),
    "conv-transpose1d": (lambda: nn.ConvTranspose1d(3, 2, 4, stride=3, padding=1, output_padding=2), (2, 3, 7), {}),
    "conv-transpose2d": (lambda: nn.ConvTranspose2d(64, 32, 3, stride=2), (1, 64, 8, 8), {}),
    "conv-transpose2d-groups": (lambda: nn.ConvTranspose2d(4, 6, 3, stride=2, padding=1, groups=2, dilation=2), (1, 4, 5, 6), {}),
    "conv-transpose2d-output-size": (lambda: nn.ConvTranspose2d(4, 2, 3, stride=2, padding=1), (1, 4, 5, 5), {"output_size": [10, 10]}),
    "conv-transpose2d-unbatched": (lambda: nn.ConvTranspose2d(4, 2, 3, stride=2), (4, 5, 5), {}),
    "conv-transpose3d": (lambda: nn.ConvTranspose3d(2, 2, 2, stride=2), (1, 2, 3, 3, 3), {}),
    "batch-norm1d-2d-input": (lambda: nn.BatchNorm1d(5), (4, 5), {}),
    "batch-norm1d-3d-input": (lambda: nn.BatchNorm1d(5), (4, 5, 7), {}),
    "batch-norm2d": (lambda: nn.BatchNorm2d(3), (2, 3, 4, 4), {}),
    "batch-norm3d": (lambda: nn.BatchNorm3d(3), (2, 3, 2, 4, 4), {}),
    "instance-norm1d-unbatched": (lambda: nn.InstanceNorm1d(3, affine=True), (3, 8), {}),
    "instance-norm2d": (lambda: nn.InstanceNorm2d(3), (2, 3, 4, 4), {}),
    "relu": (lambda: nn.ReLU(), (2, 3), {}),
    "relu-inplace": (lambda: nn.ReLU(inplace=True), (2, 3), {}),
    "dropout": (lambda: nn.Dropout(0.5), (2, 3, 4), {}),
    "gelu": (lambda: nn.GELU(), (5,), {}),
}


@pytest.mark.parametrize("name", sorted(MODULE_CASES))
def test_module_formula_matches_forward(name):
    build, shape, kwargs = MODULE_CASES[name]
    module = build().eval()
    x = torch.randn(shape)
    with torch.no_grad():
        expected = module(x.clone(), **kwargs)
        predicted = module_output(module, (to_meta(x),), kwargs)
    assert predicted is not None
    assert predicted.device.type == "meta"
    assert predicted.shape == expected.shape
    assert predicted.dtype == expected.dtype
    assert predicted.stride() == expected.stride()


def test_module_formula_keeps_requires_grad():
    module = nn.Conv2d(3, 4, 3)
    predicted = module_output(module, (to_meta(torch.randn(1, 3, 5, 5)),), {})
    assert predicted.requires_grad
    with torch.no_grad():
        predicted = module_output(module, (to_meta(torch.randn(1, 3, 5, 5)),), {})
    assert not predicted.requires_grad


def test_inplace_formula_returns_input():
    x = to_meta(torch.randn(2, 3))
    assert module_output(nn.ReLU(inplace=True), (x,), {}) is x


@pytest.mark.parametrize(
    ("lazy", "width", "shape", "expected"),
    [
        (nn.LazyConv2d(8, 3), 5, (2, 5, 9, 9), (2, 8, 7, 7)),
        (nn.LazyConvTranspose2d(32, 3, stride=2), 64, (1, 64, 8, 8), (1, 32, 17, 17)),
        (nn.LazyLinear(7), 4, (3, 2, 4), (3, 2, 7)),
        (nn.LazyBatchNorm2d(), 6, (2, 6, 3, 3), (2, 6, 3, 3)),
        (nn.LazyInstanceNorm1d(), 4, (2, 4, 9), (2, 4, 9)),
    ],
    ids=["conv2d", "conv-transpose2d", "linear", "batch-norm2d", "instance-norm1d"],
)
def test_lazy_module_formula_uses_width(lazy, width, shape, expected):
    predicted = module_output(lazy, (to_meta(torch.randn(shape)),), {}, width)
    assert predicted is not None
    assert tuple(predicted.shape) == expected


DECLINED = {
    "channels-mismatch": (nn.Conv2d(3, 4, 3), torch.randn(1, 5, 8, 8), {}),
    "too-few-dims": (nn.Conv2d(3, 4, 3), torch.randn(8, 8), {}),
    "kernel-larger-than-input": (nn.Conv2d(3, 4, 5), torch.randn(1, 3, 2, 2), {}),
    "features-mismatch": (nn.Linear(3, 4), torch.randn(2, 5), {}),
    "dtype-mismatch": (nn.Linear(3, 4), torch.randn(2, 3, dtype=torch.float64), {}),
    "integer-input": (nn.ReLU(), torch.ones(2, 3, dtype=torch.long), {}),
    "channels-last-input": (nn.Conv2d(3, 4, 3), torch.randn(1, 3, 8, 8).to(memory_format=torch.channels_last), {}),
    "transposed-input": (nn.Linear(3, 4), torch.randn(3, 2).t(), {}),
    "norm-wrong-dims": (nn.BatchNorm2d(3), torch.randn(2, 3, 4), {}),
    "norm-channels-mismatch": (nn.BatchNorm2d(3), torch.randn(2, 4, 4, 4), {}),
    "unknown-module": (nn.MaxPool2d(2), torch.randn(1, 3, 4, 4), {}),
    "unknown-keyword": (nn.Conv2d(3, 4, 3), torch.randn(1, 3, 8, 8), {"scale": 2}),
}


@pytest.mark.parametrize("name", sorted(DECLINED))
def test_module_formula_declines(name):
    module, x, kwargs = DECLINED[name]
    assert module_output(module, (to_meta(x),), kwargs) is None


def test_output_size_out_of_range_raises_torch_error():
    module = nn.ConvTranspose2d(4, 2, 3, stride=2, padding=1)
    x = to_meta(torch.randn(1, 4, 5, 5))
    with pytest.raises(ValueError, match="requested an output size of"):
        module_output(module, (x,), {"output_size": [12, 12]})


@pytest.mark.parametrize(
    ("target", "kwargs"),
    [(torch.relu, {}), (torch.tanh, {}), (F.relu, {"inplace": False}), (F.gelu, {}), ("sigmoid", {})],
    ids=["torch-relu", "torch-tanh", "functional-relu", "functional-gelu", "method-sigmoid"],
)
def test_function_formula_matches_call(target, kwargs):
    x = torch.randn(2, 3, 4)
    expected = getattr(x, target)(**kwargs) if isinstance(target, str) else target(x, **kwargs)
    predicted = function_output(target, (to_meta(x),), kwargs)
    assert predicted.shape == expected.shape
    assert predicted.dtype == expected.dtype


def test_function_formula_declines_other_calls():
    x = to_meta(torch.randn(2, 3))
    assert function_output(torch.cat, ([x, x],), {"dim": 1}) is None
    assert function_output(F.leaky_relu, (x, 0.2), {}) is None
    assert function_output("view", (x, 6), {}) is None
