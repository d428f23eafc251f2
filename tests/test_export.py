"""Export to TorchScript and to an ExportedProgram, with the parity check, on real models."""

from __future__ import annotations

import sys
import warnings

import pytest
import torch

import fxlazy
from assertions import assert_model_unchanged, snapshot_model
from export_models import NoisyHead, SignFlip, TwoOutputs, VariadicHelperNet, VariadicHelperWithCount
from fixture_models import CASES
from fxlazy.export._static import resize_batch

# The models of the core tests that every format must round-trip.
ROUND_TRIP_CASES = ["transposed-conv", "dcgan", "unet", "resnet"]


def _static(name: str) -> tuple[torch.fx.GraphModule, tuple[torch.Tensor, ...]]:
    model, example = CASES[name].build()
    return fxlazy.materialize(model, example, seed=0), example


def _outputs(module, inputs) -> torch.Tensor:
    with torch.no_grad():
        return module(*inputs)


@pytest.mark.parametrize("name", ROUND_TRIP_CASES)
def test_torchscript_round_trip(name, tmp_path):
    static, example = _static(name)
    path = tmp_path / "model.pt"

    result = fxlazy.export_torchscript(static, example, path)

    assert result.format == "torchscript"
    assert result.method == "torch.jit.script"
    assert result.fallback_reason is None
    assert result.path == path
    assert [check.inputs for check in result.checks] == ["example"]
    assert result.checks[0].input_shapes == tuple(tuple(x.shape) for x in example)
    static.eval()
    reloaded = torch.jit.load(str(path))
    assert torch.equal(_outputs(reloaded, example), _outputs(static, example))


@pytest.mark.parametrize("name", ROUND_TRIP_CASES)
def test_exported_program_round_trip(name, tmp_path):
    static, example = _static(name)
    path = tmp_path / "model.pt2"

    result = fxlazy.export_program(static, example, path, dynamic="batch")

    batch = example[0].shape[0]
    second = max(batch, 2) + 1
    assert result.format == "exported-program"
    assert result.method == "torch.export"
    assert [check.inputs for check in result.checks] == ["example", f"example at batch {second}"]
    assert all(dims[0] == 0 for dims in result.dynamic_dims.values())
    assert len(result.dynamic_dims) == len(example)

    # A batch size neither the example nor the check used, on the program read from disk.
    names = list(result.dynamic_dims)
    bigger = resize_batch(example, names, second + 2)
    reloaded = torch.export.load(str(path)).module()
    static.eval()
    assert torch.equal(_outputs(reloaded, bigger), _outputs(static, bigger))


def test_exported_program_spatial_dims():
    static, example = _static("transposed-conv")

    result = fxlazy.export_program(static, example, dynamic=("batch", "spatial"))

    assert result.dynamic_dims == {"x": (0, 2, 3)}
    larger = torch.randn(3, 64, 12, 7)
    static.eval()
    assert torch.equal(_outputs(result.artifact.module(), (larger,)), _outputs(static, (larger,)))


def test_exported_program_warns_static_spatial_dims():
    # The DCGAN latent is 1 x 1, which torch.export keeps static.
    static, example = _static("dcgan")

    with pytest.warns(fxlazy.ExportWarning, match=r"keeps 'z' dim 2, 'z' dim 3 static"):
        result = fxlazy.export_program(static, example, dynamic=("batch", "spatial"))

    assert result.dynamic_dims == {"z": (0,)}


def test_batch_of_one_exported_dynamic():
    # torch.export specializes size 1, so a batch-1 example is traced at batch 2.
    static, example = _static("transposed-conv")
    assert example[0].shape[0] == 1

    result = fxlazy.export_program(static, example, dynamic="batch")

    assert result.dynamic_dims == {"x": (0,)}
    assert [check.input_shapes[0][0] for check in result.checks] == [1, 3]


def test_extra_inputs_checked(tmp_path):
    static, example = _static("mlp")
    extra = torch.randn(5, 10)

    result = fxlazy.export_torchscript(static, example, tmp_path / "model.pt", extra_inputs=[extra])

    assert [check.inputs for check in result.checks] == ["example", "extra input 1"]
    assert result.checks[1].input_shapes == ((5, 10),)
    assert result.checks[1].outputs[0].shape == (5, 8)


