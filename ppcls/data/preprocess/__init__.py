"""Transform ops by PaddleClas name, built from a ``transform_ops`` list, and image decoding.

``create_operators(op_list)`` turns the YAML list::

    - DecodeImage: {to_rgb: True, channel_first: False}
    - ResizeImage: {resize_short: 256}
    - ToCHWImage:

into callables; ``transform(data, ops, rng)`` runs them in order. A name that is not a
registered op, a key an op does not take or a bad value is a ``ConfigError`` naming the op,
the key and what is accepted.
"""

import difflib
import inspect

from ppcls.utils.errors import ConfigError

from .decode import ImageDecodeError, decode_image
from .ops import OPS

__all__ = ["OPS", "create_operators", "transform", "decode_image", "ImageDecodeError"]


def _suggest(word, known):
    close = difflib.get_close_matches(str(word), list(known), n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _accepted_keys(cls):
    params = list(inspect.signature(cls.__init__).parameters.values())[1:]
    keys = [p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    required = [p.name for p in params if p.default is p.empty and p.name in keys]
    return keys, required


def create_operators(op_list, where="transform_ops"):
    """Build the ops of a ``transform_ops`` list; ``where`` names the list in error messages
    (e.g. ``DataLoader.Train.dataset.transform_ops``)."""
    if op_list is None:
        return []
    if not isinstance(op_list, list):
        raise ConfigError(f"{where} expects a list of ops, got {op_list!r}")
    ops = []
    for i, item in enumerate(op_list):
        if isinstance(item, str):
            name, params = item, {}
        elif isinstance(item, dict) and len(item) == 1:
            name, params = next(iter(item.items()))
        else:
            raise ConfigError(f"{where}.{i}: expected one op name with its parameters "
                              f"(e.g. '- CropImage: {{size: 224}}'), got {item!r}")
        if name not in OPS:
            raise ConfigError(f"{where}.{i}: unknown transform op '{name}'{_suggest(name, OPS.names())}; "
                              f"known ops: {', '.join(OPS.names())}")
        params = {} if params is None else params
        if not isinstance(params, dict):
            raise ConfigError(f"{where}.{i}.{name}: expected a mapping of parameters, got {params!r}")
        cls = OPS.get(name)
        keys, required = _accepted_keys(cls)
        for key in params:
            if key not in keys:
                takes = ", ".join(keys) if keys else "no keys"
                raise ConfigError(f"{where}.{i}.{name}: op {name} does not take key '{key}'"
                                  f"{_suggest(key, keys)}; it takes: {takes}")
        missing = [k for k in required if k not in params]
        if missing:
            raise ConfigError(f"{where}.{i}.{name}: op {name} needs key '{missing[0]}'")
        try:
            ops.append(cls(**params))
        except ConfigError as err:
            raise ConfigError(f"{where}.{i}.{name}: {err}") from None
    return ops


def transform(data, ops, rng=None):
    """Run ``data`` through ``ops`` in order; random ops draw from ``rng`` (see ``ops``)."""
    for op in ops:
        data = op(data, rng=rng)
    return data

# Augmentation ops: importing the modules registers them in OPS.
from . import autoaugment  # noqa: E402,F401  AutoAugment, TimmAutoAugment
from . import randaugment  # noqa: E402,F401  RandAugment, RandAugmentV2, RandAugmentV3
from . import erasing  # noqa: E402,F401  RandomErasing
from . import masks  # noqa: E402,F401  Cutout, GridMask, HideAndSeek
from . import geometry  # noqa: E402,F401  CropImageAtRatio, RandCropImageV2, Pad, RandomRotation, PCALighting
