"""Image decoding: any file a user feeds us becomes an RGB ``uint8`` array ``[H, W, 3]``, or a
one-line ``DataError`` naming the file and why it cannot be.

Decoding uses PIL. What happens to the image modes PIL can hand back:

- ``RGB``: as is.  ``L`` / ``1`` (grayscale, bilevel), ``P`` without transparency (palette),
  ``CMYK``, ``YCbCr``: converted to RGB by PIL.
- Anything with transparency (``RGBA``, ``LA``, ``PA``, ``P`` with a transparent colour):
  **composited on a white background**, so a transparent logo is seen the way an image viewer
  shows it (dropping the alpha channel instead would expose whatever colour happens to be stored
  under the transparent pixels, often black).
- 16-bit grayscale (``I;16`` and friends, ``I``; 16-bit PNGs open like this): scaled from
  0..65535 to 0..255 (``round(v * 255 / 65535)``), then gray -> RGB.  32-bit float (``F``):
  clipped to 0..255.
- The EXIF orientation tag is applied (a phone photo comes out upright, as OpenCV's ``imread``
  also does).
- Multi-frame files (GIF, TIFF): the first frame.

Refused with ``DataError("<name>: <reason>")``: a missing or unreadable file, an empty file, data
that is no image format PIL knows, truncated or corrupt image data, and images larger than
``PIL.Image.MAX_IMAGE_PIXELS`` (PIL's decompression-bomb limit, 89,478,485 pixels by default;
set it to ``None`` to lift it).
"""

import io
import os
import re
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ppcls.utils.errors import DataError

_BOMB_FILTER = ("ignore", None, Image.DecompressionBombWarning, re.compile(r"PIL\.Image"), 0)


def _quiet_pil_bomb_warning():
    """Our own size check (_check_size) names the limit; PIL's warning would only add noise.

    One filter, added only when missing: a ``catch_warnings()`` per image resets Python's
    once-per-place warning registry every time, so other warnings (Paddle's BatchNorm one ...)
    would repeat every iteration.
    """
    if _BOMB_FILTER not in warnings.filters:
        warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning, module=r"PIL\.Image")


_quiet_pil_bomb_warning()  # at import, before any warning a run could show

# Errors PIL (and the zlib / struct code under it) raise on damaged data.
_BROKEN = (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError, KeyError,
           MemoryError, __import__("struct").error, __import__("zlib").error)


class ImageDecodeError(DataError):
    """A ``DataError`` for one image; ``name`` and ``reason`` are kept apart for callers that
    want to format the message themselves (the dataset adds the list file and line)."""

    def __init__(self, message, name=None, reason=None):
        super().__init__(message)
        self.name = name
        self.reason = reason if reason is not None else message


def _fail(name, reason):
    raise ImageDecodeError(f"{name}: {reason}", name=name, reason=reason)


def _read(src, name):
    if isinstance(src, (bytes, bytearray, memoryview)):
        return bytes(src)
    path = os.fspath(src)
    try:  # no stat calls first: one open per image
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        _fail(name, "file not found")
    except IsADirectoryError:
        _fail(name, "is a directory, not an image file")
    except OSError as err:
        if os.path.isdir(path):
            _fail(name, "is a directory, not an image file")
        _fail(name, f"cannot read the file ({err.strerror or err})")


def _check_size(img, name):
    limit = Image.MAX_IMAGE_PIXELS
    w, h = img.size
    if limit is not None and w * h > limit:
        _fail(name, f"too large to decode safely: {w}x{h} = {w * h:,} pixels is over PIL's "
                    f"decompression-bomb limit of {int(limit):,} (PIL.Image.MAX_IMAGE_PIXELS)")


def _to_rgb(img):
    """A loaded PIL image of any mode -> an RGB PIL image (see the module docstring)."""
    mode = img.mode
    if mode == "RGB":
        return img
    if mode.startswith("I;16") or mode == "I":
        arr = np.asarray(img).astype(np.int64)
        arr = (np.clip(arr, 0, 65535) * 255 + 32767) // 65535
        return Image.fromarray(arr.astype(np.uint8), "L").convert("RGB")
    if mode == "F":
        arr = np.clip(np.asarray(img, dtype=np.float32), 0, 255)
        return Image.fromarray(np.rint(arr).astype(np.uint8), "L").convert("RGB")
    has_alpha = mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
        mode == "P" and "transparency" in img.info) or (
        mode in ("L", "RGB") and "transparency" in img.info)
    if has_alpha:
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return img.convert("RGB")


def decode_image(src, name=None):
    """Decode ``src`` (a path, or the bytes of an image file) to an RGB ``uint8`` array
    ``[H, W, 3]``; ``name`` is what error messages call it (default: the path, or ``<bytes>``).
    """
    if name is None:
        name = "<bytes>" if isinstance(src, (bytes, bytearray, memoryview)) else os.fspath(src)
    data = _read(src, name)
    if not data:
        _fail(name, "empty file (0 bytes)")
    try:
        _quiet_pil_bomb_warning()
        img = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as err:
        _fail(name, f"too large to decode safely ({err})")
    except UnidentifiedImageError:
        _fail(name, f"not an image (no image format recognised in its {len(data):,} bytes)")
    except _BROKEN as err:
        _fail(name, f"truncated or corrupt image data ({str(err) or type(err).__name__})")
    _check_size(img, name)
    try:
        img.load()
        try:
            img = ImageOps.exif_transpose(img)
        except _BROKEN:
            pass  # a damaged EXIF block is no reason to lose the pixels
        img = _to_rgb(img)
    except _BROKEN as err:
        detail = str(err) or type(err).__name__
        _fail(name, f"truncated or corrupt image data ({detail})")
    arr = np.array(img, dtype=np.uint8)
    if arr.ndim != 3 or arr.shape[2] != 3 or arr.shape[0] == 0 or arr.shape[1] == 0:
        _fail(name, f"decoded to an unusable array of shape {arr.shape}")
    return arr
