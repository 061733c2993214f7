"""INT8 post-training quantization of an export: ``deploy/slim/quant_post_static.py``.

ONNX Runtime's static quantization (``onnxruntime.quantization.quantize_static``):

- the fp32 network is converted to ONNX (opset 13, which per-channel quantization needs) and
  prepared with ONNX Runtime's ``quant_pre_process`` (shape inference, graph optimisation);
- weights per output channel (int8, symmetric), activations per tensor (uint8), QDQ format,
  which ONNX Runtime's CPU provider fuses into integer kernels (QLinearConv, ...);
  ``reduce_range`` (7-bit weights) by default, which avoids the saturation of the AVX2 / AVX-512
  u8s8 dot product on CPUs without VNNI;
- activation ranges calibrated on ``Quant.calib_images`` images (default 300) taken evenly from
  the training list (``DataLoader.Train.dataset``), through the export's own preprocessing
  (``inference.yml`` ``PreProcess``, the transforms deployment applies);
- range method ``Quant.method``: ``minmax`` (default), ``percentile`` or ``entropy``.

Why ONNX Runtime and not ``paddle.quantization``: docs/benchmarks.md ("INT8").

The result is an export like any other (written whole, hashed ``inference.yml`` with
``Global.precision: int8`` and a ``Quant`` record, the label list) holding ``inference.onnx``
only, which predict_cls runs on ONNX Runtime with the usual command line.
"""

import os
import shutil

import numpy as np

from ppcls.utils import logger
from ppcls.utils.errors import ConfigError, UserError

QUANT_OPSET = 13
DEFAULTS = {"calib_images": 300, "method": "minmax", "batch_size": 16, "reduce_range": True}
METHODS = ("minmax", "percentile", "entropy")
QUANT_DIRNAME = "quant_post_static_model"  # PaddleClas's folder when quantizing an existing export


def _quant_options(section):
    options = dict(DEFAULTS)
    section = dict(section or {})
    unknown = sorted(set(section) - set(DEFAULTS))
    if unknown:
        raise ConfigError(f"Quant: unknown key(s) {', '.join(unknown)}; known: {', '.join(DEFAULTS)}")
    options.update(section)
    n = options["calib_images"]
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ConfigError(f"Quant.calib_images: expected a positive integer, got {n!r}")
    b = options["batch_size"]
    if not isinstance(b, int) or isinstance(b, bool) or b < 1:
        raise ConfigError(f"Quant.batch_size: expected a positive integer, got {b!r}")
    if options["method"] not in METHODS:
        raise ConfigError(f"Quant.method: expected one of {', '.join(METHODS)}, got {options['method']!r}")
    if not isinstance(options["reduce_range"], bool):
        raise ConfigError(f"Quant.reduce_range: expected true/false, got {options['reduce_range']!r}")
    return options


def calibration_images(cfg, count):
    """``count`` image paths spread evenly over the training list (every k-th line, in order)."""
    from ppcls.data.dataset import read_list_file

    dataset = (((cfg.get("DataLoader") or {}).get("Train") or {}).get("dataset") or {})
    if not dataset.get("cls_label_path") or not dataset.get("image_root"):
        raise ConfigError("quantization calibrates on the training images: the config needs "
                          "DataLoader.Train.dataset.image_root and cls_label_path")
    paths, _, _ = read_list_file(dataset["cls_label_path"], dataset["image_root"],
                                 delimiter=dataset.get("delimiter"))
    if len(paths) <= count:
        return list(paths)
    picks = np.linspace(0, len(paths) - 1, count).round().astype(int)
    return [paths[i] for i in picks]


def _ort_quantization():
    try:
        from onnxruntime import quantization
    except ImportError as err:
        raise UserError(f"INT8 quantization needs onnxruntime (and its quantization dependencies: "
                        f"onnx, ml_dtypes): {err}; pip install onnxruntime onnx ml_dtypes") from None
    return quantization


def _calibration_batches(paths, op_list, batch_size):
    from ppcls.data.preprocess import create_operators, decode_image, transform

    ops = create_operators(op_list, where="PreProcess.transform_ops (inference.yml)")
    batch = []
    for path in paths:
        batch.append(transform(decode_image(path), ops))
        if len(batch) == batch_size:
            yield np.stack(batch).astype(np.float32)
            batch = []
    if batch:
        yield np.stack(batch).astype(np.float32)


