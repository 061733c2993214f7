"""``create_model`` and ``list_models``: the model registry for a Python user, timm-style.

Every model ``create_model`` returns carries its facts and its evaluation preprocessing, as
torchvision's weights do:

- ``model.meta``: ``params`` (trainable, at 1000 classes), ``madds`` (multiply-adds of one
  image at ``input_size``, counted as ``tools/model_info.py`` counts them), ``top1`` (the
  published ImageNet top-1, in percent), ``input_size`` ``[C, H, W]``, ``pretrained_url``
  (None when PaddleClas publishes no weights for it), ``recipe`` (its shipped config),
  ``class_num``, ``categories`` (the ImageNet class names at 1000 classes, else None) and
  ``arch`` (the ``Arch`` section that rebuilds it, for ``ppcls.export``);
- ``model.transforms()``: a callable taking a path, a PIL image or a numpy ``HWC`` uint8 RGB
  array and returning the ``float32 [C, H, W]`` array the model eats: the recipe's
  ``Infer.transforms`` (the same ops an export records in its ``inference.yml``).

The facts are data (``MODEL_FACTS``); a test recomputes params, MAdds and the input size with
``tools/model_info.py`` and checks top-1 against the README's table.
"""

import fnmatch
import os

import numpy as np

from ppcls.utils.errors import ConfigError

PACKAGE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RECIPES = os.path.join(PACKAGE, "configs", "ImageNet", "MobileNeXt")
IMAGENET_LABELS = os.path.join(PACKAGE, "utils", "imagenet1k_label_list.txt")

# name -> (alias, trainable params at 1000 classes, MAdds at 224, published top-1 %)
_FACTS = {
    "MobileNeXt_x0_35": ("MobileNeXt_35", 1_913_976, 75_141_032, 64.7),
    "MobileNeXt_x0_5": ("MobileNeXt_50", 2_152_304, 103_256_448, 67.7),
    "MobileNeXt_x0_75": ("MobileNeXt_75", 2_766_168, 207_926_720, 72.0),
    "MobileNeXt_x1_0": ("MobileNeXt_100", 3_535_416, 311_342_592, 74.02),
    "MobileNeXt_x1_4": ("MobileNeXt_140", 6_126_168, 588_319_256, 76.1),
}
MODEL_FACTS = {name: {"name": name, "alias": alias, "params": params, "madds": madds,
                      "top1": top1, "input_size": [3, 224, 224],
                      "recipe": os.path.join(RECIPES, f"{name}.yaml")}
               for name, (alias, params, madds, top1) in _FACTS.items()}
ALIASES = {facts["alias"]: name for name, facts in MODEL_FACTS.items()}


def canonical_name(name):
    """The PaddleClas name of ``name`` (``MobileNeXt_100`` -> ``MobileNeXt_x1_0``); a name that
    is not registered is one ``ConfigError`` with "did you mean"."""
    from ppcls.arch import MODELS
    from ppcls.utils.registry import suggest

    if not isinstance(name, str) or name not in MODELS:
        names = MODELS.names()
        raise ConfigError(f"unknown model {name!r}; models: {', '.join(list_models())}"
                          f"{suggest(name, names)}")
    return ALIASES.get(name, name)


def pretrained_url(name):
    """The address of the weights PaddleClas publishes for ``name``, or None."""
    from ppcls.arch.backbone import mobilenext

    name = canonical_name(name)
    suffix = name[len("MobileNeXt_"):]
    return mobilenext.PRETRAINED_URLS.get(suffix)


def list_models(pattern="*", pretrained=False, aliases=False):
    """Sorted model names matching the shell-style ``pattern`` (``"MobileNeXt_x1*"``).

    ``pretrained=True``: only those with published weights; ``aliases=True``: also the seed's
    names (``MobileNeXt_100``...), which build the same networks.
    """
    from ppcls.arch import MODELS

    names = [n for n in MODELS.names() if aliases or n not in ALIASES]
    if pretrained:
        names = [n for n in names if pretrained_url(n)]
    return sorted(n for n in names if fnmatch.fnmatchcase(n, pattern))


def model_meta(name, class_num=1000):
    """The facts of ``name`` (see the module docstring), as a new dict."""
    name = canonical_name(name)
    meta = dict(MODEL_FACTS.get(name) or {"name": name, "input_size": [3, 224, 224]})
    meta["input_size"] = list(meta["input_size"])
    meta["pretrained_url"] = pretrained_url(name)
    meta["class_num"] = class_num
    meta["categories"] = None
    if class_num == 1000:
        from ppcls.inference.postprocess import load_class_id_map

        labels = load_class_id_map(IMAGENET_LABELS)
        meta["categories"] = [labels[i] for i in range(1000)]
    return meta


