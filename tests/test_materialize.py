"""The contracts of fxlazy.materialize on real models, checked against an eager dry run."""

from __future__ import annotations

import copy
import gc
import pickle

import pytest
import torch
from torch import nn
from torch.nn.modules.lazy import LazyModuleMixin
from torch.nn.parameter import UninitializedTensorMixin

import fxlazy
from assertions import assert_model_unchanged, assert_state_dicts_equal, eager_dry_run, snapshot_model
from fixture_models import CASES, ChannelAffine, KeywordNet, LazyChannelAffine, MixedNet
from fxlazy.examples import TransposedConvExample, UpsamplingDecoder

CASE_IDS = sorted(CASES)

LAZY_CLASSES = {
    nn.LazyLinear: nn.Linear,
    nn.LazyConv1d: nn.Conv1d,
    nn.LazyConv2d: nn.Conv2d,
    nn.LazyConv3d: nn.Conv3d,
    nn.LazyConvTranspose1d: nn.ConvTranspose1d,
    nn.LazyConvTranspose2d: nn.ConvTranspose2d,
    nn.LazyConvTranspose3d: nn.ConvTranspose3d,
    nn.LazyBatchNorm1d: nn.BatchNorm1d,
    nn.LazyBatchNorm2d: nn.BatchNorm2d,
    nn.LazyBatchNorm3d: nn.BatchNorm3d,
    nn.LazyInstanceNorm1d: nn.InstanceNorm1d,
    nn.LazyInstanceNorm2d: nn.InstanceNorm2d,
    nn.LazyInstanceNorm3d: nn.InstanceNorm3d,
}


def test_cases_cover_every_lazy_class():
    seen = set()
    for case in CASES.values():
        model, _ = case.build()
        seen.update(type(m) for m in model.modules())
    assert set(LAZY_CLASSES) <= seen


@pytest.mark.parametrize("name", CASE_IDS)
def test_state_dict_matches_dry_run(name):
    model, example = CASES[name].build()
    torch.manual_seed(7)
    static = fxlazy.materialize(model, example)
    state_after_materialize = torch.get_rng_state()

    reference, _ = eager_dry_run(CASES[name].build()[0], example, seed=7)
    state_after_dry_run = torch.get_rng_state()

    assert_state_dicts_equal(static.state_dict(), reference.state_dict())
    assert torch.equal(state_after_materialize, state_after_dry_run)


@pytest.mark.parametrize("name", CASE_IDS)
def test_outputs_match_dry_run(name):
    model, example = CASES[name].build()
    torch.manual_seed(3)
    static = fxlazy.materialize(model, example).eval()
    reference, expected = eager_dry_run(CASES[name].build()[0], example, seed=3)

    with torch.no_grad():
        actual = static(*example)
    assert torch.equal(actual, expected)


@pytest.mark.parametrize("name", CASE_IDS)
def test_model_unchanged(name):
    model, example = CASES[name].build()
    before = snapshot_model(model)
    fxlazy.materialize(model, example)
    assert_model_unchanged(model, before)


@pytest.mark.parametrize("name", CASE_IDS)
def test_no_lazy_state_left(name):
    model, example = CASES[name].build()
    static = fxlazy.materialize(model, example)
    for qualified_name, module in static.named_modules():
        if isinstance(module, LazyChannelAffine):
            pytest.fail(f"{qualified_name} is still lazy")
        if isinstance(module, LazyModuleMixin):
            # Only a lazy class with cls_to_become = None keeps its class after initialization.
            assert type(module).cls_to_become is None, qualified_name
        assert not hasattr(module, "_initialize_hook"), qualified_name
        assert not hasattr(module, "_load_hook"), qualified_name
        assert len(module._forward_pre_hooks) == 0, qualified_name
    for key, tensor in [*static.named_parameters(), *static.named_buffers()]:
        assert not isinstance(tensor, UninitializedTensorMixin), key


@pytest.mark.parametrize("name", CASE_IDS)
def test_materialized_classes_are_exact(name):
    model, example = CASES[name].build()
    static = fxlazy.materialize(model, example)
    for qualified_name, lazy_module in model.named_modules():
        expected = LAZY_CLASSES.get(type(lazy_module))
        if type(lazy_module) is LazyChannelAffine:
            expected = ChannelAffine
        if expected is not None:
            assert type(static.get_submodule(qualified_name)) is expected, qualified_name


