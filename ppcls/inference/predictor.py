"""Inference back-ends for an exported model: a small registry (:data:`BACKENDS`).

Each back-end is one registered class with

- ``available(model_dir, record)`` -> ``(True, "")`` or ``(False, why not)``: can it run this
  export here (files present and matching ``inference.yml``'s hashes, package installed);
- ``keys``: the ``Global`` keys it takes, and ``__init__(model_dir, **those keys)``
  (:func:`create_predictor` passes exactly these from the deployment config's ``Global``);
- ``run(batch)``: a float32 NCHW batch in, the model's first output out (numpy);
- ``describe()``: what actually runs (back-end, device, precision, threads, ...), never what was
  requested: a GPU option on a CPU build reports ``cpu`` / ``fp32``.

Registered: ``paddle_inference`` (Paddle Inference: CPU with oneDNN, GPU, GPU + TensorRT) and
``onnxruntime`` (ONNX Runtime on CPU; it also runs the INT8 exports of
``deploy/slim/quant_post_static.py``, whose precision comes from their ``inference.yml``).
:func:`choose_backend` maps ``Global.use_onnx`` (and ``use_gpu``) to an ordered list of names
and takes the first available one. A new back-end is one decorated class and one entry there.

Paddle Inference is configured in one place (:func:`paddle_plan` -> :func:`paddle_config`):

- ``inference.json`` (PIR, Paddle 3) is loaded first; ``inference.pdmodel`` (Paddle 2.x) is the
  fallback.
- ``Config.enable_memory_optim()`` is never called: it breaks PIR predictors on 3.3.1.
- oneDNN is on by default on CPU; ``enable_mkldnn: False`` switches it off.
- GPU + ``use_tensorrt``: for a PIR export, through Paddle 3's PIR TensorRT path
  (``paddle.tensorrt.convert`` with input shape ranges from the export's image shape:
  min batch 1, optimum and max ``batch_size``), run in a child process that sees only card
  ``gpu_id``; the converted program is cached in ``<export>/_tensorrt/<key>/`` (key: the
  export's hashes, shapes, precision, versions, GPU name); a failed conversion warns once and
  runs plain GPU (:func:`convert_for_tensorrt`). ``Config.enable_tensorrt_engine`` only for old-IR
  exports (it sets flags the PIR predictor never reads). GPU + ``use_fp16`` without TensorRT:
  ``PrecisionType.Half``.
- ``use_gpu`` / ``use_tensorrt`` / ``use_fp16`` on a build without CUDA (or TensorRT) log one
  warning each and run on the CPU in FP32, so a CPU-only run of a GPU config still works.
"""

import atexit
import hashlib
import json
import os
import re
import shutil
import tempfile

import numpy as np

from ppcls.inference.artifacts import (MODEL_FILES, ONNX_FILE, file_status, find_model_files,
                                      read_inference_yml)
from ppcls.utils import logger
from ppcls.utils.errors import ConfigError, UserError
from ppcls.utils.global_config import DEFAULT_IMAGE_SHAPE, default_of, section_value
from ppcls.utils.hashing import file_sha256
from ppcls.utils.registry import Registry

DEFAULT_GPU_MEM = default_of("gpu_mem")  # MB
TRT_MIN_SUBGRAPH_SIZE = 3
TRT_WORKSPACE = 1 << 30

BACKENDS = Registry("inference back-end")


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
    if use_fp16 and not use_gpu:
        logger.warning("Global.use_fp16=True needs a GPU (TensorRT FP16 or Paddle Inference "
                       "half precision): running in FP32")
        use_fp16 = False
    return use_gpu, use_tensorrt, use_fp16


# ------------------------------------------------------------------ Paddle Inference settings

def tensorrt_plan(model_file, image_shape, batch_size=1, use_fp16=False, save_model_dir=None):
    """What ``paddle.tensorrt.convert`` gets for a PIR export, as plain data.

    One input ``x`` with dynamic batch: min ``[1, C, H, W]``, optimum and max
    ``[batch_size, C, H, W]`` (``image_shape`` is the export's ``Global.image_shape``);
    precision FP16 or FP32; the converted program is saved under ``save_model_dir``.
    """
    shape = [int(v) for v in (image_shape or DEFAULT_IMAGE_SHAPE)]
    batch = max(1, int(batch_size))
    return {"model_path": model_file,
            "inputs": [{"name": "x", "min_input_shape": [1] + shape,
                        "optim_input_shape": [batch] + shape, "max_input_shape": [batch] + shape,
                        "input_data_type": "float32"}],
            "precision_mode": "FP16" if use_fp16 else "FP32",
            "min_subgraph_size": TRT_MIN_SUBGRAPH_SIZE,
            "workspace_size": TRT_WORKSPACE,
            "save_model_dir": save_model_dir}