def to_rgb_array(image, name="image"):
    """A path, a PIL image or a numpy ``HWC`` uint8 array (RGB; ``HW`` gray is widened) ->
    the ``uint8 [H, W, 3]`` RGB array the preprocessing ops take."""
    if isinstance(image, (str, os.PathLike)):
        from ppcls.data.preprocess import decode_image

        return decode_image(os.fspath(image))
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover (pillow is a requirement)
        Image = None
    if Image is not None and isinstance(image, Image.Image):
        return np.asarray(image.convert("RGB"), dtype=np.uint8)
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8:
            raise ConfigError(f"{name}: expected a uint8 array (HWC, RGB), got dtype {image.dtype}")
        if image.ndim == 2:
            image = np.repeat(image[:, :, None], 3, axis=2)
        if image.ndim != 3 or image.shape[2] != 3 or not image.shape[0] or not image.shape[1]:
            raise ConfigError(f"{name}: expected an image array of shape [H, W, 3] (RGB), got "
                              f"shape {list(image.shape)}")
        return np.ascontiguousarray(image)
    raise ConfigError(f"{name}: expected a path, a PIL image or a numpy HWC uint8 array, got "
                      f"{type(image).__name__}")


class EvalTransforms:
    """The evaluation preprocessing of a model as one callable (``model.transforms()``).

    ``ops``: a transform-op list without ``DecodeImage`` (as ``inference.yml`` records it).
    ``transforms(image)`` -> ``float32 [C, H, W]``; see :func:`to_rgb_array` for ``image``.
    """

    def __init__(self, op_list):
        from ppcls.data.preprocess import create_operators

        self.op_list = op_list
        self.ops = create_operators(op_list, where="transforms")

    def __call__(self, image):
        from ppcls.data.preprocess import transform

        return np.asarray(transform(to_rgb_array(image), self.ops), dtype=np.float32)

    def __repr__(self):
        names = [next(iter(op)) if isinstance(op, dict) else op for op in self.op_list]
        return f"EvalTransforms({' -> '.join(names)})"


def recipe_config(name):
    """The shipped recipe of ``name`` as a config dict (``Arch.name`` set to ``name``)."""
    from ppcls.utils.config import load_config

    facts = MODEL_FACTS.get(canonical_name(name))
    cfg = load_config(facts["recipe"]) if facts and os.path.isfile(facts["recipe"]) else {}
    cfg.setdefault("Arch", {})["name"] = name
    return cfg


def eval_transforms(name, image_size=None):
    """:class:`EvalTransforms` of ``name``'s recipe; ``image_size`` (an int) changes the
    crop to it (and the resize to ``size / 0.875``, the ImageNet ratio)."""
    from ppcls.inference.export import deploy_transforms

    if image_size is None:
        return EvalTransforms(deploy_transforms(recipe_config(name)))
    return EvalTransforms(deploy_transforms({"Global": {"image_shape": [3, image_size, image_size]}}))


def create_model(name, pretrained=False, class_num=1000, **arch_keys):
    """The network ``name`` (``list_models()``), as ``Arch: {name: ..., class_num: ...}`` builds it.

    ``pretrained``: False (random initialisation), True (PaddleClas's published weights,
    downloaded once into ``~/.paddleclas/weights``) or the path of a ``.pdparams`` /
    ``.safetensors`` file (read without running any pickle). With a ``class_num`` other than
    the weights', the classifier keeps its fresh initialisation (one warning), as fine-tuning
    does. ``arch_keys``: the model's other ``Arch`` keys (``dropout``, ``drop_path_rate``...).

    The model has ``meta`` and ``transforms()`` (see the module docstring).
    """
    from ppcls.arch import build_model

    canonical_name(name)  # a clear error for an unknown name
    if pretrained is not True and pretrained is not False and pretrained is not None \
            and not isinstance(pretrained, (str, os.PathLike)):
        raise ConfigError(f"pretrained: expected True, False or a weight file path, got {pretrained!r}")
    arch = dict(arch_keys, name=name, class_num=class_num,
                pretrained=os.fspath(pretrained) if pretrained not in (True, False, None) else bool(pretrained))
    model = build_model(arch)
    model.meta = model_meta(name, class_num)
    model.meta["arch"] = dict(arch_keys, name=name, class_num=class_num)  # what export rebuilds
    transforms = eval_transforms(name)
    model.transforms = lambda: transforms
    return model


__all__ = ["MODEL_FACTS", "EvalTransforms", "create_model", "eval_transforms", "list_models",
           "model_meta", "recipe_config", "to_rgb_array"]
