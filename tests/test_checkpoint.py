"""Checkpoints: loading into static modules, and materializing from a checkpoint's shapes."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import fxlazy
from assertions import assert_model_unchanged, assert_state_dicts_equal, eager_dry_run, snapshot_model
from fixture_models import CASES, ChannelAffine, InstanceNorm2dNet
from fxlazy import examples

# Hand-written static twins of the core models, with the widths of their CASES entries.
HAND_WRITTEN = {
    "transposed-conv": lambda: examples.TransposedConvExample(lazy=False),
    "dcgan": lambda: examples.DCGANGenerator(latent=16, width=8, lazy=False),
    "unet": lambda: examples.UNetDecoder(lazy=False),
    "resnet": lambda: examples.ResNetClassifier(lazy=False),
}

HYPER_PARAMETERS = ("in_features", "out_features", "in_channels", "out_channels", "num_features", "groups")


class GroupedConvs(nn.Module):
    """Grouped convolution and transposed convolution, whose weights hold in_channels / groups."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.LazyConv2d(8, 3, groups=2)
        self.up = nn.LazyConvTranspose2d(6, 3, groups=2)
        self.norm = nn.LazyBatchNorm2d()
        self.affine_norm = nn.LazyInstanceNorm2d(affine=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.affine_norm(self.norm(self.up(self.conv(x))))


class GroupedConvsWithUnused(GroupedConvs):
    """GroupedConvs with a lazy layer that forward never calls."""

    def __init__(self) -> None:
        super().__init__()
        self.unused = nn.LazyLinear(3)


def _trained_state(name: str, seed: int = 5) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Return the state_dict of an eagerly materialized model and its eval output on the example."""
    model, example = CASES[name].build()
    reference, output = eager_dry_run(model, example, seed=seed)
    return reference.state_dict(), output


def _leaves(module: nn.Module) -> dict[str, nn.Module]:
    # Containers become plain modules in a GraphModule, so only leaves keep their classes.
    return {name: m for name, m in module.named_modules() if not list(m.children())}


def _hyper_parameters(module: nn.Module) -> dict[str, dict[str, int]]:
    return {
        name: {attribute: getattr(m, attribute) for attribute in HYPER_PARAMETERS if hasattr(m, attribute)}
        for name, m in _leaves(module).items()
    }


# load_checkpoint


@pytest.mark.parametrize("name", sorted(HAND_WRITTEN))
def test_load_eager_checkpoint(name, tmp_path):
    state, expected = _trained_state(name)
    path = tmp_path / "trained.pt"
    torch.save(state, path)
    model, example = CASES[name].build()
    static = fxlazy.materialize(model, example, seed=99)

    result = fxlazy.load_checkpoint(static, path)

    assert (result.missing_keys, result.unexpected_keys) == ([], [])
    assert_state_dicts_equal(static.state_dict(), state)
    with torch.no_grad():
        assert torch.equal(static.eval()(*example), expected)


def test_load_fxlazy_checkpoint(tmp_path):
    model, example = CASES["unet"].build()
    earlier = fxlazy.materialize(model, example, seed=1)
    torch.save(earlier.state_dict(), tmp_path / "earlier.pt")
    static = fxlazy.materialize(model, example, seed=2)

    fxlazy.load_checkpoint(static, tmp_path / "earlier.pt")

    assert_state_dicts_equal(static.state_dict(), earlier.state_dict())


def test_load_shape_mismatch_names_key():
    model, _ = CASES["mlp"].build()
    static = fxlazy.materialize(model, torch.randn(4, 10))
    wider = fxlazy.materialize(model, torch.randn(4, 12)).state_dict()

    with pytest.raises(fxlazy.CheckpointError, match=r"shapes differ from MLP's for 1 entry: 'fc1\.weight': checkpoint shape \(32, 12\), module shape \(32, 10\)") as raised:
        fxlazy.load_checkpoint(static, wider)

    assert raised.value.keys == ("fc1.weight",)
    assert isinstance(raised.value, ValueError)


def test_load_missing_and_unexpected_keys():
    model, example = CASES["mlp"].build()
    static = fxlazy.materialize(model, example)
    state = dict(static.state_dict())
    state["fc3.weight"] = state.pop("fc2.weight")

    with pytest.raises(fxlazy.CheckpointError, match=r"does not fit MLP: it lacks 'fc2\.weight'; it has entries the module does not, 'fc3\.weight'\. .*strict=False") as raised:
        fxlazy.load_checkpoint(static, state)
    assert set(raised.value.keys) == {"fc2.weight", "fc3.weight"}

    result = fxlazy.load_checkpoint(static, state, strict=False)
    assert (result.missing_keys, result.unexpected_keys) == (["fc2.weight"], ["fc3.weight"])


def test_load_suggests_prefix_to_strip():
    model, example = CASES["mlp"].build()
    static = fxlazy.materialize(model, example)
    wrapped = {f"module.{k}": v for k, v in static.state_dict().items()}

    with pytest.raises(fxlazy.CheckpointError, match=r"Every checkpoint key has the extra prefix 'module\.'; strip it"):
        fxlazy.load_checkpoint(static, wrapped)


def test_load_into_lazy_module_rejected():
    model, _ = CASES["mlp"].build()
    with pytest.raises(fxlazy.CheckpointError, match=r"MLP still has uninitialized tensors 'fc1\.weight', .* Materialize it first"):
        fxlazy.load_checkpoint(model, {})


def test_file_read_with_weights_only(monkeypatch, tmp_path):
    state, _ = _trained_state("mlp")
    torch.save(state, tmp_path / "mlp.pt")
    calls = []
    original_load = torch.load

    def recording_load(*args, **kwargs):
        calls.append(kwargs)
        return original_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", recording_load)
    model, example = CASES["mlp"].build()
    fxlazy.load_checkpoint(fxlazy.materialize(model, example), tmp_path / "mlp.pt")

    assert [call.get("weights_only") for call in calls] == [True]


# Invalid checkpoint files


def test_pickled_model_rejected(tmp_path):
    trained = nn.Sequential(nn.Linear(3, 4))
    torch.save(trained, tmp_path / "whole-model.pt")
    static = fxlazy.materialize(nn.Sequential(nn.LazyLinear(4)), torch.randn(2, 3))

    with pytest.raises(fxlazy.CheckpointError, match=r"torch\.load\(weights_only=True\) rejected checkpoint .*whole-model\.pt: .*Sequential.* Save model\.state_dict\(\) rather than the model object"):
        fxlazy.load_checkpoint(static, tmp_path / "whole-model.pt")


def test_training_checkpoint_points_to_state_dict(tmp_path):
    state, _ = _trained_state("mlp")
    torch.save({"epoch": 3, "state_dict": state}, tmp_path / "training.pt")
    model, _ = CASES["mlp"].build()

    with pytest.raises(fxlazy.CheckpointError, match=r"is not a state_dict: entries 'epoch' \(int\), 'state_dict' \(OrderedDict\) are not tensors\. It looks like a training checkpoint; pass its 'state_dict' entry instead"):
        fxlazy.materialize_from_checkpoint(model, tmp_path / "training.pt")


def test_missing_file(tmp_path):
    model, _ = CASES["mlp"].build()
    with pytest.raises(fxlazy.CheckpointError, match=r"Cannot read checkpoint .*absent\.pt: No such file or directory\. Check the path"):
        fxlazy.materialize_from_checkpoint(model, tmp_path / "absent.pt")


def test_corrupt_file(tmp_path):
    (tmp_path / "corrupt.pt").write_bytes(b"not a checkpoint")
    model, _ = CASES["mlp"].build()
    with pytest.raises(fxlazy.CheckpointError, match=r"corrupt\.pt"):
        fxlazy.materialize_from_checkpoint(model, tmp_path / "corrupt.pt")


@pytest.mark.parametrize("source", ["file", "state_dict"])
def test_uninitialized_entries_listed(source, tmp_path):
    never_run, _ = CASES["mlp"].build()
    checkpoint = never_run.state_dict()
    if source == "file":
        checkpoint = tmp_path / "never-run.pt"
        torch.save(never_run.state_dict(), checkpoint)
    model, _ = CASES["mlp"].build()

    with pytest.raises(fxlazy.CheckpointError, match=r"contains uninitialized entries 'fc1\.weight', 'fc1\.bias', 'bn1\.weight', 'bn1\.bias', 'bn1\.running_mean', 'bn1\.running_var', 'fc2\.weight': it was saved from a lazy model before its first forward call") as raised:
        fxlazy.materialize_from_checkpoint(model, checkpoint)

    assert "bn1.num_batches_tracked" not in raised.value.keys
    assert len(raised.value.keys) == 7


# materialize_from_checkpoint without an example


@pytest.mark.parametrize("name", sorted(HAND_WRITTEN))
def test_widths_from_checkpoint_match_hand_written(name):
    state, expected = _trained_state(name)
    model, example = CASES[name].build()

    static = fxlazy.materialize_from_checkpoint(model, state)

    hand_written = HAND_WRITTEN[name]()
    assert _hyper_parameters(static) == _hyper_parameters(hand_written)
    for qualified_name, module in _leaves(hand_written).items():
        assert type(static.get_submodule(qualified_name)) is type(module), qualified_name
    assert_state_dicts_equal(static.state_dict(), state)
    with torch.no_grad():
        assert torch.equal(static.eval()(*example), expected)


@pytest.mark.parametrize("name", ["mlp", "volume-3d", "tied-linear"])
def test_widths_from_checkpoint_other_layers(name):
    state, expected = _trained_state(name)
    model, example = CASES[name].build()
    reference = fxlazy.materialize(model, example)

    static = fxlazy.materialize_from_checkpoint(model, state)

    assert _hyper_parameters(static) == _hyper_parameters(reference)
    with torch.no_grad():
        assert torch.equal(static.eval()(*example), expected)


def test_grouped_convolution_widths():
    torch.manual_seed(0)
    eager = GroupedConvsWithUnused()
    example = torch.randn(2, 4, 9, 9)
    eager.eval()(example)
    eager.unused(torch.randn(1, 5))
    model = GroupedConvsWithUnused()

    static = fxlazy.materialize_from_checkpoint(model, eager.state_dict())

    assert (static.conv.in_channels, static.conv.weight.shape) == (4, (8, 2, 3, 3))
    assert (static.up.in_channels, static.up.out_channels, static.up.weight.shape) == (8, 6, (8, 3, 3, 3))
    assert static.norm.num_features == static.affine_norm.num_features == 6
    assert (type(static.unused), static.unused.in_features) == (nn.Linear, 5), "a lazy layer forward never calls"
    with torch.no_grad():
        assert torch.equal(static.eval()(example), eager(example))


def test_checkpoint_model_and_random_state_unchanged():
    state, _ = _trained_state("resnet")
    model, _ = CASES["resnet"].build()
    before = snapshot_model(model)
    random_state = torch.get_rng_state()

    fxlazy.materialize_from_checkpoint(model, state)

    assert_model_unchanged(model, before)
    assert torch.equal(torch.get_rng_state(), random_state)


def test_checkpoint_missing_width_entry():
    state, _ = _trained_state("resnet")
    del state["head.weight"]
    model, _ = CASES["resnet"].build()

    with pytest.raises(fxlazy.CheckpointError, match=r"no entry 'head\.weight', which the width of 'head' \(LazyLinear\) is read from") as raised:
        fxlazy.materialize_from_checkpoint(model, state)
    assert raised.value.keys == ("head.weight",)


def test_checkpoint_entry_with_wrong_dims():
    state, _ = _trained_state("mlp")
    state["fc1.weight"] = state["fc1.weight"].flatten()
    model, _ = CASES["mlp"].build()

    with pytest.raises(fxlazy.CheckpointError, match=r"'fc1\.weight' has shape \(320,\), but 'fc1' \(LazyLinear\) needs a 2-dim tensor"):
        fxlazy.materialize_from_checkpoint(model, state)


def test_out_features_disagree_with_checkpoint():
    state, _ = _trained_state("mlp")
    model = CASES["mlp"].build_model()
    model.fc2 = nn.LazyLinear(9, bias=False)

    with pytest.raises(fxlazy.CheckpointError, match=r"'fc2\.weight': checkpoint shape \(8, 32\), module shape \(9, 32\)"):
        fxlazy.materialize_from_checkpoint(model, state)


def test_custom_lazy_class_needs_example():
    state, _ = _trained_state("mixed")
    model, example = CASES["mixed"].build()

    with pytest.raises(fxlazy.UnsupportedLazyModuleError, match=r"Materializing 'affine' \(LazyChannelAffine\) from a checkpoint without an example is not supported yet.*Pass an example"):
        fxlazy.materialize_from_checkpoint(model, state)

    static = fxlazy.materialize_from_checkpoint(model, state, example)
    assert type(static.affine) is ChannelAffine
    assert_state_dicts_equal(static.state_dict(), state)


def test_norm_without_tensors_needs_example():
    state, _ = _trained_state("instance-norm-2d")
    with pytest.raises(fxlazy.UnsupportedLazyModuleError, match=r"'plain' \(LazyInstanceNorm2d\) has neither affine weights nor running statistics"):
        fxlazy.materialize_from_checkpoint(InstanceNorm2dNet(), state)


# materialize_from_checkpoint with an example


def test_example_and_checkpoint_agree():
    state, expected = _trained_state("dcgan")
    model, example = CASES["dcgan"].build()
    random_state = torch.get_rng_state()

    static = fxlazy.materialize_from_checkpoint(model, state, example)

    assert torch.equal(torch.get_rng_state(), random_state)
    assert_state_dicts_equal(static.state_dict(), state)
    assert static.get_submodule("main.0").in_channels == 16
    with torch.no_grad():
        assert torch.equal(static.eval()(*example), expected)


def test_example_and_checkpoint_disagree():
    model, _ = CASES["mlp"].build()
    state = fxlazy.materialize(model, torch.randn(4, 12)).state_dict()

    with pytest.raises(fxlazy.CheckpointError, match=r"Layer 'fc1' \(LazyLinear\): the example gives in_features=10 \(from last input dim\), but checkpoint entry 'fc1\.weight' of shape \(32, 12\) gives in_features=12 \(from 'fc1\.weight' dim 1\)") as raised:
        fxlazy.materialize_from_checkpoint(model, state, torch.randn(4, 10))
    assert raised.value.keys == ("fc1.weight",)


def test_example_and_grouped_checkpoint_disagree():
    torch.manual_seed(0)
    eager = GroupedConvs()
    eager.eval()(torch.randn(2, 4, 9, 9))

    with pytest.raises(fxlazy.CheckpointError, match=r"Layer 'conv' \(LazyConv2d\): the example gives in_channels=6 \(from input dim 1\), but checkpoint entry 'conv\.weight' of shape \(8, 2, 3, 3\) gives in_channels=4 \(from 'conv\.weight' dim 1 x 2 groups\)"):
        fxlazy.materialize_from_checkpoint(GroupedConvs(), eager.state_dict(), torch.randn(2, 6, 9, 9))