def build_tensorrt_config(plan, trt):
    """``trt.TensorRTConfig`` for ``plan`` (``trt``: the ``paddle.tensorrt`` module, or a stand-in)."""
    inputs = [trt.Input(min_input_shape=tuple(i["min_input_shape"]),
                        optim_input_shape=tuple(i["optim_input_shape"]),
                        max_input_shape=tuple(i["max_input_shape"]),
                        input_data_type=i["input_data_type"], name=i["name"])
              for i in plan["inputs"]]
    config = trt.TensorRTConfig(inputs=inputs, min_subgraph_size=plan["min_subgraph_size"],
                                save_model_dir=plan["save_model_dir"],
                                precision_mode=getattr(trt.PrecisionMode, plan["precision_mode"]),
                                workspace_size=plan["workspace_size"])
    return config


class TensorRTFailed(UserError):
    """The TensorRT conversion could not run here (no ``paddle.tensorrt``, no ``tensorrt``
    package, an unsupported op, a version mismatch, out of memory, ...)."""


def _import_tensorrt():
    try:
        import paddle.tensorrt as trt
    except ImportError as err:
        missing = getattr(err, "name", "") or ""
        if missing == "tensorrt" or (missing.startswith("tensorrt") and "paddle" not in missing):
            hint = "pip install tensorrt (the version this PaddlePaddle build was compiled with)"
        else:
            hint = "install a PaddlePaddle GPU build with TensorRT support"
        raise TensorRTFailed(f"Global.use_tensorrt=True: cannot import paddle.tensorrt ({err}); "
                             f"{hint}") from None
    return trt


TRT_CACHE_DIR = "_tensorrt"  # beside the export's files: <inference_model_dir>/_tensorrt/<key>/
TRT_TEMP_PREFIX = "ppcls_trt_"
TRT_ERROR_TAG = "ppcls-tensorrt-error: "


def tensorrt_cache_key(model_file, params_file, inputs, precision, extra=()):
    """The cache key of a converted program: the export's two files (content hashes), the input
    shape ranges, the precision, and what else decides the engines (``extra``: the Paddle and
    TensorRT versions, the GPU's name)."""
    record = {"model": file_sha256(model_file), "params": file_sha256(params_file),
              "inputs": inputs, "precision": precision, "extra": list(extra)}
    return hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()[:24]


def _tensorrt_environment(gpu_id):
    """What besides the export decides a converted program: Paddle's version, the TensorRT
    version it was built with and the card's name (engines are built for one GPU model)."""
    import paddle

    extra = [paddle.__version__]
    try:
        from paddle import inference

        extra.append(".".join(str(v) for v in inference.get_trt_compile_version()))
    except Exception:
        pass
    try:
        extra.append(paddle.device.cuda.get_device_name(gpu_id))
    except Exception:
        pass
    return extra


def _tensorrt_cache_root(model_dir):
    """``<model_dir>/_tensorrt`` when it can be written, else a temp folder removed at exit."""
    root = os.path.join(model_dir, TRT_CACHE_DIR)
    try:
        os.makedirs(root, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=root, prefix=".probe-")
        probe.close()
        return root
    except OSError:
        temp = tempfile.mkdtemp(prefix=TRT_TEMP_PREFIX)
        atexit.register(shutil.rmtree, temp, True)
        logger.warning(f"{model_dir} is not writable: the TensorRT program is converted into "
                       f"{temp} (removed at exit) and not cached")
        return temp


def count_tensorrt_ops(program_or_json):
    """``(TensorRT subgraphs, ops left to Paddle)`` of a converted PIR program (the program
    object, or the text of its ``.json``). ``None`` entries when it cannot be read."""
    if hasattr(program_or_json, "global_block"):
        names = [op.name() for op in program_or_json.global_block().ops]
    else:
        # PIR json: ops are {"#": "<dialect>.<name>", ...}; "0.t_*"/"0.a_*" are types/attributes
        names = re.findall(r'"#"\s*:\s*"[0-9]+\.([A-Za-z0-9_]+)"', program_or_json or "")
        names = [n for n in names if not n.startswith(("t_", "a_"))]
    skip = {"data", "feed", "fetch", "parameter", "constant", "shadow_output", "combine", "split",
            "full", "builtin_combine", "builtin_split"}
    trt = sum(n.endswith("tensorrt_engine") for n in names)
    rest = sum(not n.endswith("tensorrt_engine") and n.split(".")[-1] not in skip for n in names)
    return trt, rest


