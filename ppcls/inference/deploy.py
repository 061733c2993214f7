"""``deploy/python/predict_cls.py``: classify images with an exported model.

The config (``deploy/configs/inference_cls.yaml``) has PaddleClas's deployment sections:

- ``Global``: ``infer_imgs`` (file or folder), ``inference_model_dir``, ``batch_size``,
  ``use_gpu``, ``gpu_mem``, ``enable_mkldnn``, ``cpu_num_threads``, ``ir_optim``,
  ``use_tensorrt``, ``use_fp16``, ``benchmark`` (or ``enable_benchmark``), ``warmup_iters``,
  ``use_onnx``;
- ``PreProcess.transform_ops``: the ops applied to each decoded RGB image (the ppcls ops);
- ``PostProcess.Topk``: ``topk``, ``class_id_map_file``.

A section the config leaves out is taken from the export's ``inference.yml``, so
``-o Global.inference_model_dir=...`` alone is enough for a model exported by
``tools/export_model.py``. The label map is the export's label list unless the config names a
``class_id_map_file``; a label file whose class count differs from the model's output is an
error. Every file used (model, weights, ``inference.onnx``, label list) must match the SHA-256
recorded in ``inference.yml``: a changed file is refused, a file added after the export is
ignored (``use_onnx: True`` uses an added ``inference.onnx``, with a warning). When the export
has no softmax appended (``export_softmax: False``), scores are made probabilities here.

Output, one line per image::

    FILE:\tclass id(s): [...], score(s): [...], label_name(s): [...]

with scores rounded to 2 decimals. Unreadable images: one ``Error:`` line each on stderr, the
others are still predicted, exit code 1.
"""

import io
import os

from ppcls.inference.benchmark import StageTimer
from ppcls.inference.artifacts import file_status, read_inference_yml
from ppcls.inference.images import ImageBatches, list_images
from ppcls.inference.postprocess import build_postprocess, softmax
from ppcls.inference.predictor import create_predictor
from ppcls.utils import logger
from ppcls.utils.errors import ConfigError
from ppcls.utils.global_config import section_value

DEFAULT_WARMUP_BENCHMARK = 2


def format_result(result):
    """A result dict as PaddleClas's predict_cls prints it: the file's base name, scores with
    two decimals (``[0.93, 0.02, 0.00]``)."""
    scores = "[" + ", ".join(f"{float(s):.2f}" for s in result["scores"]) + "]"
    return (f"{os.path.basename(result['file_name'])}:\tclass id(s): {result['class_ids']}, "
            f"score(s): {scores}, label_name(s): {result.get('label_names', [])}")


def check_input_shape(shape, record, model_dir):
    """``shape`` (one preprocessed image, ``[C, H, W]``) must be the export's
    ``Global.image_shape``: a model exported at 64 px gives wrong answers (Paddle Inference) or
    fails inside ONNX Runtime on 224 px input. Raises ``ConfigError`` naming both sizes."""
    exported = ((record or {}).get("Global") or {}).get("image_shape")
    if exported and list(shape) != [int(v) for v in exported]:
        raise ConfigError(f"PreProcess.transform_ops make {list(shape)} inputs, but {model_dir} was "
                          f"exported for {list(exported)} (Global.image_shape in its inference.yml): "
                          "use the export's preprocessing (leave PreProcess out of the config)")


def _sections(cfg, record, model_dir):
    """``(transform_ops, postprocess section, output_is_softmax)`` from the config and inference.yml."""
    record = record or {}
    pre = cfg.get("PreProcess") or record.get("PreProcess")
    if not pre:
        raise ConfigError(f"the config has no PreProcess section and {model_dir} has no "
                          "inference.yml to take it from")
    if not isinstance(pre, dict) or not isinstance(pre.get("transform_ops"), list):
        raise ConfigError(f"PreProcess: expected 'transform_ops: [ops]', got {pre!r}")
    post = cfg.get("PostProcess")
    recorded = dict((record.get("PostProcess") or {}).get("Topk") or {})
    if recorded.get("class_id_map_file"):
        ok, why = file_status(model_dir, record, recorded["class_id_map_file"])
        if ok:
            recorded["class_id_map_file"] = os.path.join(model_dir, recorded["class_id_map_file"])
        else:
            logger.warning(f"the export's label list is not used: {why}")
            recorded["class_id_map_file"] = None
    if post is None:
        post = {"Topk": recorded} if recorded else None
    elif isinstance(post, dict) and isinstance(post.get("Topk"), dict):
        topk = dict(post["Topk"])
        if topk.get("class_id_map_file") is None and recorded.get("class_id_map_file"):
            topk["class_id_map_file"] = recorded["class_id_map_file"]
        post = dict(post, Topk=topk)
    is_softmax = section_value(record.get("Global"), "export_softmax")
    return pre["transform_ops"], post, is_softmax


