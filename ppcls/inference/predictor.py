"""Inference back-ends for an exported model: Paddle Inference and ONNX Runtime.

This is the one place that configures Paddle Inference (:func:`paddle_config`), so speed
settings are tuned here and nowhere else. Both predictors take a float32 NCHW batch and
return the model's first output as a numpy array.

Notes on Paddle 3.3:

- ``inference.json`` (PIR, Paddle 3) is loaded first; ``inference.pdmodel`` (Paddle 2.x
  exports) is the fallback.
- ``Config.enable_memory_optim()`` is never called: it breaks PIR predictors on 3.3.1.
- oneDNN is on by default in a CPU ``Config``; ``enable_mkldnn: False`` switches it off
  explicitly.
- ``use_gpu`` / ``use_tensorrt`` / ``use_fp16`` on a build without CUDA (or TensorRT) log a
  warning that says what runs instead (CPU, FP32), so a CPU-only run of a GPU config still works.
"""

import os

import numpy as np

from ppcls.utils import logger
from ppcls.utils.errors import ConfigError, UserError

MODEL_FILES = (("inference.json", "inference.pdiparams"),     # Paddle 3 (PIR)
               ("inference.pdmodel", "inference.pdiparams"))  # Paddle 2.x
ONNX_FILE = "inference.onnx"
DEFAULT_GPU_MEM = 8000
TRT_MIN_SUBGRAPH_SIZE = 15
TRT_WORKSPACE = 1 << 30


def find_model_files(model_dir, key="Global.inference_model_dir"):
    """``(model_file, params_file)`` of the export in ``model_dir`` (json first, then pdmodel)."""
    if not isinstance(model_dir, str) or not os.path.isdir(model_dir):
        raise ConfigError(f"{key}: no such folder: {model_dir}")
    for model_name, params_name in MODEL_FILES:
        model_file = os.path.join(model_dir, model_name)
        if os.path.isfile(model_file):
            params_file = os.path.join(model_dir, params_name)
            if not os.path.isfile(params_file):
                raise ConfigError(f"{key}: {model_file} has no weights beside it "
                                  f"(expected {params_file})")
            return model_file, params_file
    present = ", ".join(sorted(os.listdir(model_dir))) or "nothing"
    raise ConfigError(f"{key}: {model_dir} holds no exported model (expected inference.json + "
                      f"inference.pdiparams, or inference.pdmodel + inference.pdiparams; found "
                      f"{present}); export one with tools/export_model.py")


def cpu_threads(requested):
    """``Global.cpu_num_threads`` capped at the CPUs this process may use (None: the back-end's
    default). More threads than cores only oversubscribe them: with PaddleClas's default of 10
    on a 2-core machine, ONNX Runtime runs 6x slower and Paddle Inference 1.5x slower
    (docs/benchmarks.md)."""
    if not requested:
        return None
    try:
        available = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        available = os.cpu_count() or 1
    if int(requested) > available:
        logger.info(f"Global.cpu_num_threads={requested}, but {available} CPUs are available: "
                    f"using {available}")
    return min(int(requested), available)


def _cuda_available():
    import paddle

    return paddle.device.is_compiled_with_cuda() and paddle.device.cuda.device_count() > 0


def _tensorrt_available():
    from paddle import inference

    return tuple(inference.get_trt_compile_version()) != (0, 0, 0)


def resolve_device(use_gpu=False, use_tensorrt=False, use_fp16=False):
    """What can actually run here: ``(use_gpu, use_tensorrt, use_fp16)``, with a warning per downgrade."""
    if use_gpu and not _cuda_available():
        logger.warning("Global.use_gpu=True, but this PaddlePaddle build has no CUDA or no GPU is "
                       "visible: running on CPU")
        use_gpu = False
    if use_tensorrt and not use_gpu:
        logger.warning("Global.use_tensorrt=True needs a GPU (use_gpu=True on a CUDA build): "
                       "TensorRT is not used")
        use_tensorrt = False
    if use_tensorrt and not _tensorrt_available():
        logger.warning("Global.use_tensorrt=True, but this PaddlePaddle build has no TensorRT: "
                       "TensorRT is not used")
        use_tensorrt = False
    if use_fp16 and not use_tensorrt:
        logger.warning("Global.use_fp16=True applies to TensorRT on GPU only: running in FP32")
        use_fp16 = False
    return use_gpu, use_tensorrt, use_fp16


def paddle_config(model_dir, use_gpu=False, gpu_mem=DEFAULT_GPU_MEM, gpu_id=0, enable_mkldnn=True,
                  cpu_num_threads=None, ir_optim=True, use_tensorrt=False, use_fp16=False,
                  batch_size=1, enable_profile=False):
    """The ``paddle.inference.Config`` for the export in ``model_dir``."""
    from paddle import inference

    model_file, params_file = find_model_files(model_dir)
    use_gpu, use_tensorrt, use_fp16 = resolve_device(use_gpu, use_tensorrt, use_fp16)
    config = inference.Config(model_file, params_file)
    if use_gpu:
        config.enable_use_gpu(int(gpu_mem), int(gpu_id))
        if use_tensorrt:
            precision = inference.PrecisionType.Half if use_fp16 else inference.PrecisionType.Float32
            config.enable_tensorrt_engine(workspace_size=TRT_WORKSPACE, max_batch_size=int(batch_size),
                                          min_subgraph_size=TRT_MIN_SUBGRAPH_SIZE,
                                          precision_mode=precision, use_static=False,
                                          use_calib_mode=False)
    else:
        config.disable_gpu()
        if enable_mkldnn:
            config.enable_mkldnn()
        else:
            config.disable_mkldnn()
        threads = cpu_threads(cpu_num_threads)
        if threads:
            config.set_cpu_math_library_num_threads(threads)
    config.switch_ir_optim(bool(ir_optim))
    if enable_profile:
        config.enable_profile()
    config.disable_glog_info()
    return config