def convert_in_process(plan):
    """Run ``paddle.tensorrt.convert`` for ``plan`` in this process (GPU 0 of those visible);
    returns ``{"subgraphs": n, "paddle_ops": m}``. Tests replace ``_import_tensorrt``."""
    trt = _import_tensorrt()
    program = trt.convert(plan["model_path"], build_tensorrt_config(plan, trt))
    if not hasattr(program, "global_block"):
        with open(plan["save_model_dir"] + ".json") as f:
            program = f.read()
    subgraphs, rest = count_tensorrt_ops(program)
    return {"subgraphs": subgraphs, "paddle_ops": rest}


def _tensorrt_child():
    """``python -c ...`` entry of the conversion process: the plan (json) on argv[1]."""
    import sys

    with open(sys.argv[1]) as f:
        plan = json.load(f)
    try:
        info = convert_in_process(plan)
    except BaseException as err:  # noqa: B902 - everything becomes one line for the parent
        message = " ".join(str(err).split())[:500] or type(err).__name__
        sys.stderr.write(f"\n{TRT_ERROR_TAG}{type(err).__name__}: {message}\n")
        sys.exit(3)
    with open(plan["save_model_dir"] + ".info.json", "w") as f:
        json.dump(info, f)


def _visible_card(gpu_id):
    """``CUDA_VISIBLE_DEVICES`` for a process whose GPU 0 is this process's card ``gpu_id``."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible:
        cards = [c.strip() for c in visible.split(",") if c.strip()]
        if 0 <= gpu_id < len(cards):
            return cards[gpu_id]
    return str(gpu_id)


def run_conversion(plan, gpu_id=0):
    """Convert in a child process that sees only card ``gpu_id`` (``paddle.tensorrt.convert``
    always uses GPU 0), so ``Global.gpu_id`` is honoured and a crash, an exit or an
    out-of-memory in TensorRT cannot take the predictor's process down. Returns the info dict."""
    import subprocess
    import sys

    plan_file = plan["save_model_dir"] + ".plan.json"
    with open(plan_file, "w") as f:
        json.dump(plan, f)
    env = dict(os.environ, CUDA_VISIBLE_DEVICES=_visible_card(gpu_id))
    package_root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
    code = "from ppcls.inference.predictor import _tensorrt_child; _tensorrt_child()"
    proc = subprocess.run([sys.executable, "-c", code, plan_file], env=env,
                          capture_output=True, text=True)
    if proc.returncode != 0:
        lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
        tagged = [ln[len(TRT_ERROR_TAG):] for ln in lines if ln.startswith(TRT_ERROR_TAG)]
        why = tagged[-1] if tagged else (lines[-1] if lines else f"exit status {proc.returncode}")
        raise TensorRTFailed(why)
    with open(plan["save_model_dir"] + ".info.json") as f:
        return json.load(f)


def convert_for_tensorrt(plan, gpu_id=0):
    """The converted ``(model_file, params_file, info)`` for ``plan``: from the cache
    (``plan["save_model_dir"]``, keyed by export, shapes and precision) when it is there, else
    converted by :func:`run_conversion` into a temp folder beside it, which is renamed into
    place only when the conversion succeeded and removed in every case."""
    prefix = plan["save_model_dir"]
    final_dir = os.path.dirname(prefix)
    files = (prefix + ".json", prefix + ".pdiparams")
    info_file = prefix + ".info.json"
    if all(os.path.isfile(f) for f in files + (info_file,)):
        with open(info_file) as f:
            info = json.load(f)
        logger.info(f"TensorRT: the converted program cached in {final_dir} is used")
        return files + (dict(info, cached=True),)
    parent = os.path.dirname(final_dir)
    os.makedirs(parent, exist_ok=True)
    work = tempfile.mkdtemp(prefix=TRT_TEMP_PREFIX, dir=parent)
    try:
        work_plan = dict(plan, save_model_dir=os.path.join(work, os.path.basename(prefix)))
        logger.info(f"TensorRT: converting {plan['model_path']} on GPU {gpu_id} "
                    f"({plan['precision_mode']}, batch {plan['inputs'][0]['min_input_shape'][0]}.."
                    f"{plan['inputs'][0]['max_input_shape'][0]}); cached in {final_dir}")
        info = _run_conversion(work_plan, gpu_id)
        with open(work_plan["save_model_dir"] + ".info.json", "w") as f:
            json.dump(info, f)
        for name in os.listdir(work):
            if name.endswith(".plan.json"):
                os.remove(os.path.join(work, name))
        try:
            os.replace(work, final_dir)
        except OSError:  # another process cached the same key first: keep theirs
            if not os.path.isfile(files[0]):
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return files + (dict(info, cached=False),)


