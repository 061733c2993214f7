"""``ppcls.Predictor``: classify images in one line, on the same export and back-ends as
``deploy/python/predict_cls.py``.

::

    predictor = ppcls.Predictor(model_name="MobileNeXt_x1_0")          # or inference_model_dir=
    for results in predictor.predict("photos/"):                        # one list per batch
        print(results)  # [{'class_ids': [...], 'scores': [...], 'file_name': ..., 'label_names': [...]}]

With ``model_name``, the first use downloads PaddleClas's published weights (the
``Arch.pretrained: True`` download and cache, ``~/.paddleclas/weights``) and exports them once
into ``~/.paddleclas/inference/<name>/<key>``, where the key is a hash of the weight file and
the export settings; later uses (in any process) load that export directly. The back-end is
chosen as predict_cls's ``use_onnx: auto`` does: ONNX Runtime on CPU when the export has an
``inference.onnx`` (the fastest here), else Paddle Inference.

``predict(x)`` takes a path, a folder (its images, sorted, recursively), a PIL image, a numpy
``HWC`` uint8 RGB array, a ``NHWC`` batch array, or a list of any of these. Each image goes
through the export's recorded preprocessing (``inference.yml``), exactly as predict_cls does;
``file_name`` is the path, or None for an in-memory image. An unreadable file is one
``Error:`` line on stderr and is skipped, as in predict_cls.
"""

import hashlib
import os
import sys

import numpy as np

from ppcls.utils import logger
from ppcls.utils.errors import ConfigError, DataError
from ppcls.utils.hashing import file_sha256

INFERENCE_HOME_ENV = "PPCLS_INFERENCE_HOME"
EXPORT_VERSION = "1"  # part of the cache key: bump when the export of the same weights changes


def inference_home():
    """Where model-name exports are cached: ``$PPCLS_INFERENCE_HOME``, else ``inference/`` beside
    the weight cache (``~/.paddleclas/inference``)."""
    from ppcls.utils.download import weights_home

    return os.environ.get(INFERENCE_HOME_ENV) or os.path.join(
        os.path.dirname(os.path.abspath(weights_home())), "inference")


def export_config(name, weights, class_num=1000, image_size=None, label_list=None, arch_keys=None):
    """The config that exports ``name`` with ``weights`` (the recipe's preprocessing and, at
    1000 classes, its ImageNet label list)."""
    from ppcls.api.models import IMAGENET_LABELS, recipe_config

    cfg = recipe_config(name)
    arch = dict(arch_keys or {}, name=name, class_num=class_num)
    arch.pop("pretrained", None)
    cfg["Arch"] = arch
    g = cfg.setdefault("Global", {})
    g.update(pretrained_model=weights, export_onnx=None)
    if image_size is not None:  # another input size: the default pipeline for it
        g["image_shape"] = [3, int(image_size), int(image_size)]
        cfg.pop("Infer", None)
        (cfg.get("DataLoader") or {}).pop("Eval", None)
    if label_list is None and class_num == 1000:
        label_list = IMAGENET_LABELS
    cfg["Infer"] = dict(cfg.get("Infer") or {})
    cfg["Infer"]["PostProcess"] = {"name": "Topk", "topk": 5, "class_id_map_file": label_list}
    return cfg


def cached_export(name, weights, class_num=1000, image_size=None, label_list=None, arch_keys=None):
    """The export of ``name`` with the weight file ``weights`` in the inference cache, made
    the first time; returns its folder."""
    from ppcls.inference.artifacts import read_inference_yml
    from ppcls.inference.export import export_model

    cfg = export_config(name, weights, class_num, image_size, label_list, arch_keys)
    label = cfg["Infer"]["PostProcess"]["class_id_map_file"]
    key_text = "\n".join([EXPORT_VERSION, name, file_sha256(weights), str(class_num),
                          repr(sorted((cfg.get("Arch") or {}).items())),
                          repr(cfg["Global"].get("image_shape")),
                          file_sha256(label) if label else "-"])
    key = hashlib.sha256(key_text.encode()).hexdigest()[:16]
    folder = os.path.join(inference_home(), name, key)
    if os.path.isfile(os.path.join(folder, "inference.yml")) and read_inference_yml(folder):
        return folder
    cfg["Global"]["save_inference_dir"] = folder
    logger.info(f"{name}: exporting once into {folder}")
    export_model(cfg)
    return folder


def published_weights(name):
    """The path of PaddleClas's published weights for ``name`` in the weight cache,
    downloading (and checking) them the first time."""
    from ppcls.api.models import list_models, pretrained_url
    from ppcls.arch import build_model
    from ppcls.utils.download import cache_path, fetch_pretrained, resolve_url
    from ppcls.utils.errors import CheckpointError
    from ppcls.utils.weights import load_pretrained

    url = pretrained_url(name)
    if url is None:
        raise CheckpointError(f"Predictor(model_name={name!r}): PaddleClas publishes no weights for "
                              f"{name} (only for {', '.join(list_models(pretrained=True))}); pass "
                              "pretrained=<weight file>, or inference_model_dir=<an export>")
    path = cache_path(resolve_url(url))
    if not os.path.isfile(path):
        model = build_model({"name": name})
        fetch_pretrained(url, lambda p: load_pretrained(model, p), name=f"Predictor({name})")
    return path


