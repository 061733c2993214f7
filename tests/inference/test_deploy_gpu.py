"""GPU deployment paths, checked on a CPU machine up to the point where a GPU is needed.

- ``use_tensorrt`` on a PIR export (inference.json) goes through ``paddle.tensorrt.convert`` with
  input shape ranges from the export's ``Global.image_shape`` (min batch 1, optimum and max
  ``batch_size``) and the requested precision; the converted program is what the predictor
  loads. ``paddle.tensorrt`` (GPU builds only) is replaced by a recording stand-in.
- ``use_fp16`` without TensorRT asks for ``PrecisionType.Half``.
- On this CPU-only build, the report states what actually ran (cpu, fp32), never the request.
"""

import os

import numpy as np
import paddle
import pytest
from paddle import inference

from ppcls.inference import predictor as backends
from ppcls.inference.benchmark import StageTimer
from ppcls.utils import logger

from helpers import FakeTensorRT, RecordingConfig, random_export


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory):
    return random_export(tmp_path_factory.mktemp("gpu_export"), [3, 48, 40])


@pytest.fixture
def fake_gpu(monkeypatch):
    monkeypatch.setattr(backends, "_cuda_available", lambda: True)
    monkeypatch.setattr(backends, "_tensorrt_available", lambda: True)
    fake = FakeTensorRT()
    monkeypatch.setattr(backends, "_import_tensorrt", lambda: fake)
    # the conversion in this process (the real one runs in a child that sees only gpu_id)
    monkeypatch.setattr(backends, "_run_conversion", lambda plan, gpu_id: backends.convert_in_process(plan))
    return fake


def test_tensorrt_on_a_pir_export_converts_with_shape_ranges_gpu(export_dir, fake_gpu, monkeypatch):
    plan = backends.paddle_plan(export_dir, use_gpu=True, use_tensorrt=True, use_fp16=True,
                                batch_size=4, image_shape=[3, 48, 40])
    assert plan["device"] == "gpu" and plan["precision"] == "fp16" and plan["tensorrt"] == "pir"
    trt_plan = plan["tensorrt_plan"]
    assert trt_plan["model_path"] == os.path.join(export_dir, "inference.json")
    assert trt_plan["inputs"] == [{"name": "x", "min_input_shape": [1, 3, 48, 40],
                                   "optim_input_shape": [4, 3, 48, 40],
                                   "max_input_shape": [4, 3, 48, 40], "input_data_type": "float32"}]
    monkeypatch.setattr(inference, "Config", RecordingConfig)
    config = backends.paddle_config(plan=plan)
    # the conversion call, with paddle.tensorrt's own objects built from the plan
    (model_path, trt_config), = fake_gpu.calls
    assert model_path == os.path.join(export_dir, "inference.json")
    assert trt_config.kwargs["precision_mode"] == "FP16"
    assert trt_config.kwargs["workspace_size"] == 1 << 30
    (x,) = trt_config.inputs
    assert x.kwargs == {"min_input_shape": (1, 3, 48, 40), "optim_input_shape": (4, 3, 48, 40),
                        "max_input_shape": (4, 3, 48, 40), "input_data_type": "float32", "name": "x"}
    # the predictor loads the converted program, on the GPU, and never the old-IR TensorRT flags
    assert config.files == (trt_plan["save_model_dir"] + ".json", trt_plan["save_model_dir"] + ".pdiparams")
    names = [name for name, _, _ in config.calls]
    assert ("enable_use_gpu", (8000, 0), {}) in config.calls
    assert "enable_tensorrt_engine" not in names and "enable_memory_optim" not in names


def test_tensorrt_fp32_takes_the_image_shape_from_inference_yml_gpu(export_dir, fake_gpu, monkeypatch):
    """create_predictor passes the export's recorded image shape; batch 1 gives one shape."""
    monkeypatch.setattr(inference, "Config", RecordingConfig)
    monkeypatch.setattr(inference, "create_predictor", lambda config: (_ for _ in ()).throw(
        RuntimeError("needs a GPU")))
    from ppcls.inference.artifacts import read_inference_yml
    from ppcls.utils.errors import UserError

    record = read_inference_yml(export_dir)
    with pytest.raises(UserError, match="Paddle Inference cannot load this model: needs a GPU"):
        backends.create_predictor({"inference_model_dir": export_dir, "use_gpu": True,
                                   "use_tensorrt": True, "use_onnx": "auto"}, record)
    (_, trt_config), = fake_gpu.calls
    assert trt_config.kwargs["precision_mode"] == "FP32"
    assert trt_config.inputs[0].kwargs["min_input_shape"] == (1, 3, 48, 40)
    assert trt_config.inputs[0].kwargs["max_input_shape"] == (1, 3, 48, 40)


def test_fp16_without_tensorrt_uses_half_precision_gpu(export_dir, fake_gpu, monkeypatch):
    monkeypatch.setattr(inference, "Config", RecordingConfig)
    plan = backends.paddle_plan(export_dir, use_gpu=True, use_fp16=True, gpu_mem=500, gpu_id=1)
    assert plan["precision"] == "fp16" and plan["tensorrt"] is None
    config = backends.paddle_config(plan=plan)
    assert ("enable_use_gpu", (500, 1, inference.PrecisionType.Half), {}) in config.calls
    assert not fake_gpu.calls


def test_old_ir_export_keeps_the_tensorrt_engine_flags_gpu(export_dir, fake_gpu, monkeypatch, tmp_path):
    old = tmp_path / "old"
    old.mkdir()
    (old / "inference.pdmodel").write_bytes(b"program")
    (old / "inference.pdiparams").write_bytes(b"weights")
    monkeypatch.setattr(inference, "Config", RecordingConfig)
    config = backends.paddle_config(str(old), use_gpu=True, use_tensorrt=True, batch_size=2)
    (call,) = [c for c in config.calls if c[0] == "enable_tensorrt_engine"]
    assert call[2]["max_batch_size"] == 2
    assert call[2]["precision_mode"] == inference.PrecisionType.Float32
    assert not fake_gpu.calls


@pytest.mark.skipif(paddle.device.is_compiled_with_cuda(), reason="checks the CPU-only build")
def test_gpu_request_on_a_cpu_build_reports_what_ran(export_dir, capsys):
    """TensorRT FP16 asked for on a CPU build: the benchmark report says cpu and fp32."""
    logger.init_logger()
    predictor = backends.create_predictor({"inference_model_dir": export_dir, "use_gpu": True,
                                           "use_tensorrt": True, "use_fp16": True, "batch_size": 2})
    info = predictor.describe()
    assert (info["backend"], info["device"], info["precision"]) == ("paddle_inference", "cpu", "fp32")
    timer = StageTimer(dict(info, model_dir=export_dir), use_auto_log=False)
    x = np.zeros((2, 3, 48, 40), dtype="float32")
    timer.start()
    timer.stamp()
    assert predictor.run(x).shape == (2, 10)
    timer.stamp()
    timer.end(2)
    timer.report()
    out = capsys.readouterr().out
    logger.init_logger()
    assert "device: cpu" in out and "precision: fp32" in out and "backend: paddle_inference" in out
    assert "fp16" not in out.split("Benchmark")[1] and "TensorRT" not in out.split("Benchmark")[1]