def _run_conversion(plan, gpu_id):
    """The conversion itself (a child process); tests put :func:`convert_in_process` here."""
    return run_conversion(plan, gpu_id)


def paddle_plan(model_dir, use_gpu=default_of("use_gpu"), gpu_mem=DEFAULT_GPU_MEM, gpu_id=0,
                enable_mkldnn=default_of("enable_mkldnn"), cpu_num_threads=default_of("cpu_num_threads"),
                ir_optim=default_of("ir_optim"), use_tensorrt=default_of("use_tensorrt"),
                use_fp16=default_of("use_fp16"), batch_size=default_of("batch_size"),
                enable_profile=default_of("enable_profile"), image_shape=None):
    """The Paddle Inference settings that will actually be used, as a dict (after downgrades)."""
    model_file, params_file = find_model_files(model_dir)
    use_gpu, use_tensorrt, use_fp16 = resolve_device(use_gpu, use_tensorrt, use_fp16)
    plan = {"model_file": model_file, "params_file": params_file, "ir_optim": bool(ir_optim),
            "enable_profile": bool(enable_profile), "device": "gpu" if use_gpu else "cpu",
            "precision": "fp16" if use_fp16 else "fp32", "tensorrt": None}
    if use_gpu:
        plan.update(gpu_mem=int(gpu_mem), gpu_id=int(gpu_id))
        if use_tensorrt:
            pir = model_file.endswith(".json")
            plan["tensorrt"] = "pir" if pir else "legacy"
            if pir:
                trt_plan = tensorrt_plan(model_file, image_shape, batch_size, use_fp16)
                key = tensorrt_cache_key(model_file, params_file, trt_plan["inputs"],
                                         trt_plan["precision_mode"],
                                         _tensorrt_environment(int(gpu_id)))
                trt_plan["save_model_dir"] = os.path.join(
                    _tensorrt_cache_root(os.path.dirname(os.path.abspath(model_file))), key,
                    "inference")
                plan["tensorrt_plan"] = trt_plan
            else:
                plan["trt_max_batch_size"] = max(1, int(batch_size))
    else:
        plan.update(enable_mkldnn=bool(enable_mkldnn), cpu_num_threads=cpu_threads(cpu_num_threads))
    return plan


def paddle_config(model_dir=None, plan=None, **options):
    """The ``paddle.inference.Config`` for ``plan`` (or for ``paddle_plan(model_dir, **options)``)."""
    from paddle import inference

    plan = plan or paddle_plan(model_dir, **options)
    model_file, params_file = plan["model_file"], plan["params_file"]
    if plan["tensorrt"] == "pir":
        try:
            model_file, params_file, plan["tensorrt_info"] = convert_for_tensorrt(
                plan["tensorrt_plan"], plan.get("gpu_id", 0))
        except Exception as err:  # any failure of the conversion: plain GPU, one warning
            why = " ".join(str(err).split())[:300] or type(err).__name__
            logger.warning(f"TensorRT conversion failed ({why}): running on GPU "
                           f"{plan.get('gpu_id', 0)} without TensorRT")
            plan["tensorrt"], plan["tensorrt_info"] = None, {"failed": why}
        else:
            if not plan["tensorrt_info"].get("subgraphs"):
                logger.warning("TensorRT: no subgraph of this model went to TensorRT (0 "
                               "tensorrt_engine ops): it runs on Paddle's GPU kernels")
    config = inference.Config(model_file, params_file)
    half = plan["precision"] == "fp16"
    if plan["device"] == "gpu":
        if plan["tensorrt"] is None and half:  # FP16 without TensorRT
            config.enable_use_gpu(plan["gpu_mem"], plan["gpu_id"], inference.PrecisionType.Half)
        else:
            config.enable_use_gpu(plan["gpu_mem"], plan["gpu_id"])
        if plan["tensorrt"] == "legacy":
            config.enable_tensorrt_engine(
                workspace_size=TRT_WORKSPACE, max_batch_size=plan["trt_max_batch_size"],
                min_subgraph_size=TRT_MIN_SUBGRAPH_SIZE,
                precision_mode=inference.PrecisionType.Half if half else inference.PrecisionType.Float32,
                use_static=False, use_calib_mode=False)
    else:
        config.disable_gpu()
        if plan["enable_mkldnn"]:
            config.enable_mkldnn()
        else:
            config.disable_mkldnn()
        if plan["cpu_num_threads"]:
            config.set_cpu_math_library_num_threads(plan["cpu_num_threads"])
    config.switch_ir_optim(plan["ir_optim"])
    if plan["enable_profile"]:
        config.enable_profile()
    config.disable_glog_info()
    return config


