"""Deterministic image primitives shared by the policy augmentations (AutoAugment, RandAugment,
TimmAutoAugment), plus the small helpers every augmentation op uses.

The primitives take a PIL image and fixed parameters and hold no randomness: the ops that call
them draw signs, levels and choices from the ``rng`` they are given, so an augmented image is a
function of (seed, epoch, sample index) only. Pixel work is PIL's (``ImageOps``,
``ImageEnhance``, ``Image.transform``).
"""

import numpy as np
from PIL import Image, ImageEnhance, ImageOps

from ppcls.utils.errors import ConfigError, DataError

from .ops import _as_array, _rng, parse_number

PIL_INTERP = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
    "hamming": Image.Resampling.HAMMING,
    "box": Image.Resampling.BOX,
}


# ---------------------------------------------------------------- config checking helpers

def check_interp(value, key="interpolation", allow_random=False):
    if value in PIL_INTERP or (allow_random and value == "random"):
        return value
    known = list(PIL_INTERP) + (["random"] if allow_random else [])
    raise ConfigError(f"key '{key}' expects one of {', '.join(known)}, got {value!r}")


def check_int(value, key, low=None):
    if isinstance(value, bool) or not isinstance(value, int) or (low is not None and value < low):
        bound = f" >= {low}" if low is not None else ""
        raise ConfigError(f"key '{key}' expects an integer{bound}, got {value!r}")
    return value


def check_prob(value, key="prob"):
    p = parse_number(value, key)
    if not 0 <= p <= 1:
        raise ConfigError(f"key '{key}' expects a probability in [0, 1], got {value!r}")
    return p


def check_fill(value, key="fillcolor"):
    """A fill colour: one number (every channel) or a list of 3 numbers -> tuple of 3 ints."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return (int(value),) * 3
    if isinstance(value, (list, tuple)) and len(value) == 3 and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
        return tuple(int(v) for v in value)
    raise ConfigError(f"key '{key}' expects a number or a list of 3 numbers, got {value!r}")


def sign(rng):
    """-1 or +1 with equal chance."""
    return -1.0 if _rng(rng).random() < 0.5 else 1.0


def uint8_image(img, op):
    """The op's input as a ``[H, W, 3]`` (or ``[H, W]``) uint8 array; anything else is a DataError."""
    arr = _as_array(img)
    if arr.dtype != np.uint8 or arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] != 3):
        raise DataError(f"{op} expects a decoded [H, W, 3] uint8 image (place it before NormalizeImage "
                        f"and ToCHWImage), got shape {arr.shape} dtype {arr.dtype}")
    return arr


def to_pil(arr):
    return Image.fromarray(np.ascontiguousarray(arr))


def channel_axis(arr):
    """Where the channels of an image array are: 2 for [H, W, C], 0 for [C, H, W], None for
    [H, W]. A last axis of 1, 3 or 4 means [H, W, C] (the decoded layout), else a first axis of
    1, 3 or 4 means [C, H, W]."""
    if arr.ndim == 2:
        return None
    if arr.ndim == 3:
        if arr.shape[2] in (1, 3, 4):
            return 2
        if arr.shape[0] in (1, 3, 4):
            return 0
    raise DataError(f"expected an image [H, W], [H, W, C] or [C, H, W] with C in 1, 3, 4; got shape {arr.shape}")


def spatial_hw(arr):
    axis = channel_axis(arr)
    return arr.shape[1:3] if axis == 0 else arr.shape[:2]


def set_region(arr, top, left, h, w, value):
    """``arr[region] = value`` for either layout; ``value`` broadcasts like a [h, w, C] array
    (or a scalar / per-channel vector)."""
    axis = channel_axis(arr)
    value = np.asarray(value, dtype=arr.dtype) if not np.isscalar(value) else value
    if axis == 0:
        if not np.isscalar(value):
            value = np.moveaxis(np.broadcast_to(value, (h, w, arr.shape[0])), 2, 0)
        arr[:, top:top + h, left:left + w] = value
    elif axis == 2:
        arr[top:top + h, left:left + w, :] = value
    else:
        if not np.isscalar(value):
            value = np.broadcast_to(value, (h, w, 1))[:, :, 0]
        arr[top:top + h, left:left + w] = value


