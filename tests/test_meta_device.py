"""Materializing onto the meta device, and the flows that give the result real tensors."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time

import pytest
import torch
from torch import nn

import fxlazy
from assertions import assert_state_dicts_equal
from fixture_models import CASES


class WideMLP(nn.Module):
    """Seven LazyLinear layers of width 65,536: 112 GiB of float32 weights."""

    def __init__(self, width: int = 65536, depth: int = 7) -> None:
        super().__init__()
        self.layers = nn.ModuleList(nn.LazyLinear(width) for _ in range(depth))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = torch.relu(layer(x))
        return x


def _reset_all(module: nn.Module) -> None:
    for submodule in module.modules():
        if hasattr(submodule, "reset_parameters"):
            submodule.reset_parameters()


def test_larger_than_memory_on_meta():
    width, depth = 65536, 7
    started = time.perf_counter()
    static = fxlazy.materialize(WideMLP(width, depth), torch.randn(2, width), device="meta")
    elapsed = time.perf_counter() - started

    expected_parameters = depth * (width * width + width)
    assert elapsed < 60, "materializing on meta must not touch the parameters' memory"
    assert all(p.device.type == "meta" for p in static.parameters())
    assert sum(p.numel() for p in static.parameters()) == expected_parameters
    assert expected_parameters * 4 > 100 * 2**30

    report = fxlazy.shape_report(static)
    assert report.total_parameters == expected_parameters
    assert [row.inferred for row in report.rows] == [{"in_features": width}] * depth


def test_meta_draws_no_random_numbers():
    model, example = CASES["resnet"].build()
    before = torch.get_rng_state()
    fxlazy.materialize(model, example, device="meta")
    assert torch.equal(torch.get_rng_state(), before)


@pytest.mark.parametrize("name", ["resnet", "unet", "mixed"])
def test_meta_matches_real_structure(name):
    model, example = CASES[name].build()
    on_meta = fxlazy.materialize(model, example, device="meta")
    real = fxlazy.materialize(model, example)

    assert list(on_meta.state_dict()) == list(real.state_dict())
    for key, tensor in on_meta.state_dict().items():
        assert tensor.device.type == "meta", key
        assert tensor.shape == real.state_dict()[key].shape, key
        assert tensor.dtype == real.state_dict()[key].dtype, key
    assert on_meta.code == real.code


def test_to_empty_then_reset_parameters():
    model, example = CASES["resnet"].build()
    static = fxlazy.materialize(model, example, device="meta")
    static.to_empty(device="cpu")
    _reset_all(static)

    assert all(p.device.type == "cpu" for p in static.parameters())
    norm = static.get_submodule("stem.1")
    assert torch.equal(norm.running_var, torch.ones_like(norm.running_var))
    assert int(norm.num_batches_tracked) == 0
    with torch.no_grad():
        output = static.eval()(*example)
    assert output.shape == (2, 10)
    assert torch.isfinite(output).all()


def test_to_empty_then_memory_mapped_checkpoint(tmp_path):
    model, example = CASES["unet"].build()
    trained = fxlazy.materialize(model, example, seed=3).eval()
    checkpoint = tmp_path / "unet.pt"
    torch.save(trained.state_dict(), checkpoint)

    static = fxlazy.materialize(model, example, device="meta")
    static.to_empty(device="cpu")
    state = torch.load(checkpoint, mmap=True, weights_only=True)
    static.load_state_dict(state, assign=True)

    assert_state_dicts_equal(static.state_dict(), trained.state_dict())
    with torch.no_grad():
        assert torch.equal(static.eval()(*example), trained(*example))


def test_meta_rejects_inplace():
    model, example = CASES["mlp"].build()
    with pytest.raises(fxlazy.InvalidOptionError, match=r"device='meta' cannot be combined with inplace=True"):
        fxlazy.materialize(model, example, device="meta", inplace=True)


def test_other_devices_not_supported_yet():
    model, example = CASES["mlp"].build()
    with pytest.raises(fxlazy.InvalidOptionError, match=r"device='cpu' is not supported yet; only device='meta'"):
        fxlazy.materialize(model, example, device="cpu")


# FSDP2 shards the meta result before any memory is allocated. One process with the gloo
# backend plays the cluster, and a file rendezvous keeps it off the network.
_FSDP_SCRIPT = textwrap.dedent(
    """
    import sys
    import torch
    import torch.distributed as dist
    from torch import nn
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    import fxlazy
    from fxlazy.examples import ResNetClassifier

    dist.init_process_group("gloo", init_method="file://" + sys.argv[1], rank=0, world_size=1)
    mesh = init_device_mesh("cpu", (1,))
    x = ResNetClassifier.example_input(batch=2, size=16)
    static = fxlazy.materialize(ResNetClassifier(), x, device="meta")
    # The graph inlines containers such as blocks.0, so their forward hooks never run:
    # shard the layers the graph calls, then the root.
    for node in static.graph.nodes:
        layer = static.get_submodule(node.target) if node.op == "call_module" else None
        if layer is not None and any(True for _ in layer.parameters()):
            fully_shard(layer, mesh=mesh)
    fully_shard(static, mesh=mesh)
    static.to_empty(device="cpu")
    for module in static.modules():
        if hasattr(module, "reset_parameters"):
            module.reset_parameters()
    loss = static(x).square().mean()
    loss.backward()
    sharded = type(static.get_submodule("head").weight).__name__
    grads = all(p.grad is not None for p in static.parameters())
    print(sharded, grads, tuple(static(x).shape))
    dist.destroy_process_group()
    """
)


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch was built without torch.distributed")
def test_meta_result_feeds_fsdp2(tmp_path):
    script = tmp_path / "fsdp2_check.py"
    script.write_text(_FSDP_SCRIPT)
    finished = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "rendezvous")],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert finished.returncode == 0, finished.stderr
    assert finished.stdout.split() == ["DTensor", "True", "(2,", "10)"]
