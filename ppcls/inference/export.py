"""Export a trained model for deployment: ``paddle.jit.save`` + ``inference.yml`` (+ ONNX).

``export_model(cfg)`` writes into ``Global.save_inference_dir``:

- ``inference.json`` + ``inference.pdiparams``: the eval-mode network with a softmax appended
  (``Global.export_softmax``, default True), input ``x`` of shape ``[None, 3, H, W]`` from
  ``Global.image_shape`` (PIR program, Paddle 3; ``inference.pdmodel`` when PIR is off).
- ``inference.yml``: what a deployment needs besides the network: the preprocessing
  (``PreProcess.transform_ops``, the ``Infer`` transforms without ``DecodeImage``), the
  post-processing (``PostProcess.Topk`` with the label file, copied beside it), the input
  shape and whether the output is already a softmax.
- the label file named by ``Infer.PostProcess.class_id_map_file``, if any.
- with ``Global.export_onnx: True``, ``inference.onnx`` (paddle2onnx, optional extra).

Files are written to a temporary folder and moved into place only once all of them exist, so a
failed export never leaves a half-written model over an older one.
"""

import copy
import os
import shutil
import tempfile

import yaml

from ppcls.utils import logger
from ppcls.utils.errors import ConfigError, UserError

INFERENCE_YML = "inference.yml"
DEFAULT_IMAGE_SHAPE = [3, 224, 224]
DEFAULT_SAVE_DIR = "./inference"
ONNX_OPSET = 11
_SKIPPED_OPS = ("DecodeImage",)  # deployment decodes the file itself


def image_shape(cfg):
    shape = (cfg.get("Global") or {}).get("image_shape", DEFAULT_IMAGE_SHAPE)
    if (not isinstance(shape, list) or len(shape) != 3
            or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in shape)):
        raise ConfigError(f"Global.image_shape: expected [channels, height, width] of positive "
                          f"integers, got {shape!r}")
    return shape


def _op_name(op):
    if not isinstance(op, dict) or len(op) != 1:
        raise ConfigError(f"transform ops: each entry must be one '- OpName: {{params}}' "
                          f"mapping, got {op!r}")
    return next(iter(op))


def deploy_transforms(cfg):
    """The preprocessing a deployment applies to a decoded RGB image, as a transform op list.

    From ``Infer.transforms``, else ``DataLoader.Eval.dataset.transform_ops``, in both cases
    without ``DecodeImage``; else the ImageNet evaluation pipeline for ``Global.image_shape``.
    """
    infer = cfg.get("Infer") or {}
    evaluation = (((cfg.get("DataLoader") or {}).get("Eval") or {}).get("dataset") or {})
    ops = infer.get("transforms") or evaluation.get("transform_ops")
    if ops:
        if not isinstance(ops, list):
            raise ConfigError(f"Infer.transforms: expected a list of ops, got {ops!r}")
        out = [copy.deepcopy(op) for op in ops if _op_name(op) not in _SKIPPED_OPS]
        if not infer.get("transforms") and "ToCHWImage" not in map(_op_name, out):
            out.append({"ToCHWImage": None})  # the dataset's own last step (ppcls.data.dataset)
        return out
    _, height, _ = image_shape(cfg)
    return [{"ResizeImage": {"resize_short": int(round(height / 0.875))}},
            {"CropImage": {"size": height}},
            {"NormalizeImage": {"scale": 1.0 / 255.0, "mean": [0.485, 0.456, 0.406],
                                "std": [0.229, 0.224, 0.225], "order": ""}},
            {"ToCHWImage": None}]


def _postprocess(cfg):
    section = copy.deepcopy((cfg.get("Infer") or {}).get("PostProcess") or {})
    if "Topk" in section:
        section = dict(section["Topk"] or {})
    section.pop("name", None)
    return {"topk": section.get("topk", 5), "class_id_map_file": section.get("class_id_map_file")}


def _load_weights(model, cfg):
    path = (cfg.get("Global") or {}).get("pretrained_model")
    if path:
        from ppcls.utils.weights import load_pretrained

        load_pretrained(model, path)
        logger.info(f"loaded weights from {path}")
    elif not (cfg.get("Arch") or {}).get("pretrained"):
        logger.warning("no weights given (Global.pretrained_model): the model keeps its random "
                       "initialisation")


def build_eval_model(cfg):
    """The ``Arch`` network with the configured weights, in eval mode."""
    from ppcls.arch import build_model

    if not cfg.get("Arch"):
        raise ConfigError("the config has no Arch section (the model to build)")
    model = build_model(cfg["Arch"])
    _load_weights(model, cfg)
    model.eval()
    return model