# ------------------------------------------------------------------ the back-ends

def _checked(model_dir, record, name):
    """``(ok, why)``: ``name`` exists in ``model_dir`` and matches its ``inference.yml`` hash."""
    return file_status(model_dir, record, name)


@BACKENDS.register(name="paddle_inference")
class PaddlePredictor:
    """Paddle Inference: ``run(batch) -> first output``."""

    backend = "paddle_inference"
    keys = ("use_gpu", "gpu_mem", "gpu_id", "enable_mkldnn", "cpu_num_threads", "ir_optim",
            "use_tensorrt", "use_fp16", "batch_size", "enable_profile", "image_shape")  # paddle_plan's
    auto_note = "the GPU back-end, and on CPU when the export has no usable inference.onnx"

    @classmethod
    def available(cls, model_dir, record=None):
        for model_name, params_name in MODEL_FILES:
            if os.path.isfile(os.path.join(model_dir, model_name)):
                for name in (model_name, params_name):
                    ok, why = _checked(model_dir, record, name)
                    if not ok:
                        return False, why
                return True, ""
        return False, f"{model_dir} holds no Paddle model (inference.json or inference.pdmodel)"

    def __init__(self, model_dir, options=None, **settings):
        from paddle import inference

        options = dict(options or {}, **settings)
        unknown = sorted(set(options) - set(self.keys))
        if unknown:
            raise TypeError(f"PaddlePredictor does not take {', '.join(unknown)}; it takes: "
                            f"{', '.join(self.keys)}")
        self.model_dir = model_dir
        self.plan = paddle_plan(model_dir, **options)
        self.config = paddle_config(plan=self.plan)
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

    def describe(self):
        plan, config = self.plan, self.config
        info = {"backend": self.backend, "device": plan["device"],
                "precision": plan["precision"] + _tensorrt_note(plan),
                "ir_optim": config.ir_optim(), "inference_config": config}
        if plan["device"] == "cpu":
            info.update(enable_mkldnn=config.mkldnn_enabled(),
                        cpu_num_threads=config.cpu_math_library_num_threads())
        return info


def _tensorrt_note(plan):
    """What TensorRT does in this predictor, for ``describe()``: the number of TensorRT
    subgraphs and of ops left to Paddle (PIR), or nothing when TensorRT is not used."""
    if plan["tensorrt"] == "legacy":
        return " (TensorRT, old-IR engine: subgraphs decided when the predictor is built)"
    info = plan.get("tensorrt_info") or {}
    if plan["tensorrt"] != "pir" or "subgraphs" not in info:
        return ""
    return (f" (TensorRT: {info['subgraphs']} subgraph(s), {info['paddle_ops']} op(s) on "
            "Paddle kernels)")





def ort_session(path, threads, what="model"):
    """An ONNX Runtime CPU session over ``path`` (an ``.onnx`` or ``.ort`` file) with ``threads``
    intra-op threads (None: all cores); a file it cannot load is one ``UserError``."""
    import onnxruntime

    session_options = onnxruntime.SessionOptions()
    session_options.log_severity_level = 3
    if threads:
        session_options.intra_op_num_threads = threads
    try:
        return onnxruntime.InferenceSession(path, sess_options=session_options,
                                            providers=["CPUExecutionProvider"])
    except Exception as err:  # onnxruntime raises its own exception types for bad files
        message = " ".join(str(err).split())[:300]
        raise UserError(f"{path}: ONNX Runtime cannot load this {what}: {message}") from None


