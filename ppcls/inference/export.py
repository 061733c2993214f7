"""Export a trained model for deployment: ``paddle.jit.save`` + ``inference.yml`` (+ ONNX).

``export_model(cfg)`` writes into ``Global.save_inference_dir``:

- ``inference.json`` + ``inference.pdiparams``: the eval-mode network with a softmax appended
  (``Global.export_softmax``, default True), input ``x`` of shape ``[None, 3, H, W]`` from
  ``Global.image_shape`` (PIR program, Paddle 3; ``inference.pdmodel`` when PIR is off).
- ``inference.onnx`` (paddle2onnx) whenever paddle2onnx is importable: the fastest CPU back-end
  (docs/benchmarks.md). ``Global.export_onnx: False`` skips it; ``True`` makes a failed
  conversion an error; unset, a failure is one warning and the Paddle files are still written.
- the label file named by ``Infer.PostProcess.class_id_map_file``, if any.
- ``inference.yml``, written last: what a deployment needs besides the network (the
  preprocessing ``PreProcess.transform_ops``, ``PostProcess.Topk`` with the label file, the input
  shape, whether the output is a softmax, the precision) and ``Files``: the SHA-256 of every
  other file of the export. predict_cls uses only files that match it.

An export is written whole: into a temporary sibling folder, then swapped in place of the
previous export, so nothing of an older export (such as its ``inference.onnx``) survives and a
failed export leaves the previous one untouched. A folder holding anything that is not an
export is refused rather than replaced.
"""

import copy
import os
import re
import shutil
import tempfile

from ppcls.inference.artifacts import (EXPORT_FILES, ONNX_FILE, find_model_files, read_inference_yml,
                                      sha256_file, write_record)
from ppcls.utils import logger
from ppcls.utils.errors import ConfigError, UserError, write_error
from ppcls.utils.global_config import default_of, global_value

DEFAULT_SAVE_DIR = default_of("save_inference_dir")
ONNX_OPSET = 11
_SKIPPED_OPS = ("DecodeImage",)  # deployment decodes the file itself


def image_shape(cfg):
    shape = global_value(cfg, "image_shape")
    if (not isinstance(shape, list) or len(shape) != 3
            or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in shape)):
        raise ConfigError(f"Global.image_shape: expected [channels, height, width] of positive "
                          f"integers, got {shape!r}")
    return list(shape)


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


def _check_replaceable(out_dir):
    """``out_dir`` may be replaced by a new export: it is missing, empty or an export."""
    if not os.path.exists(out_dir):
        return
    if not os.path.isdir(out_dir):
        raise ConfigError(f"Global.save_inference_dir: {out_dir} exists and is not a folder")
    known = set(EXPORT_FILES)
    try:
        record = read_inference_yml(out_dir) or {}
    except ConfigError:
        record = {}
    files = record.get("Files")
    # only what the export itself wrote: a file its record names *with that file's hash* (a
    # hand-edited inference.yml naming notes.txt as the label file does not make it ours)
    for name, digest in (files.items() if isinstance(files, dict) else ()):
        path = os.path.join(out_dir, str(name))
        if isinstance(digest, str) and os.path.isfile(path) and sha256_file(path) == digest:
            known.add(name)
    others = sorted(name for name in os.listdir(out_dir) if name not in known)
    if others:
        shown = ", ".join(others[:5]) + (", ..." if len(others) > 5 else "")
        raise ConfigError(f"Global.save_inference_dir: {out_dir} holds files that are not part of an "
                          f"export ({shown}); an export replaces its folder whole, so choose an "
                          f"empty folder or a previous export's")


def commit_export(tmp_dir, out_dir):
    """Swap the finished export in ``tmp_dir`` in place of ``out_dir`` (whole, nothing kept)."""
    _check_replaceable(out_dir)
    old = None
    if os.path.exists(out_dir):
        old = private_temp_dir(f".{os.path.basename(os.path.abspath(out_dir))}.old",
                               os.path.dirname(os.path.abspath(out_dir)))
        os.rmdir(old)
        os.replace(out_dir, old)
    os.replace(tmp_dir, out_dir)
    if old:
        shutil.rmtree(old, ignore_errors=True)