@pytest.mark.parametrize("name", CASE_IDS)
def test_keeps_names_and_hierarchy(name):
    model, example = CASES[name].build()
    static = fxlazy.materialize(model, example)
    assert [n for n, _ in static.named_modules()][1:] == [n for n, _ in model.named_modules()][1:]
    assert list(static.state_dict()) == list(model.state_dict(keep_vars=True))
    assert type(static).__name__ == type(model).__name__


@pytest.mark.parametrize("name", CASE_IDS)
def test_tensor_meta_matches_real_forward(name):
    model, example = CASES[name].build()
    static = fxlazy.materialize(model, example).eval()
    real_outputs = {}

    class Recorder(torch.fx.Interpreter):
        def run_node(self, n):
            result = super().run_node(n)
            real_outputs[n.name] = result
            return result

    with torch.no_grad():
        Recorder(static).run(*example)
    for node in static.graph.nodes:
        value = real_outputs[node.name]
        if isinstance(value, torch.Tensor):
            meta = node.meta["tensor_meta"]
            assert meta.shape == value.shape, node.name
            assert meta.dtype == value.dtype, node.name


@pytest.mark.parametrize("name", CASE_IDS)
def test_ready_for_export(name):
    model, example = CASES[name].build()
    static = fxlazy.materialize(model, example).eval()
    with torch.no_grad():
        expected = static(*example)

        scripted = torch.jit.script(static)
        assert torch.equal(scripted(*example), expected)

        traced = torch.jit.trace(static, example)
        assert torch.equal(traced(*example), expected)

    exported = torch.export.export(static, example)
    with torch.no_grad():
        assert torch.equal(exported.module()(*example), expected)

    static.graph.lint()
    copied = copy.deepcopy(static)
    restored = pickle.loads(pickle.dumps(static))
    with torch.no_grad():
        assert torch.equal(copied(*example), expected)
        assert torch.equal(restored(*example), expected)


def test_seed_example_equals_hand_written_layer():
    model = TransposedConvExample()
    x = TransposedConvExample.example_input()
    static = fxlazy.materialize(model, x, seed=0)
    layer = static.get_submodule("up")

    assert type(layer) is nn.ConvTranspose2d
    assert (layer.in_channels, layer.out_channels) == (64, 32)
    assert layer.kernel_size == (3, 3)
    assert layer.stride == (2, 2)
    assert static(x).shape == (1, 32, 17, 17)

    hand_written = TransposedConvExample(lazy=False)
    assert isinstance(hand_written.up, nn.ConvTranspose2d)
    expected_shapes = {k: v.shape for k, v in hand_written.state_dict().items()}
    assert {k: v.shape for k, v in static.state_dict().items()} == expected_shapes
    hand_written.load_state_dict(static.state_dict())
    assert torch.equal(hand_written(x), static(x))


def test_seed_leaves_global_rng_untouched():
    model, example = CASES["dcgan"].build()
    torch.manual_seed(11)
    before = torch.get_rng_state()
    first = fxlazy.materialize(model, example, seed=5)
    assert torch.equal(torch.get_rng_state(), before)

    second = fxlazy.materialize(model, example, seed=5)
    assert_state_dicts_equal(first.state_dict(), second.state_dict())

    reference, _ = eager_dry_run(CASES["dcgan"].build()[0], example, seed=5)
    assert_state_dicts_equal(first.state_dict(), reference.state_dict())


def test_different_seeds_differ():
    model, example = CASES["mlp"].build()
    first = fxlazy.materialize(model, example, seed=1)
    second = fxlazy.materialize(model, example, seed=2)
    assert not torch.equal(first.state_dict()["fc1.weight"], second.state_dict()["fc1.weight"])


def test_inplace_keeps_parameter_identity():
    model, example = CASES["resnet"].build()
    lazy_parameters = list(model.parameters())
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)

    static = fxlazy.materialize(model, example, inplace=True)

    assert all(not isinstance(p, UninitializedTensorMixin) for p in model.parameters())
    assert [id(p) for p in model.parameters()] == [id(p) for p in lazy_parameters]
    assert type(model.head) is nn.Linear
    assert static.get_submodule("head") is model.head

    # The optimizer built before materialization trains the materialized parameters.
    before = model.head.weight.detach().clone()
    loss = static(*example).square().mean()
    loss.backward()
    optimizer.step()
    assert not torch.equal(model.head.weight, before)


def test_inplace_matches_dry_run():
    model, example = CASES["unet"].build()
    torch.manual_seed(2)
    fxlazy.materialize(model, example, inplace=True)
    reference, _ = eager_dry_run(CASES["unet"].build()[0], example, seed=2)
    assert_state_dicts_equal(model.state_dict(), reference.state_dict())