def _expand(x, key="predict"):
    """The images ``x`` names: ``[(file_name or None, item)]``."""
    from ppcls.inference.images import list_images

    if isinstance(x, (str, os.PathLike)):
        return [(p, p) for p in list_images(os.fspath(x), key=key)]
    if isinstance(x, np.ndarray) and x.ndim == 4:
        return [(None, image) for image in x]
    if isinstance(x, (list, tuple)):
        return [pair for item in x for pair in _expand(item, key)]
    return [(None, x)]


class Predictor:
    """Classify images with an export (see the module docstring).

    ``model_name`` (a published model; ``pretrained``: True for PaddleClas's weights or the
    path of a weight file) or ``inference_model_dir`` (an export of ``tools/export_model.py``);
    ``topk`` classes per image; ``batch_size`` images per back-end call; ``device`` ``cpu`` or
    ``gpu``; ``use_onnx`` and ``cpu_num_threads`` as in deploy/configs/inference_cls.yaml.
    """

    def __init__(self, model_name=None, inference_model_dir=None, topk=5, batch_size=1,
                 device="cpu", pretrained=True, class_num=1000, use_onnx="auto",
                 cpu_num_threads=None, class_id_map_file=None):
        from ppcls.inference.artifacts import read_inference_yml
        from ppcls.inference.deploy import _sections
        from ppcls.inference.postprocess import build_postprocess
        from ppcls.inference.predictor import create_predictor
        from ppcls.data.preprocess import create_operators

        if (model_name is None) == (inference_model_dir is None):
            raise ConfigError("Predictor: give model_name or inference_model_dir (one of them)")
        if device not in ("cpu", "gpu"):
            raise ConfigError(f"Predictor: device expects 'cpu' or 'gpu', got {device!r}")
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
            raise ConfigError(f"Predictor: batch_size expects a positive integer, got {batch_size!r}")
        if model_name is not None:
            from ppcls.api.models import canonical_name

            name = canonical_name(model_name)
            if pretrained is True:
                weights = published_weights(name)
            elif isinstance(pretrained, (str, os.PathLike)):
                from ppcls.utils.weights import resolve_path

                weights = resolve_path(os.fspath(pretrained))
            else:
                raise ConfigError("Predictor(model_name=...): pretrained expects True (the "
                                  f"published weights) or a weight file path, got {pretrained!r}")
            inference_model_dir = cached_export(name, weights, class_num=class_num)
        if not os.path.isdir(inference_model_dir):
            raise ConfigError(f"Predictor: inference_model_dir: no such folder: {inference_model_dir}")
        self.model_dir = inference_model_dir
        self.batch_size = batch_size
        self.failed = []  # (name, one-line reason) of every image predict could not read
        record = read_inference_yml(inference_model_dir)
        post = {"Topk": {"topk": topk, "class_id_map_file": class_id_map_file}}
        op_list, post, self.is_softmax = _sections({"PostProcess": post}, record, inference_model_dir)
        self.ops = create_operators(op_list, where="PreProcess.transform_ops")
        self.postprocess = build_postprocess(post, key="PostProcess")
        self.options = {"inference_model_dir": inference_model_dir, "use_gpu": device == "gpu",
                        "use_onnx": use_onnx, "batch_size": batch_size,
                        "cpu_num_threads": cpu_num_threads}
        self.predictor = create_predictor(self.options, record)
        described = self.predictor.describe()
        self.backend = described["backend"]
        logger.info(f"Predictor: {inference_model_dir} on {described['backend']} "
                    f"({described['device']}, {described['precision']})")

    def preprocess(self, image):
        """One image (path, PIL image, HWC uint8 RGB array) -> the model's input array."""
        from ppcls.api.models import to_rgb_array
        from ppcls.data.preprocess import transform

        return transform(to_rgb_array(image), self.ops)

    def _scores(self, batch):
        from ppcls.inference.postprocess import softmax

        scores = self.predictor.run(np.stack(batch))
        return scores if self.is_softmax else softmax(scores)

    def predict(self, x, batch_size=None):
        """Yield a list of PaddleClas result dicts per batch of the images ``x`` names."""
        batch_size = batch_size or self.batch_size
        names, arrays = [], []
        for name, item in _expand(x):
            try:
                arrays.append(self.preprocess(item))
            except DataError as err:
                self.failed.append((name, str(err)))
                print(f"Error: {err}", file=sys.stderr, flush=True)
                continue
            names.append(name)
            if len(arrays) == batch_size:
                yield self.postprocess(self._scores(arrays), names)
                names, arrays = [], []
        if arrays:
            yield self.postprocess(self._scores(arrays), names)


__all__ = ["INFERENCE_HOME_ENV", "Predictor", "cached_export", "inference_home", "published_weights"]
