"""Transform ops by PaddleClas name, built from a ``transform_ops`` list, and image decoding.

``create_operators(op_list)`` turns the YAML list::

    - DecodeImage: {to_rgb: True, channel_first: False}
    - ResizeImage: {resize_short: 256}
    - ToCHWImage:

into callables; ``transform(data, ops, rng)`` runs them in order. A name that is not a
registered op, a key an op does not take or a bad value is a ``ConfigError`` naming the op,
the key and what is accepted.
"""

from ppcls.utils.errors import ConfigError
from ppcls.utils.registry import build

from .decode import ImageDecodeError, decode_image
from .ops import OPS

__all__ = ["OPS", "create_operators", "transform", "decode_image", "ImageDecodeError"]


def create_operators(op_list, where="transform_ops"):
    """Build the ops of a ``transform_ops`` list; ``where`` names the list in error messages
    (e.g. ``DataLoader.Train.dataset.transform_ops``)."""
    if op_list is None:
        return []
    if not isinstance(op_list, list):
        raise ConfigError(f"{where} expects a list of ops, got {op_list!r}")
    ops = []
    for i, item in enumerate(op_list):
        if not isinstance(item, str) and not (isinstance(item, dict) and len(item) == 1):
            raise ConfigError(f"{where}.{i}: expected one op name with its parameters "
                              f"(e.g. '- CropImage: {{size: 224}}'), got {item!r}")
        ops.append(build(item, OPS, f"{where}.{i}"))
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