def _describe(g, predictor):
    """The benchmark header: what actually runs (the back-end's own ``describe()``)."""
    info = {"model_dir": g.get("inference_model_dir"), "batch_size": section_value(g, "batch_size")}
    info.update(predictor.describe())
    return info


def _inputs(g):
    """``(Global.inference_model_dir, the image paths of Global.infer_imgs)``, both checked."""
    for key in ("infer_imgs", "inference_model_dir"):
        if g.get(key) is None:
            raise ConfigError(f"Global.{key} is missing")
    model_dir = g["inference_model_dir"]
    paths = list_images(g["infer_imgs"], key="Global.infer_imgs")
    if not os.path.isdir(model_dir):
        raise ConfigError(f"Global.inference_model_dir: no such folder: {model_dir}")
    return model_dir, paths


def _warm_up(predictor, times, paths, load, batch_size, exported):
    """Run the first readable batch ``times`` times, untimed (its errors are reported by the
    real pass); ``exported``: ``(record, model_dir)`` to check its input shape against."""
    for _, batch in ImageBatches(paths, load, batch_size=batch_size, stream=io.StringIO()):
        if exported:
            check_input_shape(batch.shape[1:], *exported)
        for _ in range(times):
            predictor.run(batch)
        break


def _open_predictor(g, record):
    predictor = create_predictor(g, record)
    described = predictor.describe()
    logger.info(f"predicting with {described['backend']} on {described['device']}, "
                f"{described['precision']}")
    return predictor


def _predict_batch(predictor, batch, names, is_softmax, postprocess, timer):
    """One batch's result dicts (``timer``: the benchmark's stages, or None)."""
    if timer:
        timer.info.setdefault("input_shape", list(batch.shape[1:]))
        timer.stamp()
    scores = predictor.run(batch)
    if timer:
        timer.stamp()
    if not is_softmax:
        scores = softmax(scores)
    batch_results = postprocess(scores, names)
    if timer:
        timer.end(len(names))
    return batch_results


def predict_cls(cfg, emit=print):
    """Classify ``Global.infer_imgs``; ``emit`` one formatted line per image.

    Returns ``(results, exit_code)``: PaddleClas result dicts in file order (scores at 5
    decimals), and 0 when every image was predicted, 1 when some could not be read.
    """
    from ppcls.data.preprocess import create_operators, decode_image, transform

    g = cfg.get("Global") or {}
    if g.get("save_log_path"):
        logger.init_logger(g["save_log_path"])  # the log (and benchmark report) also goes there
    model_dir, paths = _inputs(g)
    record = read_inference_yml(model_dir)
    op_list, post, is_softmax = _sections(cfg, record, model_dir)
    exported_shape = ((record or {}).get("Global") or {}).get("image_shape")
    ops = create_operators(op_list, where="PreProcess.transform_ops")
    postprocess = build_postprocess(post, key="PostProcess")
    predictor = _open_predictor(g, record)

    benchmark = bool(g.get("benchmark") or g.get("enable_benchmark"))
    # missing: the table's default (0), or DEFAULT_WARMUP_BENCHMARK batches for a benchmark
    warmup = g["warmup_iters"] if "warmup_iters" in g else (
        DEFAULT_WARMUP_BENCHMARK if benchmark else section_value(g, "warmup_iters"))
    timer = StageTimer(_describe(g, predictor)) if benchmark else None

    def load(path):
        return transform(decode_image(path), ops)

    batch_size = section_value(g, "batch_size")
    if warmup:
        _warm_up(predictor, warmup, paths, load, batch_size,
                 (record, model_dir) if exported_shape else None)
    batches = ImageBatches(paths, load, batch_size=batch_size)
    results = []
    iterator = iter(batches)
    while True:
        if timer:
            timer.start()
        try:
            names, batch = next(iterator)
        except StopIteration:
            break
        if exported_shape:  # the first batch: a size the export was not made for is an error
            check_input_shape(batch.shape[1:], record, model_dir)
            exported_shape = None
        for result in _predict_batch(predictor, batch, names, is_softmax, postprocess, timer):
            emit(format_result(result))
            results.append(result)
    if timer and results:
        timer.report()
    elif timer:
        logger.warning("benchmark: no image could be read, nothing to report")
    return results, batches.exit_code()
