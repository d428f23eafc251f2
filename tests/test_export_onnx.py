"""Export to ONNX, checked with onnxruntime, on real models. Needs the onnx extra."""

from __future__ import annotations

import logging

import pytest
import torch

onnxruntime = pytest.importorskip(
    "onnxruntime", reason='the onnx extra is not installed (pip install "fxlazy[onnx]")'
)
onnx = pytest.importorskip("onnx", reason='the onnx extra is not installed (pip install "fxlazy[onnx]")')
pytest.importorskip("onnxscript", reason='the onnx extra is not installed (pip install "fxlazy[onnx]")')

import fxlazy  # noqa: E402 (imported after the skips above, like the tests that need it)
from export_models import CastToFloat, NoisyHead, SignFlip  # noqa: E402
from fixture_models import CASES  # noqa: E402
from fxlazy.export._static import resize_batch  # noqa: E402

ROUND_TRIP_CASES = ["transposed-conv", "dcgan", "unet", "resnet"]


def _run_onnx(path, names, inputs) -> list[torch.Tensor]:
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feed = {name: tensor.numpy() for name, tensor in zip(names, inputs)}
    return [torch.from_numpy(array) for array in session.run(None, feed)]


@pytest.mark.parametrize("name", ROUND_TRIP_CASES)
def test_onnx_round_trip_dynamic_batch(name, tmp_path):
    model, example = CASES[name].build()
    static = fxlazy.materialize(model, example, seed=0)
    path = tmp_path / "model.onnx"

    result = fxlazy.export_onnx(static, example, path, dynamic="batch")

    batch = example[0].shape[0]
    second = max(batch, 2) + 1
    assert result.format == "onnx"
    assert result.method == "torch.onnx dynamo"
    assert result.fallback_reason is None
    assert [check.inputs for check in result.checks] == ["example", f"example at batch {second}"]
    names = list(result.dynamic_dims)
    assert len(names) == len(example)
    assert all(dims == (0,) for dims in result.dynamic_dims.values())
    assert [o.name for o in result.artifact.graph.output] == ["output"]
    assert list(tmp_path.iterdir()) == [path], "small weights stay inside the .onnx file"

    # Another batch size, run here directly with onnxruntime.
    bigger = resize_batch(example, names, second + 2)
    static.eval()
    with torch.no_grad():
        expected = static(*bigger)
    (actual,) = _run_onnx(path, names, bigger)
    torch.testing.assert_close(actual, expected, atol=1e-5, rtol=1e-4)


def test_onnx_spatial_dims(tmp_path):
    model, example = CASES["transposed-conv"].build()
    static = fxlazy.materialize(model, example, seed=0)
    path = tmp_path / "model.onnx"

    result = fxlazy.export_onnx(static, example, path, dynamic=["batch", "spatial"])

    assert result.dynamic_dims == {"x": (0, 2, 3)}
    larger = torch.randn(2, 64, 11, 5)
    static.eval()
    with torch.no_grad():
        expected = static(larger)
    (actual,) = _run_onnx(path, ["x"], (larger,))
    torch.testing.assert_close(actual, expected, atol=1e-5, rtol=1e-4)


def test_onnx_torchscript_exporter(tmp_path):
    model, example = CASES["dcgan"].build()
    static = fxlazy.materialize(model, example, seed=0)

    result = fxlazy.export_onnx(static, example, tmp_path / "model.onnx", exporter="torchscript", dynamic="batch")

    assert result.method == "torch.onnx torchscript"
    assert result.dynamic_dims == {"z": (0,)}
    assert len(result.checks) == 2
    assert static.training, "the export restores train mode"


def test_onnx_falls_back_when_dynamo_fails(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="fxlazy"):
        result = fxlazy.export_onnx(SignFlip(), torch.randn(2, 3), tmp_path / "model.onnx")

    assert result.method == "torch.onnx torchscript"
    assert "GuardOnDataDependentSymNode" in result.fallback_reason
    messages = [r.getMessage() for r in caplog.records if r.name == "fxlazy.export.onnx"]
    assert len(messages) == 1
    assert messages[0].startswith("The dynamo ONNX exporter failed on SignFlip (TorchExportError caused by GuardOnDataDependentSymNode")
    assert messages[0].endswith("exporting with the TorchScript-based exporter instead.")
    assert result.checked


def test_onnx_dynamo_only_raises(tmp_path):
    with pytest.raises(fxlazy.ExportError, match=r"torch\.onnx\.export \(dynamo exporter\) failed on SignFlip: TorchExportError caused by GuardOnDataDependentSymNode"):
        fxlazy.export_onnx(SignFlip(), torch.randn(2, 3), tmp_path / "model.onnx", exporter="dynamo")


def test_onnx_parity_error(tmp_path):
    path = tmp_path / "noisy.onnx"
    with pytest.raises(fxlazy.ParityError, match=r"ONNX model .*noisy\.onnx.* run by onnxruntime on example \(2, 3\): output differs .* max abs diff .* max rel diff .* tolerance atol=1e-05, rtol=0\.0001") as raised:
        fxlazy.export_onnx(NoisyHead(), torch.randn(2, 3), path)

    assert raised.value.output == "output"
    assert raised.value.max_abs_diff > 0.1
    assert path.exists()


def test_onnx_check_skipped(tmp_path):
    result = fxlazy.export_onnx(NoisyHead(), torch.randn(2, 3), tmp_path / "noisy.onnx", check=False)

    assert result.checks == ()
    assert (tmp_path / "noisy.onnx").exists()


def test_onnx_unknown_exporter(tmp_path):
    with pytest.raises(ValueError, match=r"exporter must be 'auto', 'dynamo' or 'torchscript', got 'tflite'"):
        fxlazy.export_onnx(NoisyHead(), torch.randn(2, 3), tmp_path / "model.onnx", exporter="tflite")



def test_onnx_runtime_load_failure(tmp_path):
    # onnxruntime's CPU provider has no bfloat16 Gemm kernel (onnxruntime 1.32).
    model = torch.nn.Sequential(torch.nn.LazyLinear(4, dtype=torch.bfloat16))
    path = tmp_path / "bf16.onnx"

    with pytest.raises(fxlazy.ExportError, match=r"onnxruntime cannot load .*bf16\.onnx: .*Gemm.* The ONNX file was written; pass check=False"):
        fxlazy.export_onnx(model, torch.randn(2, 3, dtype=torch.bfloat16), path)

    assert path.exists()


def test_onnx_bfloat16_inputs_not_checked(tmp_path):
    path = tmp_path / "cast.onnx"

    with pytest.raises(fxlazy.ExportError, match=r"inputs \['x'\]: onnxruntime takes NumPy arrays, and NumPy has no bfloat16\. The ONNX file was written; pass check=False"):
        fxlazy.export_onnx(CastToFloat(), torch.randn(2, 3, dtype=torch.bfloat16), path)

    assert path.exists()
