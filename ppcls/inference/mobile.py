"""Phone formats of an export (``Global.export_format``) and the back-ends that run them.

``tools/export_model.py -o Global.export_format=tflite,ort,legacy`` (or ``mobile`` for all
three) writes, beside the usual Paddle export, one sub-folder per format and precision. Each
sub-folder is a complete export of its own (model file, label list, ``inference.yml`` with the
same ``PreProcess`` record and the SHA-256 of its files), so ``deploy/python/predict_cls.py``
runs it with the usual command, only ``Global.inference_model_dir`` pointing at it:

- ``tflite_fp32/inference.tflite``: LiteRT (``ai-edge-litert``) with XNNPACK;
- ``tflite_fp16/inference.tflite``: fp16 weights, LiteRT (float32 compute on CPU);
- ``tflite_int8/inference.tflite``: full integer, int8 input and output, LiteRT;
- ``ort_fp32/inference.ort`` and ``ort_int8/inference.ort``: ONNX Runtime (Mobile), ORT format;
- ``quant_post_static_model/inference.onnx``: the INT8 ONNX model the ``ort_int8`` one is made
  from (what ``deploy/slim/quant_post_static.py`` writes), ONNX Runtime;
- ``legacy/inference.pdmodel`` + ``inference.pdiparams``: Paddle Inference 2.x / 3.x, Paddle
  Lite's ``opt``.

How each is made:

- **tflite**: onnx2tf converts the export's ``inference.onnx`` to a TensorFlow SavedModel with
  NHWC input (and its float32 / float16 ``.tflite``); the full-integer INT8 model comes from
  TensorFlow's own ``TFLiteConverter`` on that SavedModel, calibrated on images of the training
  list through the export's own ``PreProcess`` (as ``deploy/slim/quant_post_static.py`` does
  for ONNX). TensorFlow runs in a child process; it is an optional extra (requirements-test.txt).
- **ort**: ``python -m onnxruntime.tools.convert_onnx_models_to_ort`` (ONNX Runtime's own
  converter, ``Fixed`` optimizations for ``arm``) of the fp32 ``inference.onnx`` and of the INT8
  model of :func:`ppcls.inference.quantize.quantize_export`.
- **legacy**: ``paddle.jit.save`` in a child process with ``FLAGS_enable_pir_api=0``, which
  Paddle 3.3.1 still honours: the old ``ProgramDesc`` (``inference.pdmodel``).

INT8 (both engines) calibrates on ``Global.export_calib_images`` (default 300) images of the
training list; the ONNX / ORT INT8 model has 8-bit weights (phones are ARM; the 7-bit
``reduce_range`` of deploy/slim only helps x86 CPUs without VNNI).

Input layout (``Global.input_layout`` in each ``inference.yml``): NHWC for LiteRT, NCHW for
the others. The preprocessing record is the same for all (it ends with ``ToCHWImage``); the
LiteRT back-end transposes that CHW array to HWC, nothing else (docs/mobile.md).
"""

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np

from ppcls.inference.artifacts import read_inference_yml, write_record
from ppcls.inference.mobile_backends import LITERT_PIP, ORT_FILE, TFLITE_FILE
from ppcls.utils import logger
from ppcls.utils.errors import ConfigError, UserError

LEGACY_MODEL, LEGACY_PARAMS = "inference.pdmodel", "inference.pdiparams"
FORMATS = ("tflite", "ort", "legacy")
QUANT_DIRNAME = "quant_post_static_model"
SUBDIRS = {"tflite": ("tflite_fp32", "tflite_fp16", "tflite_int8"),
           "ort": ("ort_fp32", QUANT_DIRNAME, "ort_int8"),
           "legacy": ("legacy",)}
MOBILE_DIRS = tuple(name for names in SUBDIRS.values() for name in names)

# The optional TensorFlow stack (requirements-test.txt); the versions tested together here.
TF_MODULES = ("tensorflow", "tf_keras", "onnx2tf", "onnx_graphsurgeon", "sng4onnx", "psutil")
TF_PIP = ("pip install tensorflow-cpu==2.21.0 tf-keras==2.21.0 onnx2tf==1.28.8 "
          "onnx-graphsurgeon==0.6.1 sng4onnx==2.0.1 psutil")
CHILD_TIMEOUT = 1800


# ------------------------------------------------------------------ Global.export_format