def test_tied_module_stays_one_module():
    model, example = CASES["tied-linear"].build()
    static = fxlazy.materialize(model, example)
    calls = [n for n in static.graph.nodes if n.op == "call_module" and n.target == "shared"]
    assert len(calls) == 2
    assert type(static.shared) is nn.Linear
    assert static.shared.in_features == 6
    report = fxlazy.shape_report(static)
    assert [row.calls for row in report.rows] == [2]


def test_non_lazy_layers_keep_values():
    torch.manual_seed(0)
    model = MixedNet()
    stem_weight = model.stem.weight.detach().clone()
    hidden_bias = model.hidden.bias.detach().clone()
    static = fxlazy.materialize(model, torch.randn(2, 3, 8, 8))
    assert torch.equal(static.stem.weight, stem_weight)
    assert torch.equal(static.hidden.bias, hidden_bias)
    assert static.stem.weight is not model.stem.weight
    assert static.unused.weight.shape == (4, 4)


def test_custom_layer_initialized_on_real_tensor():
    model, example = CASES["custom-layer"].build()
    static = fxlazy.materialize(model, example)
    layer = static.get_submodule("1")
    assert type(layer) is ChannelAffine
    assert layer.num_channels == 4
    # One call on the static model's layer, with a real CPU tensor of the propagated shape.
    assert layer.initialized_with == [(torch.Tensor, torch.device("cpu"), (2, 4, 5, 5))]
    assert model[1].initialized_with == []


def test_factory_dtype_kept():
    model = nn.Sequential(nn.LazyLinear(3, dtype=torch.float64), nn.LazyBatchNorm1d(dtype=torch.float64))
    x = torch.randn(4, 5, dtype=torch.float64)
    static = fxlazy.materialize(model, x)
    assert static.get_submodule("0").weight.dtype == torch.float64
    assert static.get_submodule("1").running_mean.dtype == torch.float64
    assert static.graph.find_nodes(op="output")[0].meta["tensor_meta"].dtype == torch.float64


def _linear_with_frozen_weight() -> nn.Sequential:
    model = nn.Sequential(nn.LazyLinear(3, dtype=torch.float64), nn.LazyBatchNorm1d(dtype=torch.float64))
    model[0].weight = nn.UninitializedParameter(requires_grad=False, dtype=torch.float64)
    return model


def test_frozen_weight_stays_frozen():
    x = torch.randn(4, 5, dtype=torch.float64)
    model = _linear_with_frozen_weight()
    before = snapshot_model(model)
    static = fxlazy.materialize(model, x, seed=1)
    reference, _ = eager_dry_run(_linear_with_frozen_weight(), (x,), seed=1)

    assert_model_unchanged(model, before)

    assert type(static.get_submodule("0").weight) is nn.Parameter
    assert static.get_submodule("0").weight.requires_grad is False
    assert static.get_submodule("0").bias.requires_grad is True
    assert type(static.get_submodule("1").running_mean) is torch.Tensor
    assert_state_dicts_equal(static.state_dict(), reference.state_dict())


def test_unknown_uninitialized_tensor_reported():
    # torch's LazyLinear materializes only weight and bias, so an eager dry run leaves
    # 'extra' uninitialized too; materialize must name it instead of allocating it.
    model = nn.Sequential(nn.LazyLinear(3))
    model[0].register_parameter("extra", nn.UninitializedParameter())
    before = snapshot_model(model)
    with pytest.raises(fxlazy.LazyInitializationError, match="'extra'"):
        fxlazy.materialize(model, torch.randn(2, 5))
    assert isinstance(model[0].weight, UninitializedTensorMixin)
    assert_model_unchanged(model, before)


def test_real_bias_on_lazy_conv_fails_as_eager():
    # torch's LazyConv2d expects an uninitialized bias and fails an eager dry run without one.
    model = nn.Sequential(nn.LazyConv2d(4, 3))
    model[0].bias = nn.Parameter(torch.zeros(4))
    before = snapshot_model(model)
    with pytest.raises(fxlazy.LazyInitializationError, match="bias must be an UninitializedParameter"):
        fxlazy.materialize(model, torch.randn(1, 3, 5, 5))
    assert_model_unchanged(model, before)


def test_keyword_and_scalar_inputs():
    torch.manual_seed(0)
    model = KeywordNet()
    x, mask = torch.randn(2, 5), torch.ones(2, 5)
    static = fxlazy.materialize(model, (x,), example_kwargs={"mask": mask, "scale": 2.0})
    placeholders = [n.target for n in static.graph.nodes if n.op == "placeholder"]
    assert placeholders == ["x", "mask"]
    assert static.proj.in_features == 5
    assert torch.equal(static(x, mask), static.proj(x * mask) * 2.0)