def sweep_stale(parent, prefix):
    """Remove ``parent/<prefix><pid>_*`` folders of processes that no longer run (an export or
    quantization killed with SIGKILL leaves its temporary folder: 18 MB each); returns them."""
    from ppcls.engine.run_dir import process_alive

    pattern = re.compile(re.escape(prefix) + r"(\d+)_")
    swept = []
    try:
        names = os.listdir(parent)
    except OSError:
        return swept
    for name in names:
        match = pattern.match(name)
        if match and int(match.group(1)) != os.getpid() and not process_alive(int(match.group(1))):
            shutil.rmtree(os.path.join(parent, name), ignore_errors=True)
            swept.append(name)
    if swept:
        logger.info(f"removed {len(swept)} temporary folder(s) left in {parent} by killed "
                    f"exports: {', '.join(sorted(swept)[:3])}{' ...' if len(swept) > 3 else ''}")
    return swept


def private_temp_dir(prefix, parent=None):
    """``tempfile.mkdtemp`` named ``<prefix><pid>_...`` (in ``parent``, default the system's
    temp folder), after sweeping the ones of dead processes (:func:`sweep_stale`)."""
    parent = parent or tempfile.gettempdir()
    sweep_stale(parent, prefix)
    return tempfile.mkdtemp(prefix=f"{prefix}{os.getpid()}_", dir=parent)


def export_tmp_dir(out_dir):
    """A temporary sibling folder of ``out_dir`` (same file system, so the swap is a rename)."""
    parent = os.path.dirname(os.path.abspath(out_dir))
    os.makedirs(parent, exist_ok=True)
    base = os.path.basename(os.path.abspath(out_dir))
    sweep_stale(parent, f".{base}.old")
    tmp = private_temp_dir(f".{base}.tmp", parent)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # a folder as os.makedirs makes it, not mkdtemp's 0700
    return tmp


def _paddle2onnx_missing():
    try:
        import paddle2onnx  # noqa: F401
    except ImportError as err:
        return str(err) or "paddle2onnx is not installed"
    return None


def export_model(cfg, before_commit=None):
    """Export ``cfg``'s model to ``Global.save_inference_dir``; returns that folder.

    ``before_commit(folder)``, when given, runs on the finished export (``inference.yml``
    written) before it is swapped into place, so what it adds is part of the one export."""
    import paddle

    out_dir = global_value(cfg, "save_inference_dir") or DEFAULT_SAVE_DIR
    shape = image_shape(cfg)
    # PaddleClas's Arch.infer_add_softmax (default True) and our Global.export_softmax: both must allow it.
    with_softmax = global_value(cfg, "export_softmax") and (cfg.get("Arch") or {}).get("infer_add_softmax", True)
    want_onnx = global_value(cfg, "export_onnx")  # None: when paddle2onnx is importable
    transforms = deploy_transforms(cfg)
    post = _postprocess(cfg)
    label_file = post["class_id_map_file"]
    if label_file is not None and not os.path.isfile(label_file):
        raise ConfigError(f"Infer.PostProcess.class_id_map_file: label file not found: {label_file}")
    _check_replaceable(out_dir)

    model = build_eval_model(cfg)
    if with_softmax:
        model = _softmax_head(model)
    spec = [paddle.static.InputSpec(shape=[None] + shape, dtype="float32", name="x")]
    static = paddle.jit.to_static(model, input_spec=spec, full_graph=True)

    tmp_dir = export_tmp_dir(out_dir)
    try:
        paddle.jit.save(static, os.path.join(tmp_dir, "inference"))
        if label_file is not None:
            shutil.copyfile(label_file, os.path.join(tmp_dir, os.path.basename(label_file)))
            post["class_id_map_file"] = os.path.basename(label_file)
        onnx_note = _export_onnx_into(tmp_dir, want_onnx)
        record = {
            "Global": {"model_name": cfg["Arch"].get("name"), "image_shape": shape,
                       "export_softmax": bool(with_softmax), "precision": "fp32"},
            "PreProcess": {"transform_ops": transforms},
            "PostProcess": {"Topk": post},
        }
        write_record(tmp_dir, record)
        if before_commit is not None:  # e.g. the phone formats (ppcls.inference.mobile)
            before_commit(tmp_dir)
        commit_export(tmp_dir, out_dir)
    except OSError as err:  # a full or read-only disk: one line, the previous export kept
        raise write_error(err, err.filename or tmp_dir,
                          f"exporting to {out_dir} (the previous export, if any, is intact)") from None
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
    logger.info(f"exported {cfg['Arch'].get('name')} (input [None, {', '.join(map(str, shape))}], "
                f"softmax {'appended' if with_softmax else 'not appended'}) to {out_dir}")
    logger.info(onnx_note)
    return out_dir


