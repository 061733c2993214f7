"""The ``Global`` section: every key, its type, its default and what it does, in one table.

Config validation (``ppcls.utils.config``) checks keys and types against it, the engine and
the data loader read their defaults from it (:func:`global_value`, :func:`with_defaults`), and
:func:`select_device` is the one place a ``Global.device`` becomes a paddle device.
Extend here when the code learns a new ``Global`` key.
"""

import os

from ppcls.utils.errors import ConfigError

_STR, _OPT_STR, _INT, _OPT_INT, _BOOL = (str,), (str, type(None)), (int,), (int, type(None)), (bool,)
DEFAULT_IMAGE_SHAPE = [3, 224, 224]  # the model's input [C, H, W] when nothing else says


class _EngineKey(tuple):
    """A table row the engine reads (it fills the default into the config it saves)."""


def _engine(types, default, doc):
    return _EngineKey((types, default, doc))


# key -> (accepted types, default, one line of what it does); _engine(...): the engine reads it
GLOBAL = {
    # training and evaluation (ppcls.engine)
    "checkpoints": _engine(_OPT_STR, None, "checkpoint prefix to resume training from"),
    "pretrained_model": _engine(_OPT_STR, None, "weights to start from (train) or to evaluate/export"),
    "output_dir": _engine(_STR, "./output/",
                          "checkpoints, logs and config.yaml go to <output_dir>/<Arch.name>"),
    "device": _engine(_STR, "gpu",
                      "gpu or cpu (gpu without CUDA or without a visible GPU: cpu, with a warning)"),
    "save_interval": _engine(_INT, 1, "write epoch_<n> every this many epochs (0: never)"),
    "eval_during_train": _engine(_BOOL, True, "evaluate on DataLoader.Eval during training"),
    "eval_interval": _engine(_INT, 1, "evaluate every this many epochs"),
    "start_eval_epoch": _engine(_INT, 0, "first epoch evaluated (as PaddleClas: eval from this epoch on)"),
    "epochs": _engine(_INT, 1, "epochs to train"),
    "print_batch_step": _engine(_INT, 10, "a log line every this many iterations"),
    "use_visualdl": _engine(_BOOL, False, "write VisualDL scalars to <output>/vdl"),
    "image_shape": ((list,), DEFAULT_IMAGE_SHAPE, "input shape [C, H, W] of the export (missing: "
                    "[3, 224, 224]); model_info without it reads the config's crop size"),
    "image_channel": (_OPT_INT, None, "PaddleClas's *_ultra recipes anchor image_shape and "
                      "channel_num to it; no code reads it (there either)"),
    "save_inference_dir": (_OPT_STR, "./inference", "where tools/export_model.py writes the export "
                                                   "(null: the default)"),
    "seed": _engine(_OPT_INT, None, "seed of every generator (null: a fresh one)"),
    "to_static": _engine(_BOOL, False, "train the paddle.jit.to_static graph"),
    "update_freq": _engine(_INT, 1, "gradient accumulation: one optimizer step every this many batches"),
    "use_multilabel": _engine(_BOOL, False, "PaddleClas's multi-label mode (not supported: must be False)"),
    "use_dali": _engine(_BOOL, False, "PaddleClas's DALI loading of the training images (ppcls.data.dali; without DALI, or for a list it cannot run: the built-in loader, with a warning)"),
    "eval_mode": _engine(_STR, "classification", "PaddleClas's eval mode (only classification)"),
    "class_num": (_INT, None, "number of classes (Arch.class_num wins)"),
    "skip_bad_images": (_BOOL, False, "drop undecodable images from their batch instead of stopping"),
    "fast_reader": (_BOOL, True, "decode only what RandCropImage needs (JPEG DCT scaling, one crop+resize)"),
    "device_normalize": (_BOOL, True, "uint8 batches; a final NormalizeImage runs on the batch, on its device"),
    "export_softmax": (_BOOL, True, "append a softmax to the exported model"),
    "export_onnx": ((bool, type(None)), None, "also convert the export to inference.onnx: True (a "
                   "failure is an error), False, or null/missing: when paddle2onnx is installed"),
    "export_format": ((str, list), "paddle", "phone formats too: tflite, ort, legacy, mobile (all) "
                                            "(ppcls.inference.mobile, docs/mobile.md)"),
    "export_calib_images": (_OPT_INT, None, "INT8 calibration images of export_format tflite/ort "
                                            "(null: 300)"),
    "fast_cpu": (_BOOL, True, "own CPU kernels for the depthwise/1x1 convolutions on CPU"),
    "plot_curves": _engine(_BOOL, False, "write curves.png from train.log at the end of training"),
    "max_iters_per_epoch": _engine(_OPT_INT, None, "cut every epoch to this many iterations"),
    "train_mode": (_OPT_STR, None, "progressive: EfficientNetV2's progressive training (ppcls.engine.progressive)"),
    "hooks": ((list, type(None)), None, "more training-loop hooks: registered names, or {name: {keys}} "
              "(ppcls.engine.hooks; the default hooks are always on)"),
    "save_best_model": _engine(_BOOL, True, "keep best_model (the best eval metric so far)"),
    "cpu_num_threads": (_OPT_INT, None, "CPU threads (null: the CPUs available)"),
    # deployment (deploy/configs/inference_cls.yaml, ppcls.inference)
    "infer_imgs": (_STR, None, "an image file or a folder of images to predict"),
    "inference_model_dir": (_STR, None, "the exported model's folder"),
    "batch_size": (_INT, 1, "images a prediction batch"),
    "use_gpu": (_BOOL, False, "predict on GPU"),
    "gpu_mem": (_INT, 8000, "initial GPU memory pool (MB) of Paddle Inference"),
    "enable_mkldnn": (_BOOL, True, "oneDNN kernels on CPU (Paddle Inference)"),
    "ir_optim": (_BOOL, True, "Paddle Inference graph optimizations"),
    "use_tensorrt": (_BOOL, False, "TensorRT sub-graphs (GPU)"),
    "use_fp16": (_BOOL, False, "half precision with TensorRT"),
    "enable_profile": (_BOOL, False, "Paddle Inference profiling"),
    "enable_benchmark": (_BOOL, False, "print timing of the prediction stages"),
    "benchmark": (_BOOL, False, "PaddleClas's older name for enable_benchmark"),
    "use_onnx": ((bool, str), "auto", "ONNX Runtime: True, False or auto (on CPU when exported)"),
    "save_log_path": (_OPT_STR, None, "benchmark log file"),
    "warmup_iters": (_INT, 0, "untimed batches before a benchmark"),
}