def _softmax_head(model):
    import paddle

    class SoftmaxHead(paddle.nn.Layer):
        """The network followed by a softmax over classes (what PaddleClas exports)."""

        def __init__(self, net):
            super().__init__()
            self.net = net
            self.softmax = paddle.nn.Softmax(axis=-1)

        def forward(self, x):
            return self.softmax(self.net(x))

    head = SoftmaxHead(model)
    head.eval()
    return head


def _move_into(tmp_dir, out_dir):
    os.makedirs(out_dir, exist_ok=True)
    for name in sorted(os.listdir(tmp_dir)):
        os.replace(os.path.join(tmp_dir, name), os.path.join(out_dir, name))


def export_model(cfg):
    """Export ``cfg``'s model to ``Global.save_inference_dir``; returns that folder."""
    import paddle

    g = cfg.get("Global") or {}
    out_dir = g.get("save_inference_dir") or DEFAULT_SAVE_DIR
    shape = image_shape(cfg)
    with_softmax = g.get("export_softmax", True)
    transforms = deploy_transforms(cfg)
    post = _postprocess(cfg)
    label_file = post["class_id_map_file"]
    if label_file is not None and not os.path.isfile(label_file):
        raise ConfigError(f"Infer.PostProcess.class_id_map_file: label file not found: {label_file}")

    model = build_eval_model(cfg)
    if with_softmax:
        model = _softmax_head(model)
    spec = [paddle.static.InputSpec(shape=[None] + shape, dtype="float32", name="x")]
    static = paddle.jit.to_static(model, input_spec=spec, full_graph=True)

    os.makedirs(os.path.dirname(os.path.abspath(out_dir)), exist_ok=True)
    tmp_dir = tempfile.mkdtemp(prefix=".export_tmp", dir=os.path.dirname(os.path.abspath(out_dir)))
    try:
        paddle.jit.save(static, os.path.join(tmp_dir, "inference"))
        if label_file is not None:
            shutil.copyfile(label_file, os.path.join(tmp_dir, os.path.basename(label_file)))
            post["class_id_map_file"] = os.path.basename(label_file)
        record = {
            "Global": {"model_name": cfg["Arch"].get("name"), "image_shape": shape,
                       "export_softmax": bool(with_softmax)},
            "PreProcess": {"transform_ops": transforms},
            "PostProcess": {"Topk": post},
        }
        with open(os.path.join(tmp_dir, INFERENCE_YML), "w", encoding="utf-8") as f:
            yaml.safe_dump(record, f, sort_keys=False, allow_unicode=True)
        _move_into(tmp_dir, out_dir)
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
    logger.info(f"exported {cfg['Arch'].get('name')} (input [None, {', '.join(map(str, shape))}], "
                f"softmax {'appended' if with_softmax else 'not appended'}) to {out_dir}")
    if g.get("export_onnx", False):
        export_onnx(out_dir)
    return out_dir


def read_inference_yml(model_dir):
    """The ``inference.yml`` of an export, or ``None`` when the export has none (older exports)."""
    path = os.path.join(model_dir, INFERENCE_YML)
    if not os.path.isfile(path):
        return None
    try:
        with open(path, encoding="utf-8") as f:
            record = yaml.safe_load(f)
    except yaml.YAMLError as err:
        raise ConfigError(f"{path} is not valid YAML: {' '.join(str(err).split())}") from None
    if not isinstance(record, dict):
        raise ConfigError(f"{path}: expected a mapping (Global, PreProcess, PostProcess)")
    return record


def export_onnx(model_dir, opset_version=ONNX_OPSET):
    """Convert the export in ``model_dir`` to ``model_dir/inference.onnx`` with paddle2onnx."""
    from ppcls.inference.predictor import ONNX_FILE, find_model_files

    try:
        import paddle2onnx
    except ImportError:
        raise UserError("ONNX export needs the optional package paddle2onnx: "
                        "pip install paddle2onnx") from None
    model_file, params_file = find_model_files(model_dir, key="Global.save_inference_dir")
    target = os.path.join(model_dir, ONNX_FILE)
    tmp = f"{target}.tmp{os.getpid()}"
    try:
        # optimize_tool="None": the default (polygraphy) tries to pip-install packages at run time.
        paddle2onnx.export(model_file, params_file, tmp, opset_version=opset_version,
                           enable_onnx_checker=True, optimize_tool="None")
    except Exception as err:  # paddle2onnx reports failures with assorted exception types
        if os.path.exists(tmp):
            os.remove(tmp)
        raise UserError(f"paddle2onnx could not convert {model_file}: "
                        f"{' '.join(str(err).split())[:300]}") from None
    if not os.path.isfile(tmp) or os.path.getsize(tmp) == 0:
        raise UserError(f"paddle2onnx could not convert {model_file} (see its log above)")
    os.replace(tmp, target)
    logger.info(f"converted {model_file} to {target} (ONNX opset {opset_version})")
    return target