def _export_onnx_into(folder, want_onnx):
    """Convert ``folder``'s Paddle model to ONNX as ``Global.export_onnx`` asks; returns the log line."""
    if want_onnx is False:
        return ("inference.onnx not written (Global.export_onnx=False): deployment on CPU uses "
                "Paddle Inference")
    missing = _paddle2onnx_missing()
    if missing and want_onnx is None:
        logger.warning(f"inference.onnx not written: paddle2onnx is not importable ({missing}); "
                       f"pip install paddle2onnx onnxruntime for the fastest CPU deployment")
        return "exported the Paddle files only"
    try:
        _convert_onnx(folder)
    except UserError as err:
        if want_onnx:
            raise
        logger.warning(f"inference.onnx not written: {err}")
        return "exported the Paddle files only"
    return ("wrote inference.onnx (paddle2onnx), which predict_cls runs on ONNX Runtime on CPU "
            "(use_onnx: auto); -o Global.export_onnx=False skips it")


def _disk_full(err, folder, params_file):
    """A reason when a paddle2onnx failure is a full disk (it reports it in its own words),
    else None."""
    import errno

    if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
        return "the disk is full"
    try:
        free = shutil.disk_usage(folder).free
        need = os.path.getsize(params_file)
    except OSError:
        return None
    if free < need + (1 << 20):
        return f"{free / 2 ** 20:.1f} MB free, the model's weights alone take {need / 2 ** 20:.1f} MB"
    return None


def _convert_onnx(model_dir, opset_version=ONNX_OPSET, target=None):
    """paddle2onnx of the Paddle model in ``model_dir`` to ``target`` (default ``inference.onnx``)."""
    try:
        import paddle2onnx
    except ImportError:
        raise UserError("ONNX export needs the optional package paddle2onnx: "
                        "pip install paddle2onnx") from None
    model_file, params_file = find_model_files(model_dir, key="Global.save_inference_dir")
    target = target or os.path.join(model_dir, ONNX_FILE)
    tmp = f"{target}.tmp{os.getpid()}"
    try:
        # optimize_tool="None": the default (polygraphy) tries to pip-install packages at run time.
        paddle2onnx.export(model_file, params_file, tmp, opset_version=opset_version,
                           enable_onnx_checker=True, optimize_tool="None")
    except Exception as err:  # paddle2onnx reports failures with assorted exception types
        if os.path.exists(tmp):
            os.remove(tmp)
        full = _disk_full(err, os.path.dirname(os.path.abspath(target)), params_file)
        if full:
            raise write_error(OSError(28, "No space left on device"), target,
                              f"converting to ONNX ({full})") from None
        raise UserError(f"paddle2onnx could not convert {model_file}: "
                        f"{' '.join(str(err).split())[:300]}") from None
    if not os.path.isfile(tmp) or os.path.getsize(tmp) == 0:
        raise UserError(f"paddle2onnx could not convert {model_file} (see its log above)")
    os.replace(tmp, target)
    return target


def export_onnx(model_dir, opset_version=ONNX_OPSET):
    """Convert the export in ``model_dir`` to ``model_dir/inference.onnx`` with paddle2onnx and
    record its hash in the export's ``inference.yml`` (when it has one)."""
    target = _convert_onnx(model_dir, opset_version)
    record = read_inference_yml(model_dir)
    if record is not None:
        write_record(model_dir, record)
    logger.info(f"converted {model_dir} to {target} (ONNX opset {opset_version})")
    return target