GLOBAL_SCHEMA = {key: types for key, (types, _, _) in GLOBAL.items()}  # key -> accepted types
ENGINE_KEYS = tuple(key for key, row in GLOBAL.items() if isinstance(row, _EngineKey))


def global_value(config, key):
    """``config["Global"][key]``, or the table's default."""
    return section_value(config.get("Global"), key)


def section_value(section, key):
    """``section[key]`` of a ``Global`` section (a dict or None), or the table's default."""
    return (section or {}).get(key, GLOBAL[key][1])


def default_of(key):
    """The table's default of ``Global.key``."""
    return GLOBAL[key][1]


def with_defaults(global_section, keys=None):
    """Fill the table's defaults into ``global_section`` (in place) for ``keys`` (default: all)."""
    for key in GLOBAL if keys is None else keys:
        global_section.setdefault(key, GLOBAL[key][1])
    return global_section


def selected_gpu():
    """The card ``paddle.distributed.launch`` gave this process (``FLAGS_selected_gpus``), else 0."""
    first = os.environ.get("FLAGS_selected_gpus", "").split(",")[0].strip()
    return int(first) if first.isdigit() else 0


_WARNED = []


def gpu_visible():
    """``(CUDA build, number of GPUs this process sees)``. ``paddle.set_device("gpu:0")`` on a
    CUDA build that sees no GPU (``CUDA_VISIBLE_DEVICES=""``, a login node) does not raise: Paddle
    logs "no GPU detected" and exits the process (status 255), so the count is checked first."""
    import paddle

    if not paddle.is_compiled_with_cuda():
        return False, 0
    try:
        return True, int(paddle.device.cuda.device_count())
    except Exception:  # a broken driver counts as no GPU
        return True, 0


def select_device(device=None, fallback=False, set_it=True):
    """``Global.device`` (None: the table's default, gpu) -> ``"gpu"`` or ``"cpu"``, and
    ``paddle.set_device`` to it (``gpu:<FLAGS_selected_gpus>``).

    gpu on a build without CUDA: cpu with one warning a process when it is the default or when
    ``fallback`` (prediction); a ``ConfigError`` when training asked for it explicitly (install
    the GPU build, or say cpu). gpu on a CUDA build that sees no GPU (``CUDA_VISIBLE_DEVICES=""``,
    a login node): cpu with one warning a process, always (the same config runs on the GPU
    nodes; the warning says why this process does not); ``gpu:...`` is never set there.
    """
    import paddle

    explicit = device is not None
    device = str(GLOBAL["device"][1] if device is None else device).lower()
    if device not in ("gpu", "cpu"):
        raise ConfigError(f"Global.device expects 'gpu' or 'cpu', got {device!r}")
    if device == "gpu":
        cuda, count = gpu_visible()
        if not cuda and explicit and not fallback:
            raise ConfigError("Global.device is 'gpu' but this PaddlePaddle build has no CUDA "
                              "support; use -o Global.device=cpu or install paddlepaddle-gpu")
        if not cuda or count == 0:
            if not _WARNED:
                from ppcls.utils import logger

                why = ("this PaddlePaddle build has no CUDA" if not cuda else
                       "this CUDA build sees no GPU (CUDA_VISIBLE_DEVICES="
                       f"{os.environ.get('CUDA_VISIBLE_DEVICES', '<unset>')!r})")
                logger.warning(f"Global.device=gpu, but {why}: running on CPU")
                _WARNED.append(True)
            device = "cpu"
    if set_it:
        paddle.set_device(f"gpu:{selected_gpu()}" if device == "gpu" else "cpu")
    return device


__all__ = ["GLOBAL", "GLOBAL_SCHEMA", "DEFAULT_IMAGE_SHAPE", "default_of", "global_value", "with_defaults", "select_device",
           "selected_gpu", "gpu_visible"]