def apply_mask(arr, mask):
    """Multiply an image by a [H, W] 0/1 mask, in either layout, keeping its dtype."""
    axis = channel_axis(arr)
    m = mask[None] if axis == 0 else (mask[:, :, None] if axis == 2 else mask)
    return (arr * m).astype(arr.dtype)


# ---------------------------------------------------------------- PIL primitives (no randomness)

def shear_x(img, factor, fill, resample):
    return img.transform(img.size, Image.Transform.AFFINE, (1, factor, 0, 0, 1, 0), resample, fillcolor=fill)


def shear_y(img, factor, fill, resample):
    return img.transform(img.size, Image.Transform.AFFINE, (1, 0, 0, factor, 1, 0), resample, fillcolor=fill)


def translate_x(img, pixels, fill, resample):
    """Content moves left by ``pixels`` (PIL's affine maps output to input coordinates)."""
    return img.transform(img.size, Image.Transform.AFFINE, (1, 0, pixels, 0, 1, 0), resample, fillcolor=fill)


def translate_y(img, pixels, fill, resample):
    return img.transform(img.size, Image.Transform.AFFINE, (1, 0, 0, 0, 1, pixels), resample, fillcolor=fill)


def rotate(img, degrees, fill, resample):
    """Counter-clockwise by ``degrees`` about the centre, corners filled with ``fill``."""
    return img.rotate(degrees, resample, fillcolor=fill)


def posterize(img, bits):
    """Keep the top ``bits`` bits of every value (0 bits: black; PIL refuses 0, numpy does not)."""
    bits = int(bits)
    if bits >= 8:
        return img
    mask = (0xFF << (8 - max(0, bits))) & 0xFF
    return Image.fromarray(np.asarray(img) & np.uint8(mask))


def solarize(img, threshold):
    """Invert every value >= threshold (256 or more: unchanged)."""
    return ImageOps.solarize(img, threshold)


def solarize_add(img, add, threshold=128):
    """Add ``add`` (saturating at 255) to every value below ``threshold``."""
    arr = np.asarray(img).astype(np.int16)
    out = np.where(arr < threshold, np.minimum(arr + int(add), 255), arr)
    return Image.fromarray(out.astype(np.uint8), mode=img.mode)


def enhance(kind, img, factor):
    """PIL's ImageEnhance: factor 1 is the identity, 0 grey/black/blurred, >1 stronger."""
    cls = {"color": ImageEnhance.Color, "contrast": ImageEnhance.Contrast,
           "brightness": ImageEnhance.Brightness, "sharpness": ImageEnhance.Sharpness}[kind]
    return cls(img).enhance(factor)


def cutout(img, half, replace, rng):
    """A square of side up to 2 * ``half`` centred at a uniform point (borders clip it) set to
    ``replace`` (TF EfficientNet's cutout, used by RandAugmentV2)."""
    arr = np.array(img)
    h, w = arr.shape[:2]
    cy, cx = randint(rng, 0, h + 1), randint(rng, 0, w + 1)
    arr[max(0, cy - half):min(h, cy + half), max(0, cx - half):min(w, cx + half)] = replace
    return Image.fromarray(arr, mode=img.mode)


def randint(rng, low, high):
    """An integer in [low, high) from ``rng`` (a numpy Generator, or numpy's global state)."""
    rng = _rng(rng)
    if hasattr(rng, "integers"):
        return int(rng.integers(low, high))
    return int(rng.randint(low, high))


def choice_index(rng, n, p=None):
    """Index in range(n), uniform or with probabilities ``p``."""
    rng = _rng(rng)
    return int(rng.choice(n, p=p))