class PaddlePredictor:
    """A Paddle Inference predictor: ``run(batch) -> first output``."""

    backend = "paddle_inference"

    def __init__(self, model_dir, **options):
        from paddle import inference

        self.model_dir = model_dir
        self.config = paddle_config(model_dir, **options)
        try:
            self.predictor = inference.create_predictor(self.config)
        except (RuntimeError, ValueError, OSError) as err:
            message = " ".join(str(err).split())[:300]
            raise UserError(f"{model_dir}: Paddle Inference cannot load this model: {message}") from None
        self.input = self.predictor.get_input_handle(self.predictor.get_input_names()[0])
        self.output = self.predictor.get_output_handle(self.predictor.get_output_names()[0])

    def run(self, batch):
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        self.input.reshape(list(batch.shape))
        self.input.copy_from_cpu(batch)
        self.predictor.run()
        return self.output.copy_to_cpu()


class OnnxPredictor:
    """An ONNX Runtime session on CPU over ``model_dir/inference.onnx``: ``run(batch) -> first output``."""

    backend = "onnxruntime"

    def __init__(self, model_dir, cpu_num_threads=None, **_ignored):
        try:
            import onnxruntime
        except ImportError:
            raise UserError("Global.use_onnx=True needs the optional package onnxruntime: "
                            "pip install onnxruntime") from None
        path = os.path.join(model_dir, ONNX_FILE)
        if not os.path.isfile(path):
            raise ConfigError(f"Global.use_onnx=True, but {path} does not exist; convert the export "
                              f"first: python tools/export_model.py -c <config> -o "
                              f"Global.save_inference_dir={model_dir} -o Global.export_onnx=True "
                              f"(or run paddle2onnx, see deploy/README.md)")
        options = onnxruntime.SessionOptions()
        options.log_severity_level = 3
        threads = cpu_threads(cpu_num_threads)
        if threads:
            options.intra_op_num_threads = threads
        try:
            self.session = onnxruntime.InferenceSession(path, sess_options=options,
                                                        providers=["CPUExecutionProvider"])
        except Exception as err:  # onnxruntime raises its own exception types for bad files
            message = " ".join(str(err).split())[:300]
            raise UserError(f"{path}: ONNX Runtime cannot load this model: {message}") from None
        self.model_dir = model_dir
        self.config = None
        self.input_name = self.session.get_inputs()[0].name

    def run(self, batch):
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        return self.session.run(None, {self.input_name: batch})[0]


def _onnx_runnable(model_dir):
    """``(True, "")`` when ONNX Runtime can run ``model_dir`` here, else ``(False, why not)``."""
    if not os.path.isfile(os.path.join(model_dir, ONNX_FILE)):
        return False, f"{model_dir} has no {ONNX_FILE} (export with -o Global.export_onnx=True)"
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False, "the optional package onnxruntime is not installed"
    return True, ""


def choose_backend(g):
    """``"onnxruntime"`` or ``"paddle_inference"`` for a deployment ``Global`` section.

    ``use_onnx: auto`` (the default of deploy/configs): on CPU, ONNX Runtime when the export
    has ``inference.onnx`` and onnxruntime is installed, since on CPU it is the fastest
    back-end with the same outputs (docs/benchmarks.md: 1.6x faster than Paddle Inference
    with oneDNN at 1 thread, 2.3x at 2 threads, outputs within 3e-5); Paddle Inference
    otherwise, and whenever ``use_gpu`` is set. ``True`` requires ONNX Runtime, ``False``
    Paddle Inference.
    """
    choice = g.get("use_onnx", "auto")
    if choice == "auto":
        if g.get("use_gpu", False):
            return "paddle_inference"  # the GPU back-end (on a CPU-only build it says so and runs on CPU)
        ok, why = _onnx_runnable(g["inference_model_dir"])
        if ok:
            logger.info("Global.use_onnx=auto: ONNX Runtime (the fastest CPU back-end; "
                        "-o Global.use_onnx=False runs Paddle Inference)")
            return "onnxruntime"
        logger.info(f"Global.use_onnx=auto: Paddle Inference, because {why}")
        return "paddle_inference"
    if choice is True or choice is False:
        return "onnxruntime" if choice else "paddle_inference"
    raise ConfigError(f"Global.use_onnx expects True, False or auto, got {choice!r}")


def create_predictor(global_cfg):
    """The predictor a deployment config's ``Global`` section asks for."""
    g = global_cfg or {}
    model_dir = g.get("inference_model_dir")
    if model_dir is None:
        raise ConfigError("Global.inference_model_dir is missing: the folder of an exported model")
    if choose_backend(g) == "onnxruntime":
        if g.get("use_gpu", False) and g.get("use_onnx") is True:
            logger.warning("Global.use_onnx=True runs ONNX Runtime on CPU; Global.use_gpu is ignored")
        return OnnxPredictor(model_dir, cpu_num_threads=g.get("cpu_num_threads"))
    return PaddlePredictor(
        model_dir,
        use_gpu=g.get("use_gpu", False),
        gpu_mem=g.get("gpu_mem", DEFAULT_GPU_MEM),
        enable_mkldnn=g.get("enable_mkldnn", True),
        cpu_num_threads=g.get("cpu_num_threads"),
        ir_optim=g.get("ir_optim", True),
        use_tensorrt=g.get("use_tensorrt", False),
        use_fp16=g.get("use_fp16", False),
        batch_size=g.get("batch_size", 1),
        enable_profile=g.get("enable_profile", False),
    )