@BACKENDS.register(name="onnxruntime")
class OnnxPredictor:
    """ONNX Runtime on CPU over ``model_dir/inference.onnx``: ``run(batch) -> first output``."""

    backend = "onnxruntime"
    keys = ("cpu_num_threads", "precision")
    auto_note = "the fastest CPU back-end; -o Global.use_onnx=False runs Paddle Inference"

    @classmethod
    def available(cls, model_dir, record=None):
        try:
            import onnxruntime  # noqa: F401
        except ImportError:
            return False, "the optional package onnxruntime is not installed"
        return _checked(model_dir, record, ONNX_FILE)

    def __init__(self, model_dir, cpu_num_threads=None, precision=None):
        try:
            import onnxruntime  # noqa: F401 - ort_session uses it; a missing package is this line
        except ImportError:
            raise UserError("Global.use_onnx=True needs the optional package onnxruntime: "
                            "pip install onnxruntime") from None
        path = os.path.join(model_dir, ONNX_FILE)
        if not os.path.isfile(path):
            raise ConfigError(f"Global.use_onnx=True, but {path} does not exist; convert the export "
                              f"first: python tools/export_model.py -c <config> -o "
                              f"Global.save_inference_dir={model_dir} (or run paddle2onnx, see "
                              f"deploy/README.md)")
        self.threads = cpu_threads(cpu_num_threads)
        self.session = ort_session(path, self.threads)
        self.model_dir = model_dir
        self.config = None
        self.precision = precision or "fp32"
        self.input_name = self.session.get_inputs()[0].name

    def run(self, batch):
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        return self.session.run(None, {self.input_name: batch})[0]

    def describe(self):
        return {"backend": self.backend, "device": "cpu", "precision": self.precision,
                "cpu_num_threads": self.threads or "default (all cores)"}


# use_onnx -> back-ends to try, in order (CPU); on GPU Paddle Inference is the GPU back-end
# (auto on CPU also runs the phone exports of ppcls.inference.mobile: ort_format, litert)
_PREFERENCE = {"auto": ("onnxruntime", "ort_format", "litert", "paddle_inference"),
               True: ("onnxruntime",), False: ("paddle_inference",)}
_PREFERENCE_GPU = {"auto": ("paddle_inference",), True: ("onnxruntime",), False: ("paddle_inference",)}


def _preference(g):
    choice = section_value(g, "use_onnx")
    table = _PREFERENCE_GPU if section_value(g, "use_gpu") else _PREFERENCE
    if isinstance(choice, (bool, str)) and choice in table and not (
            isinstance(choice, str) and choice != "auto"):
        return choice, table[choice]
    raise ConfigError(f"Global.use_onnx expects True, False or auto, got {choice!r}")


def choose_backend(g, record=None):
    """The registered back-end name a deployment ``Global`` section gets.

    ``use_onnx: auto`` (the default of deploy/configs): on CPU, ONNX Runtime when the export
    has a verified ``inference.onnx`` and onnxruntime is installed (the fastest CPU back-end,
    docs/benchmarks.md), else Paddle Inference; on GPU (``use_gpu``) Paddle Inference. ``True``
    requires ONNX Runtime, ``False`` Paddle Inference.
    """
    choice, names = _preference(g)
    model_dir = g["inference_model_dir"]
    if record is None:
        record = read_inference_yml(model_dir) if os.path.isdir(model_dir) else None
    reasons = []
    for name in names:
        backend = BACKENDS.get(name)
        ok, why = backend.available(model_dir, record)
        if ok:
            if choice == "auto":
                logger.info(f"Global.use_onnx=auto: {name} ({backend.auto_note})")
            return name
        reasons.append(why)
        if choice == "auto" and len(names) > 1:
            logger.info(f"Global.use_onnx=auto: {name} not used: {why}")
    # nothing available: the last candidate (the explicit choice, or the fallback) is built and
    # its constructor says precisely what is missing
    if len(names) == 1:
        logger.warning(f"{reasons[0]}; trying {names[0]} because Global.use_onnx={choice} asks for it")
    return names[-1]


def create_predictor(global_cfg, record=None):
    """The predictor a deployment config's ``Global`` section asks for."""
    g = dict(global_cfg or {})
    model_dir = g.get("inference_model_dir")
    if model_dir is None:
        raise ConfigError("Global.inference_model_dir is missing: the folder of an exported model")
    name = choose_backend(g, record)
    if name == "onnxruntime" and section_value(g, "use_gpu"):
        logger.warning("Global.use_onnx=True runs ONNX Runtime on CPU; Global.use_gpu is ignored")
    info = (record or {}).get("Global") or {}
    g.setdefault("image_shape", info.get("image_shape"))
    g.setdefault("precision", info.get("precision", "fp32"))
    backend = BACKENDS.get(name)
    return backend(model_dir, **{key: g[key] for key in backend.keys if key in g})