def quantize_export(fp32_dir, out_dir, cfg, options=None):
    """Write the INT8 export of the fp32 export ``fp32_dir`` to ``out_dir`` (whole); returns it."""
    from ppcls.inference.artifacts import read_inference_yml, write_record
    from ppcls.inference.export import _convert_onnx, commit_export, export_tmp_dir, private_temp_dir

    options = _quant_options(options)
    q = _ort_quantization()
    record = read_inference_yml(fp32_dir)
    if record is None:
        raise ConfigError(f"{fp32_dir} has no inference.yml: export the model with "
                          f"tools/export_model.py first")
    if (record.get("Global") or {}).get("precision", "fp32") != "fp32":
        raise ConfigError(f"{fp32_dir} is already quantized ({record['Global']['precision']}); "
                          f"quantize the fp32 export")
    op_list = (record.get("PreProcess") or {}).get("transform_ops")
    paths = calibration_images(cfg, options["calib_images"])

    work = private_temp_dir("ppcls_quant_")  # (one left by a killed run is swept)
    tmp_dir = export_tmp_dir(out_dir)
    try:
        fp32_onnx = _convert_onnx(fp32_dir, QUANT_OPSET, target=os.path.join(work, "fp32.onnx"))
        prepared = os.path.join(work, "prepared.onnx")
        q.quant_pre_process(fp32_onnx, prepared, skip_symbolic_shape=False)

        batches = _calibration_batches(paths, op_list, options["batch_size"])

        class Reader(q.CalibrationDataReader):
            def get_next(self):
                batch = next(batches, None)
                return None if batch is None else {"x": batch}

        method = {"minmax": q.CalibrationMethod.MinMax, "percentile": q.CalibrationMethod.Percentile,
                  "entropy": q.CalibrationMethod.Entropy}[options["method"]]
        logger.info(f"calibrating {len(paths)} images ({options['method']}) and quantizing "
                    f"{fp32_dir} to INT8 with ONNX Runtime")
        q.quantize_static(prepared, os.path.join(tmp_dir, "inference.onnx"), Reader(),
                          quant_format=q.QuantFormat.QDQ, per_channel=True,
                          reduce_range=options["reduce_range"],
                          activation_type=q.QuantType.QUInt8, weight_type=q.QuantType.QInt8,
                          calibrate_method=method)
        label = ((record.get("PostProcess") or {}).get("Topk") or {}).get("class_id_map_file")
        if label:
            shutil.copyfile(os.path.join(fp32_dir, label), os.path.join(tmp_dir, label))
        new = {key: value for key, value in record.items() if key != "Files"}
        new["Global"] = dict(record.get("Global") or {}, precision="int8")
        new["Quant"] = {"engine": "onnxruntime", "format": "QDQ", "weights": "int8 per channel",
                        "activations": "uint8 per tensor", "method": options["method"],
                        "calib_images": len(paths), "reduce_range": options["reduce_range"]}
        write_record(tmp_dir, new)
        commit_export(tmp_dir, out_dir)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(tmp_dir, ignore_errors=True)
    logger.info(f"wrote the INT8 model to {out_dir} (inference.onnx, runs on ONNX Runtime: "
                f"python deploy/python/predict_cls.py -c deploy/configs/inference_cls_from_export.yaml "
                f"-o Global.inference_model_dir={out_dir})")
    return out_dir


def quant_post_static(cfg, options=None):
    """``deploy/slim/quant_post_static.py``: with ``Global.pretrained_model``, export those weights
    (fp32, to a temporary folder) and write the INT8 model to ``Global.save_inference_dir``;
    without, quantize the fp32 export already in ``Global.save_inference_dir`` into its
    ``quant_post_static_model`` sub-folder (PaddleClas's layout)."""
    import copy

    from ppcls.inference.export import DEFAULT_SAVE_DIR, export_model, private_temp_dir

    g = cfg.get("Global") or {}
    save_dir = g.get("save_inference_dir") or DEFAULT_SAVE_DIR
    if not g.get("pretrained_model"):
        return quantize_export(save_dir, os.path.join(save_dir, QUANT_DIRNAME), cfg, options)
    work = private_temp_dir("ppcls_fp32_")
    try:
        fp32_cfg = copy.deepcopy(cfg)
        fp32_cfg["Global"] = dict(g, save_inference_dir=os.path.join(work, "fp32"), export_onnx=False)
        export_model(fp32_cfg)
        return quantize_export(fp32_cfg["Global"]["save_inference_dir"], save_dir, cfg, options)
    finally:
        shutil.rmtree(work, ignore_errors=True)