def test_none_argument_is_baked_in():
    torch.manual_seed(0)
    model = KeywordNet()
    x = torch.randn(2, 5)
    static = fxlazy.materialize(model, (x, None, 3.0))
    assert [n.target for n in static.graph.nodes if n.op == "placeholder"] == ["x"]
    assert torch.equal(static(x), static.proj(x) * 3.0)
    torch.jit.script(static)


def test_materialized_model_trains():
    model, example = CASES["resnet"].build()
    static = fxlazy.materialize(model, example)
    assert static.training
    optimizer = torch.optim.SGD(static.parameters(), lr=0.1)
    loss = static(*example).square().mean()
    loss.backward()
    optimizer.step()
    assert all(p.grad is not None for p in static.parameters())


def test_training_mode_kept_and_statistics_fresh():
    model, example = CASES["dcgan"].build()
    model.train()
    static = fxlazy.materialize(model, example)
    assert static.training
    assert all(m.training for m in static.modules())
    norm = static.get_submodule("main.1")
    assert torch.equal(norm.running_mean, torch.zeros_like(norm.running_mean))
    assert torch.equal(norm.running_var, torch.ones_like(norm.running_var))
    assert int(norm.num_batches_tracked) == 0


def test_eval_mode_model_stays_eval():
    model, example = CASES["resnet"].build()
    model.eval()
    static = fxlazy.materialize(model, example)
    assert not static.training
    assert not any(m.training for m in static.modules())


def test_decoder_beyond_memory():
    # The activations of an eager forward add up to more than 32 GiB, because each
    # 4096 x 4096 map at batch 16 takes 8 GiB. fxlazy allocates only the parameters.
    model = UpsamplingDecoder(size=4096, channels=64)
    x = model.example_input(batch=16)
    static = fxlazy.materialize(model, x)
    output = static.graph.find_nodes(op="output")[0].meta["tensor_meta"]
    assert output.shape == (16, 3, 4096, 4096)
    activation_bytes = sum(
        n.meta["tensor_meta"].shape.numel() * 4 for n in static.graph.nodes if n.op == "call_module"
    )
    assert activation_bytes > 32 * 2**30
    assert type(static.to_rgb) is nn.Conv2d


def test_hook_initialized_layer_reported():
    model, example = CASES["hook-initialized"].build()
    static = fxlazy.materialize(model, example)
    layer = static.get_submodule("hooked")

    assert layer.in_features == 7
    assert layer.weight.shape == (5, 7)
    assert len(layer._forward_pre_hooks) == 0
    assert isinstance(model.hooked.weight, torch.nn.UninitializedParameter)
    row = next(row for row in fxlazy.shape_report(static).rows if row.name == "hooked")
    assert row.inferred == {"in_features": 7}
    assert row.source == "first forward call"


def test_partly_materialized_model():
    model, example = CASES["mlp"].build()
    with torch.no_grad():
        model.fc1(example[0])
    assert type(model.fc1) is nn.Linear

    torch.manual_seed(2)
    static = fxlazy.materialize(model, example)
    assert [row.name for row in fxlazy.shape_report(static).rows] == ["bn1", "fc2"]
    assert torch.equal(static.fc1.weight, model.fc1.weight)
    assert type(static.fc2) is nn.Linear


def test_model_without_lazy_layers():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3), nn.ReLU())
    static = fxlazy.materialize(model, torch.randn(2, 4))
    report = fxlazy.shape_report(static)
    assert report.rows == ()
    assert str(report).splitlines()[0] == "Sequential: no lazy modules were materialized."
    assert torch.equal(static.get_submodule("0").weight, model[0].weight)


@pytest.mark.parametrize("enabled_before", [True, False], ids=["enabled", "disabled"])
@pytest.mark.parametrize("fails", [False, True], ids=["success", "failure"])
def test_garbage_collector_state_restored(enabled_before, fails):
    # materialize pauses the cyclic collector while it runs; the caller's setting must survive.
    # A layer too large to allocate fails in the last phase, at initialization.
    model = nn.Sequential(nn.LazyLinear(2**40 if fails else 3))
    example = torch.randn(2, 5)
    was_enabled = gc.isenabled()
    (gc.enable if enabled_before else gc.disable)()
    try:
        if fails:
            with pytest.raises(fxlazy.LazyInitializationError):
                fxlazy.materialize(model, example)
        else:
            fxlazy.materialize(model, example)
        assert gc.isenabled() is enabled_before
    finally:
        (gc.enable if was_enabled else gc.disable)()