def export_formats(g):
    """The phone formats ``Global.export_format`` asks for, in FORMATS order.

    ``paddle`` (default) or unset: none. A name, a comma-separated string or a list of
    ``tflite``, ``ort``, ``legacy``; ``mobile`` (or ``all``): all three. ``paddle`` / ``onnx`` in
    a list are the always-written base export and change nothing.
    """
    value = (g or {}).get("export_format")
    if value is None:
        return []
    items = value if isinstance(value, list) else str(value).split(",")
    wanted = set()
    for item in items:
        name = str(item).strip().lower()
        if name in ("mobile", "all"):
            wanted.update(FORMATS)
        elif name in FORMATS:
            wanted.add(name)
        elif name not in ("paddle", "onnx", ""):
            raise ConfigError(f"Global.export_format: unknown format {item!r}; expected paddle, "
                              f"{', '.join(FORMATS)} or mobile (all three), or a list of them")
    return [name for name in FORMATS if name in wanted]


def missing_modules(modules):
    return [name for name in modules if importlib.util.find_spec(name) is None]


def require_tflite_stack():
    missing = missing_modules(TF_MODULES)
    if missing:
        raise UserError(f"Global.export_format=tflite needs the optional TensorFlow stack "
                        f"(not installed: {', '.join(missing)}): {TF_PIP}")


# ------------------------------------------------------------------ writing the sub-exports

def _sub_export(parent, name, files, record, **global_keys):
    """``parent/name``: ``files`` ({source path: file name}) moved in, the parent's label list
    copied, and an ``inference.yml`` that is the parent's with ``global_keys`` in ``Global``."""
    folder = os.path.join(parent, name)
    os.makedirs(folder, exist_ok=True)
    for source, target in files.items():
        shutil.move(source, os.path.join(folder, target))
    label = ((record.get("PostProcess") or {}).get("Topk") or {}).get("class_id_map_file")
    if label:
        shutil.copyfile(os.path.join(parent, label), os.path.join(folder, label))
    new = {key: value for key, value in record.items() if key != "Files"}
    new["Global"] = dict(record.get("Global") or {}, **global_keys)
    write_record(folder, new)
    return folder


def _child(args, what, env=None):
    """Run :func:`main` with ``args`` in a child process; a failure is one UserError line."""
    code = f"import sys; from ppcls.inference.mobile import main; sys.exit(main({args!r}))"
    proc = subprocess.run([sys.executable, "-c", code],
                          capture_output=True, text=True, timeout=CHILD_TIMEOUT,
                          env=dict(os.environ, **(env or {})))
    if proc.returncode != 0:
        lines = [line for line in (proc.stderr + proc.stdout).splitlines() if line.strip()]
        last = next((line for line in reversed(lines) if "Error" in line), lines[-1] if lines else "")
        raise UserError(f"{what} failed: {' '.join(last.split())[:400]}")
    return proc


def calib_count(cfg):
    """``Global.export_calib_images``: INT8 calibration images (default: Quant.calib_images's 300)."""
    from ppcls.inference.quantize import DEFAULTS

    n = (cfg.get("Global") or {}).get("export_calib_images")
    if n is None:
        return DEFAULTS["calib_images"]
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ConfigError(f"Global.export_calib_images: expected a positive integer, got {n!r}")
    return n


def _calibration(cfg, record, work):
    """The calibration batch (NCHW float32, the export's preprocessing) saved as ``work/calib.npy``."""
    from ppcls.inference.quantize import DEFAULTS, _calibration_batches, calibration_images

    paths = calibration_images(cfg, calib_count(cfg))
    op_list = (record.get("PreProcess") or {}).get("transform_ops")
    data = np.concatenate(list(_calibration_batches(paths, op_list, DEFAULTS["batch_size"])))
    path = os.path.join(work, "calib.npy")
    np.save(path, data)
    return path, len(paths)