def test_lazy_model_exported_unchanged(tmp_path):
    model, example = CASES["mixed"].build()
    before = snapshot_model(model)

    result = fxlazy.export_torchscript(model, example, tmp_path / "mixed.pt")

    assert_model_unchanged(model, before)
    assert result.checked


def test_modes_restored_after_export(tmp_path):
    static, example = _static("dcgan")
    static.train()
    static.get_submodule("main.1").eval()
    modes = {name: m.training for name, m in static.named_modules()}

    fxlazy.export_program(static, example)
    fxlazy.export_torchscript(static, example, tmp_path / "model.pt")

    assert {name: m.training for name, m in static.named_modules()} == modes


def test_outputs_named_by_position():
    model = TwoOutputs()
    example = torch.randn(4, 3)

    result = fxlazy.export_program(model, example)

    assert [output.name for output in result.checks[0].outputs] == ["output[0]", "output[1]"]


def test_check_skipped(tmp_path):
    static, example = _static("transposed-conv")

    result = fxlazy.export_torchscript(static, example, tmp_path / "model.pt", check=False)

    assert result.checks == ()
    assert result.tolerance is None
    assert not result.checked
    assert "Parity check skipped." in result.summary()


def test_summary_lists_checks():
    static, example = _static("transposed-conv")

    summary = fxlazy.export_program(static, example, dynamic="batch").summary()

    assert summary.splitlines()[0] == "Exported exported-program with torch.export."
    assert "Dynamic: x dims 0." in summary
    assert "Parity check passed on 2 input set(s) within atol=1e-05, rtol=0.0001:" in summary
    assert "example at batch 3 (3, 64, 8, 8):" in summary
    assert "  output (3, 32, 17, 17): max abs diff 0, max rel diff 0" in summary


# Parity failures


def test_parity_error_torchscript(tmp_path):
    model = NoisyHead()
    path = tmp_path / "noisy.pt"

    with pytest.raises(fxlazy.ParityError, match=r"TorchScript module .*noisy\.pt.* on example \(2, 3\): output differs") as raised:
        fxlazy.export_torchscript(model, torch.randn(2, 3), path)

    error = raised.value
    assert error.output == "output"
    assert error.inputs == "example"
    assert error.max_abs_diff > 0.1
    assert error.max_rel_diff > 0
    assert (error.atol, error.rtol) == (1e-5, 1e-4)
    message = str(error)
    assert f"max abs diff {error.max_abs_diff:.3g}" in message
    assert f"max rel diff {error.max_rel_diff:.3g}" in message
    assert "tolerance atol=1e-05, rtol=0.0001" in message
    assert path.exists(), "the artifact stays for inspection"


def test_parity_error_exported_program():
    with pytest.raises(fxlazy.ParityError, match=r"ExportedProgram on example \(2, 3\): output differs .* tolerance atol=0\.5, rtol=0"):
        fxlazy.export_program(NoisyHead(), torch.randn(2, 3), tolerance=fxlazy.Tolerance(atol=0.5, rtol=0))


def test_tolerance_rejects_negative():
    with pytest.raises(ValueError, match=r"non-negative numbers, got atol=-1"):
        fxlazy.Tolerance(atol=-1)


# Fallbacks and exporter failures


def test_script_failure_falls_back_to_trace(tmp_path):
    with pytest.warns(fxlazy.ExportFallbackWarning, match=r"torch\.jit\.script failed on VariadicHelperNet \(NotSupportedError: .*variable number of arguments.*torch\.jit\.trace instead"):
        result = fxlazy.export_torchscript(VariadicHelperNet(), torch.randn(2, 3), tmp_path / "model.pt")

    assert result.method == "torch.jit.trace"
    assert "variable number of arguments" in result.fallback_reason
    assert result.checked
    assert "Fell back to torch.jit.trace because: NotSupportedError" in result.summary()


