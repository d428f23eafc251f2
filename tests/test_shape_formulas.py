"""Shape formulas agree with real forward calls, and decline what they do not cover."""

from __future__ import annotations

import operator

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
    "max-pool2d": (lambda: nn.MaxPool2d(3, stride=2, padding=1), (2, 3, 9, 8), {}),
    "max-pool1d-dilation": (lambda: nn.MaxPool1d(2, dilation=2), (2, 3, 11), {}),
    "avg-pool3d": (lambda: nn.AvgPool3d(2), (1, 2, 4, 6, 5), {}),
    "avg-pool2d-unbatched": (lambda: nn.AvgPool2d(3, stride=1, padding=1), (3, 6, 6), {}),
    "adaptive-avg-pool2d": (lambda: nn.AdaptiveAvgPool2d(1), (2, 8, 5, 7), {}),
    "adaptive-avg-pool2d-none": (lambda: nn.AdaptiveAvgPool2d((3, None)), (2, 8, 5, 7), {}),
    "adaptive-max-pool1d": (lambda: nn.AdaptiveMaxPool1d(4), (2, 3, 9), {}),
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
    "unknown-module": (nn.Upsample(scale_factor=2), torch.randn(1, 3, 4, 4), {}),
    "pool-ceil-mode": (nn.MaxPool2d(2, ceil_mode=True), torch.randn(1, 3, 5, 5), {}),
    "pool-return-indices": (nn.MaxPool2d(2, return_indices=True), torch.randn(1, 3, 4, 4), {}),
    "pool-input-smaller-than-kernel": (nn.AvgPool3d(3, padding=1), torch.randn(1, 2, 1, 1, 1), {}),
    "adaptive-pool-return-indices": (nn.AdaptiveMaxPool2d(2, return_indices=True), torch.randn(1, 3, 4, 4), {}),
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
    assert function_output(F.leaky_relu, (x, 0.2), {}) is None
    assert function_output("view", (x, 6), {}) is None


def _meta_arguments(values: tuple) -> tuple:
    """Return ``values`` with every tensor, also inside a list, replaced by its meta copy."""
    converted = []
    for value in values:
        if isinstance(value, list):
            value = [to_meta(item) for item in value]
        elif isinstance(value, torch.Tensor):
            value = to_meta(value)
        converted.append(value)
    return tuple(converted)


# Residual additions, scaling and skip concatenation: (target, arguments, keyword arguments).
COMBINING_CASES = {
    "add": (operator.add, lambda a, b: (a, b), {}),
    "sub-method": ("sub", lambda a, b: (a, b), {}),
    "mul-scalar": (operator.mul, lambda a, b: (a, 0.5), {}),
    "reverse-truediv": (operator.truediv, lambda a, b: (2, a), {}),
    "torch-add": (torch.add, lambda a, b: (a, b), {}),
    "cat-dim1": (torch.cat, lambda a, b: ([a, b, a],), {"dim": 1}),
    "cat-negative-dim": (torch.cat, lambda a, b: ((a, b), -1), {}),
    "concat-default-dim": (torch.concat, lambda a, b: ([a, b],), {}),
}


@pytest.mark.parametrize("name", sorted(COMBINING_CASES))
@pytest.mark.parametrize("shape", [(2, 3, 4, 5), (2, 1, 4, 4), (3, 7)], ids=["4d", "one-channel", "2d"])
def test_combining_formula_matches_call(name, shape):
    target, arguments, kwargs = COMBINING_CASES[name]
    values = arguments(torch.randn(shape, requires_grad=True) * 1, torch.randn(shape))
    expected = getattr(values[0], target)(*values[1:], **kwargs) if isinstance(target, str) else target(*values, **kwargs)
    predicted = function_output(target, _meta_arguments(values), kwargs)
    assert predicted is not None
    assert predicted.shape == expected.shape
    assert predicted.dtype == expected.dtype
    assert predicted.stride() == expected.stride()
    assert predicted.requires_grad == expected.requires_grad


COMBINING_DECLINED = {
    "broadcast": (operator.add, (torch.randn(2, 3), torch.randn(3)), {}),
    "dtype-promotion": (operator.add, (torch.randn(2, 3), torch.randn(2, 3, dtype=torch.float64)), {}),
    "integer-tensors": (operator.truediv, (torch.ones(2, 3, dtype=torch.long), torch.ones(2, 3, dtype=torch.long)), {}),
    "add-alpha": (torch.add, (torch.randn(2, 3), torch.randn(2, 3)), {"alpha": 2}),
    "boolean-scalar": (operator.mul, (torch.randn(2, 3), True), {}),
    "transposed-operand": (operator.add, (torch.randn(3, 2).t(), torch.randn(2, 3)), {}),
    "cat-size-mismatch": (torch.cat, ([torch.randn(2, 3), torch.randn(3, 4)],), {"dim": 1}),
    "cat-dtype-mismatch": (torch.cat, ([torch.randn(2, 3), torch.randn(2, 3, dtype=torch.float64)],), {}),
    "cat-empty-tensor": (torch.cat, ([torch.randn(2, 3), torch.randn(0)],), {}),
    "cat-dim-out-of-range": (torch.cat, ([torch.randn(2, 3)],), {"dim": 2}),
}


@pytest.mark.parametrize("name", sorted(COMBINING_DECLINED))
def test_combining_formula_declines(name):
    target, values, kwargs = COMBINING_DECLINED[name]
    assert function_output(target, _meta_arguments(values), kwargs) is None


def test_in_place_arithmetic_returns_left_operand():
    # A layer's output is not a leaf, so in-place arithmetic on it is allowed.
    layer_output = module_output(nn.Conv2d(3, 3, 1), (to_meta(torch.randn(1, 3, 4, 4)),), {})
    assert function_output(operator.iadd, (layer_output, layer_output), {}) is layer_output
    assert function_output("mul_", (layer_output, 2.0), {}) is layer_output


def test_in_place_arithmetic_on_leaf_left_to_torch():
    # torch rejects in-place calls on a leaf that requires grad, so the formula declines
    # and the meta kernel raises torch's own error.
    leaf = to_meta(torch.randn(2, 3, requires_grad=True))
    assert function_output("add_", (leaf, 1.0), {}) is None
