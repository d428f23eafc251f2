"""Copies of leaf modules for the result: exact, independent, and tied where the model ties."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn.parameter import UninitializedParameter

import fxlazy
from fxlazy.passes.clone import TensorCopier, can_copy_shallow, clone_module


@pytest.mark.parametrize(
    "build",
    [lambda: nn.Conv2d(3, 4, 3, padding=1), lambda: nn.BatchNorm2d(4), lambda: nn.ReLU(inplace=True), lambda: nn.Linear(3, 2)],
    ids=["conv2d", "batch-norm2d", "relu", "linear"],
)
def test_builtin_leaf_copied_shallow(build):
    torch.manual_seed(0)
    module = build()
    assert can_copy_shallow(module)

    copy = clone_module(module, TensorCopier())

    assert type(copy) is type(module)
    assert copy.__dict__.keys() == module.__dict__.keys()
    for name, value in vars(module).items():
        if name not in ("_parameters", "_buffers") and not isinstance(value, (dict, set)):
            assert getattr(copy, name) == value, name
    for (name, original), (copy_name, copied) in zip(module.state_dict(keep_vars=True).items(), copy.state_dict(keep_vars=True).items()):
        assert name == copy_name
        assert copied is not original, name
        assert type(copied) is type(original), name
        assert torch.equal(copied, original), name
        assert copied.requires_grad == original.requires_grad, name


def test_lazy_leaf_copy_drops_hooks():
    module = nn.LazyConv2d(4, 3, dtype=torch.float64)
    copy = clone_module(module, TensorCopier())

    assert type(copy) is nn.LazyConv2d
    assert isinstance(copy.weight, UninitializedParameter)
    assert copy.weight is not module.weight
    assert copy.weight.dtype == torch.float64
    assert len(copy._forward_pre_hooks) == 0
    assert not hasattr(copy, "_initialize_hook")
    # The original keeps its hooks and stays lazy.
    assert len(module._forward_pre_hooks) == 1
    assert hasattr(module, "_initialize_hook")


def test_user_hook_forces_deep_copy():
    module = nn.Linear(3, 2)
    calls = []
    module.register_forward_hook(lambda m, args, output: calls.append(m))
    assert not can_copy_shallow(module)

    copy = clone_module(module, TensorCopier())
    copy(torch.randn(1, 3))
    assert calls == [copy]


def test_mutable_attribute_forces_deep_copy():
    module = nn.Linear(3, 2)
    module.notes = ["built by hand"]
    assert not can_copy_shallow(module)

    copy = clone_module(module, TensorCopier())
    copy.notes.append("changed")
    assert module.notes == ["built by hand"]


def test_tied_parameters_stay_tied():
    first, second = nn.Linear(4, 4), nn.Linear(4, 4)
    second.weight = first.weight
    copy_tensor = TensorCopier()

    first_copy = clone_module(first, copy_tensor)
    second_copy = clone_module(second, copy_tensor)

    assert second_copy.weight is first_copy.weight
    assert first_copy.weight is not first.weight
    assert second_copy.bias is not first_copy.bias


class TiedAcrossModules(nn.Module):
    """A lazy encoder and a decoder whose weight is the embedding's, as in tied language models."""

    def __init__(self) -> None:
        super().__init__()
        self.embedding = nn.Embedding(10, 6)
        self.body = nn.LazyLinear(6)
        self.decoder = nn.Linear(6, 10, bias=False)
        self.decoder.weight = self.embedding.weight

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.body(self.embedding(tokens)))


def test_materialize_keeps_tied_weights():
    model = TiedAcrossModules()
    static = fxlazy.materialize(model, torch.randint(0, 10, (2, 5)))

    assert static.decoder.weight is static.embedding.weight
    assert static.embedding.weight is not model.embedding.weight
    assert list(static.state_dict()) == list(model.state_dict())