def export_tflite(folder, cfg, record, work):
    require_tflite_stack()
    onnx_path = os.path.join(folder, "inference.onnx")
    if not os.path.isfile(onnx_path):
        raise UserError("Global.export_format=tflite converts inference.onnx, which was not "
                        "written (Global.export_onnx=False, or paddle2onnx failed: see above)")
    calib, count = _calibration(cfg, record, work)
    out = os.path.join(work, "tflite")
    os.makedirs(out)
    # a copy: onnx2tf rewrites the file it converts (sng4onnx names its nodes in place)
    onnx_path = shutil.copyfile(onnx_path, os.path.join(out, "inference.onnx"))
    logger.info(f"converting inference.onnx to LiteRT (onnx2tf, TensorFlow; INT8 calibrated on "
                f"{count} training images)")
    proc = _child(["tflite", onnx_path, out, calib], "the LiteRT conversion (onnx2tf + TFLiteConverter)")
    info = json.loads(proc.stdout.strip().splitlines()[-1])
    common = {"format": "tflite", "input_layout": "NHWC", "runtime": "LiteRT (XNNPACK)"}
    _sub_export(folder, "tflite_fp32", {os.path.join(out, "fp32.tflite"): TFLITE_FILE}, record,
                precision="fp32", input_dtype="float32", **common)
    _sub_export(folder, "tflite_fp16", {os.path.join(out, "fp16.tflite"): TFLITE_FILE}, record,
                precision="fp16", input_dtype="float32", **common)
    _sub_export(folder, "tflite_int8", {os.path.join(out, "int8.tflite"): TFLITE_FILE}, record,
                precision="int8", input_dtype="int8", input_quantization=info["input"],
                output_quantization=info["output"], calib_images=count, **common)
    return "wrote tflite_fp32, tflite_fp16, tflite_int8 (LiteRT, NHWC input)"


def _to_ort(onnx_path, out_dir):
    os.makedirs(out_dir, exist_ok=True)
    proc = subprocess.run([sys.executable, "-m", "onnxruntime.tools.convert_onnx_models_to_ort",
                           onnx_path, "--output_dir", out_dir, "--optimization_style", "Fixed",
                           "--target_platform", "arm"],
                          capture_output=True, text=True, timeout=CHILD_TIMEOUT)
    target = os.path.join(out_dir, os.path.splitext(os.path.basename(onnx_path))[0] + ".ort")
    if proc.returncode != 0 or not os.path.isfile(target):
        lines = [line for line in (proc.stderr + proc.stdout).splitlines() if line.strip()]
        raise UserError(f"onnxruntime's ORT-format converter failed on {onnx_path}: "
                        f"{' '.join((lines[-1] if lines else '').split())[:300]}")
    return target


def export_ort(folder, cfg, record, work):
    from ppcls.inference.quantize import quantize_export

    onnx_path = os.path.join(folder, "inference.onnx")
    if not os.path.isfile(onnx_path):
        raise UserError("Global.export_format=ort converts inference.onnx, which was not written "
                        "(Global.export_onnx=False, or paddle2onnx failed: see above)")
    common = {"format": "ort", "input_layout": "NCHW", "runtime": "ONNX Runtime (ORT format)"}
    fp32 = _to_ort(onnx_path, os.path.join(work, "ort_fp32"))
    _sub_export(folder, "ort_fp32", {fp32: ORT_FILE}, record, precision="fp32", **common)
    # for phones (ARM): 8-bit weights; reduce_range (7-bit) only helps x86 CPUs without VNNI
    int8_dir = quantize_export(folder, os.path.join(folder, QUANT_DIRNAME), cfg,
                               {"calib_images": calib_count(cfg), "reduce_range": False})
    int8_record = read_inference_yml(int8_dir)
    int8 = _to_ort(os.path.join(int8_dir, "inference.onnx"), os.path.join(work, "ort_int8"))
    _sub_export(folder, "ort_int8", {int8: ORT_FILE}, int8_record, precision="int8", **common)
    return f"wrote ort_fp32, ort_int8 (ORT format) and {QUANT_DIRNAME} (INT8 ONNX)"


def export_legacy(folder, cfg, record, work):
    from ppcls.inference.export import image_shape

    spec = {"Arch": dict(cfg.get("Arch") or {}),
            "Global": {"pretrained_model": (cfg.get("Global") or {}).get("pretrained_model"),
                       "image_shape": image_shape(cfg)},
            "softmax": bool((record.get("Global") or {}).get("export_softmax", True))}
    spec_path = os.path.join(work, "legacy.json")
    with open(spec_path, "w") as f:
        json.dump(spec, f)
    out = os.path.join(work, "legacy")
    _child(["legacy", spec_path, out], "writing the old program format (FLAGS_enable_pir_api=0)",
           env={"FLAGS_enable_pir_api": "0"})
    model = os.path.join(out, LEGACY_MODEL)
    if not os.path.isfile(model):
        raise UserError(f"Paddle {_paddle_version()} did not write {LEGACY_MODEL} with "
                        f"FLAGS_enable_pir_api=0 (found {', '.join(sorted(os.listdir(out)))})")
    _sub_export(folder, "legacy", {model: LEGACY_MODEL, os.path.join(out, LEGACY_PARAMS): LEGACY_PARAMS},
                record, format="paddle_legacy", input_layout="NCHW",
                runtime="Paddle Inference (old program), Paddle Lite opt")
    return "wrote legacy (inference.pdmodel: the old program format for Paddle 2.x and Paddle Lite)"