def test_script_only_raises(tmp_path):
    with pytest.raises(fxlazy.ExportError, match=r"torch\.jit\.script failed on VariadicHelperNet: NotSupportedError: .* Pass method='trace'"):
        fxlazy.export_torchscript(VariadicHelperNet(), torch.randn(2, 3), tmp_path / "model.pt", method="script")


def test_script_and_trace_fail(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", fxlazy.ExportFallbackWarning)
        with pytest.raises(fxlazy.ExportError, match=r"torch\.jit\.script failed \(NotSupportedError: .*\), and torch\.jit\.trace failed: .*Export to ONNX or an ExportedProgram"):
            fxlazy.export_torchscript(VariadicHelperWithCount(), torch.randn(2, 3), tmp_path / "model.pt")


def test_torch_export_failure():
    with pytest.raises(fxlazy.ExportError, match=r"torch\.export\.export failed on SignFlip: GuardOnDataDependentSymNode: Could not guard on data-dependent expression"):
        fxlazy.export_program(SignFlip(), torch.randn(2, 3))


# Invalid requests


def test_missing_output_folder(tmp_path):
    static, example = _static("transposed-conv")
    with pytest.raises(fxlazy.ExportError, match=r"the folder .*no-such-folder does not exist\. Create it"):
        fxlazy.export_torchscript(static, example, tmp_path / "no-such-folder" / "model.pt")


def test_unknown_dynamic_axis():
    static, example = _static("transposed-conv")
    with pytest.raises(ValueError, match=r"Unknown dynamic axes \['time'\]\. Choose from \['batch', 'spatial'\]"):
        fxlazy.export_program(static, example, dynamic="time")


def test_dynamic_and_dynamic_shapes_rejected():
    static, example = _static("transposed-conv")
    with pytest.raises(ValueError, match=r"either dynamic= or dynamic_shapes=, not both"):
        fxlazy.export_program(static, example, dynamic="batch", dynamic_shapes=({0: torch.export.Dim("n")},))


def test_dynamic_batch_needs_shared_batch():
    static, (bottleneck, *skips) = _static("unet")
    mixed = (bottleneck, skips[0][:1], *skips[1:])
    with pytest.raises(fxlazy.ExportError, match=r"same size in dim 0, but the sizes are 'bottleneck': 2, 'skip1': 1"):
        fxlazy.export_program(static, mixed, dynamic="batch")


def test_extra_input_arity_checked(tmp_path):
    static, example = _static("unet")
    with pytest.raises(fxlazy.ExportError, match=r"Extra input 1 has 1 argument\(s\) .* takes 4 tensor\(s\) \(bottleneck, skip1, skip2, skip3\)"):
        fxlazy.export_torchscript(static, example, tmp_path / "model.pt", extra_inputs=[example[0]])


def test_non_tensor_example_for_static_module(tmp_path):
    static, example = _static("transposed-conv")
    with pytest.raises(fxlazy.ExportError, match=r"non-tensor arguments at positions 1 \(float\)"):
        fxlazy.export_torchscript(static, (*example, 1.0), tmp_path / "model.pt")


def test_onnx_without_extra_names_install(monkeypatch, tmp_path):
    # A None entry in sys.modules makes `import onnxruntime` fail, as on a machine without it.
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    static, example = _static("transposed-conv")

    with pytest.raises(fxlazy.MissingDependencyError, match=r'onnxruntime.*not installed\. Install the onnx extra: pip install "fxlazy\[onnx\]"') as raised:
        fxlazy.export_onnx(static, example, tmp_path / "model.onnx")

    assert isinstance(raised.value, ImportError)
    assert not (tmp_path / "model.onnx").exists()


def test_artifact_failure_names_inputs():
    static, example = _static("transposed-conv")
    other_size = torch.randn(1, 64, 5, 5)

    with pytest.raises(fxlazy.ExportError, match=r"The ExportedProgram failed on extra input 1 \(1, 64, 5, 5\), which the static module runs: .*Guard failed.* export with dynamic dims that cover them"):
        fxlazy.export_program(static, example, extra_inputs=[other_size])
