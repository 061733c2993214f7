"""The back-ends of the phone exports (:mod:`ppcls.inference.mobile`), registered in
:data:`ppcls.inference.predictor.BACKENDS` (this module is imported by ``ppcls.inference``):

- ``ort_format``: ONNX Runtime over ``inference.ort`` (ONNX Runtime Mobile's format), on CPU;
- ``litert``: LiteRT (``ai-edge-litert``'s interpreter, XNNPACK) over ``inference.tflite``.

With ``Global.use_onnx: auto`` on CPU, a folder holding one of these files runs on its back-end
(ppcls.inference.predictor's preference table). A verified ``inference.tflite`` selects LiteRT
even when ai-edge-litert is missing, whose constructor then names the pip command.
"""

import importlib.util
import os

import numpy as np

from ppcls.inference.artifacts import file_status, read_inference_yml
from ppcls.inference.predictor import BACKENDS, cpu_threads, ort_session
from ppcls.utils.errors import ConfigError, UserError

TFLITE_FILE = "inference.tflite"
ORT_FILE = "inference.ort"
LITERT_PIP = "pip install ai-edge-litert==2.3.0"


@BACKENDS.register(name="ort_format")
class OrtFormatPredictor:
    """ONNX Runtime over ``inference.ort`` (the ORT format of ONNX Runtime Mobile), on CPU."""

    backend = "onnxruntime (ORT format)"
    keys = ("cpu_num_threads", "precision")
    auto_note = "the export holds inference.ort (ONNX Runtime Mobile's format)"

    @classmethod
    def available(cls, model_dir, record=None):
        if importlib.util.find_spec("onnxruntime") is None:
            return False, "the optional package onnxruntime is not installed"
        return file_status(model_dir, record, ORT_FILE)

    def __init__(self, model_dir, cpu_num_threads=None, precision=None):
        path = os.path.join(model_dir, ORT_FILE)
        if not os.path.isfile(path):
            raise ConfigError(f"Global.inference_model_dir: {model_dir} has no {ORT_FILE} (nor a "
                              f"usable inference.onnx)")
        self.threads = cpu_threads(cpu_num_threads)
        self.session = ort_session(path, self.threads, what="ORT-format model")
        self.precision = precision or "fp32"
        self.input_name = self.session.get_inputs()[0].name
        self.config = None

    def run(self, batch):
        return self.session.run(None, {self.input_name: np.ascontiguousarray(batch, np.float32)})[0]

    def describe(self):
        return {"backend": self.backend, "device": "cpu", "precision": self.precision,
                "cpu_num_threads": self.threads or "default (all cores)"}


def _litert_interpreter():
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        raise UserError(f"a .tflite export runs on LiteRT, which is not installed: {LITERT_PIP}") from None
    return Interpreter


@BACKENDS.register(name="litert")
class LiteRTPredictor:
    """LiteRT (``ai-edge-litert``'s interpreter, XNNPACK on CPU) over ``inference.tflite``.

    ``run`` takes the NCHW float batch of the export's preprocessing and feeds it in the
    model's layout (``Global.input_layout``, NHWC from onnx2tf); a full-integer model's int8
    input and output are (de)quantized with the scale and zero point stored in the model.
    """

    backend = "LiteRT"
    keys = ("cpu_num_threads", "precision")
    auto_note = "the export holds inference.tflite"

    @classmethod
    def available(cls, model_dir, record=None):
        # a verified inference.tflite selects LiteRT even when ai-edge-litert is missing: the
        # constructor then names the pip command, rather than another back-end failing
        return file_status(model_dir, record, TFLITE_FILE)

    def __init__(self, model_dir, cpu_num_threads=None, precision=None):
        Interpreter = _litert_interpreter()
        path = os.path.join(model_dir, TFLITE_FILE)
        if not os.path.isfile(path):
            raise ConfigError(f"Global.inference_model_dir: {model_dir} has no {TFLITE_FILE}")
        record = read_inference_yml(model_dir) or {}
        self.layout = (record.get("Global") or {}).get("input_layout", "NHWC")
        if self.layout not in ("NHWC", "NCHW"):
            raise ConfigError(f"{model_dir}/inference.yml: Global.input_layout expects NHWC or NCHW, "
                              f"got {self.layout!r}")
        self.threads = cpu_threads(cpu_num_threads)
        try:
            self.interpreter = Interpreter(model_path=path, num_threads=self.threads)
        except (ValueError, RuntimeError) as err:
            raise UserError(f"{path}: LiteRT cannot load this model: "
                            f"{' '.join(str(err).split())[:300]}") from None
        self.input = self.interpreter.get_input_details()[0]
        self.output = self.interpreter.get_output_details()[0]
        self.shape = None
        self.precision = precision or "fp32"
        self.config = None

    def _prepare(self, shape):
        if self.shape != shape:
            self.interpreter.resize_tensor_input(self.input["index"], list(shape))
            self.interpreter.allocate_tensors()
            self.input = self.interpreter.get_input_details()[0]
            self.output = self.interpreter.get_output_details()[0]
            self.shape = shape

    def run(self, batch):
        x = np.asarray(batch, dtype=np.float32)
        if self.layout == "NHWC":
            x = x.transpose(0, 2, 3, 1)
        self._prepare(tuple(x.shape))
        dtype = self.input["dtype"]
        if dtype != np.float32:
            scale, zero = self.input["quantization"]
            info = np.iinfo(dtype)
            x = np.clip(np.round(x / scale) + zero, info.min, info.max).astype(dtype)
        self.interpreter.set_tensor(self.input["index"], np.ascontiguousarray(x))
        self.interpreter.invoke()
        y = self.interpreter.get_tensor(self.output["index"])
        if y.dtype != np.float32:
            scale, zero = self.output["quantization"]
            y = (y.astype(np.float32) - zero) * scale
        return y

    def describe(self):
        precision = self.precision
        if precision == "fp16":
            precision = "fp16 weights, fp32 compute"
        return {"backend": self.backend, "device": "cpu (XNNPACK)", "precision": precision,
                "input_layout": self.layout, "cpu_num_threads": self.threads or "default"}