def _paddle_version():
    import paddle

    return paddle.__version__


WRITERS = {"tflite": export_tflite, "ort": export_ort, "legacy": export_legacy}


def export_with_formats(cfg):
    """``tools/export_model.py``: :func:`ppcls.inference.export.export_model` plus the phone
    formats ``Global.export_format`` asks for, written into the export before it is committed
    (a failed conversion leaves the previous export untouched). Returns the export folder."""
    import copy

    from ppcls.inference.export import export_model

    g = cfg.get("Global") or {}
    formats = export_formats(g)  # a bad Global.export_format fails before the export starts
    if not formats:
        return export_model(cfg)
    if {"tflite", "ort"} & set(formats) and g.get("export_onnx") is None:
        cfg = copy.copy(cfg)
        cfg["Global"] = dict(g, export_onnx=True)  # both convert inference.onnx: a failure is an error
    notes = []
    out = export_model(cfg, before_commit=lambda folder: notes.extend(export_mobile_formats(folder, cfg)))
    for note in notes:
        logger.info(note)
    return out


def export_mobile_formats(folder, cfg):
    """Write the sub-exports ``Global.export_format`` asks for into the finished export
    ``folder`` (its ``inference.yml`` already written); returns one log line per format."""
    formats = export_formats(cfg.get("Global") or {})
    if not formats:
        return []
    record = read_inference_yml(folder)
    work = tempfile.mkdtemp(prefix="ppcls_mobile_")
    notes = []
    try:
        for name in formats:
            notes.append(WRITERS[name](folder, cfg, record, work))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return notes


# ------------------------------------------------------------------ the child processes

def _child_tflite(onnx_path, out, calib_path):
    """onnx2tf -> SavedModel (+ fp32, fp16 .tflite); TFLiteConverter -> full-integer INT8."""
    import onnx2tf
    import tensorflow as tf

    saved = os.path.join(out, "saved_model")
    onnx2tf.convert(input_onnx_file_path=onnx_path, output_folder_path=saved,
                    output_signaturedefs=True, non_verbose=True)
    stem = os.path.splitext(os.path.basename(onnx_path))[0]
    shutil.move(os.path.join(saved, f"{stem}_float32.tflite"), os.path.join(out, "fp32.tflite"))
    shutil.move(os.path.join(saved, f"{stem}_float16.tflite"), os.path.join(out, "fp16.tflite"))

    calib = np.load(calib_path).transpose(0, 2, 3, 1)  # the export's preprocessing, NCHW -> NHWC

    def representative():
        for i in range(len(calib)):
            yield [calib[i:i + 1]]

    converter = tf.lite.TFLiteConverter.from_saved_model(saved)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8
    with open(os.path.join(out, "int8.tflite"), "wb") as f:
        f.write(converter.convert())

    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=os.path.join(out, "int8.tflite"))
    scale = {}
    for key, detail in (("input", interpreter.get_input_details()[0]),
                        ("output", interpreter.get_output_details()[0])):
        s, zp = detail["quantization"]
        scale[key] = {"scale": float(s), "zero_point": int(zp)}
    print(json.dumps(scale))


def _child_legacy(spec_path, out):
    """The eval network (+ softmax) saved by ``paddle.jit.save`` with the PIR API off."""
    import paddle

    from ppcls.inference.export import _softmax_head, build_eval_model

    with open(spec_path) as f:
        spec = json.load(f)
    model = build_eval_model(spec)
    if spec["softmax"]:
        model = _softmax_head(model)
    shape = [None] + list(spec["Global"]["image_shape"])
    static = paddle.jit.to_static(model, input_spec=[paddle.static.InputSpec(shape, "float32", "x")],
                                  full_graph=True)
    paddle.jit.save(static, os.path.join(out, "inference"))


def main(argv):
    """The child processes' entry point (TensorFlow, or Paddle with the PIR API off)."""
    argv = list(argv)
    if argv[:1] == ["tflite"] and len(argv) == 4:
        _child_tflite(*argv[1:])
    elif argv[:1] == ["legacy"] and len(argv) == 3:
        _child_legacy(*argv[1:])
    else:
        raise SystemExit("usage: main(['tflite', ONNX, OUT, CALIB.npy]) | main(['legacy', SPEC.json, OUT])")
    return 0
