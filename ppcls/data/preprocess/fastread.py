"""The fast training reader: ``DecodeImage`` + ``RandCropImage`` as one step that decodes only
what the crop needs.

``fuse_reader_ops(ops)`` replaces a ``DecodeImage`` (RGB, ``[H, W, C]``, numpy) followed by a
``RandCropImage`` with one ``DecodeRandCrop``, which

1. reads the JPEG header for the image size (no pixels decoded),
2. draws the crop box with ``RandCropImage.box`` - the same generator calls as the two ops
   unfused, so the same boxes for the same seed - and then the interpolation,
3. decodes with libjpeg-turbo's DCT scaling (1/2, 1/4, 1/8) when the box is still at least the
   target size after it, else at full size, and only the box: with the native helper
   (``native.jpeg_region``: libjpeg-turbo's ``jpeg_crop_scanline`` and ``jpeg_skip_scanlines``,
   compiled once against the system's libjpeg-turbo) the rows above and below the box and the
   columns beside it are not decoded, and the box's pixels are the whole decode's to the bit.
   Without it, simplejpeg (a wheel that bundles libjpeg-turbo) decodes the whole width, and a
   baseline JPEG only its rows down to the box's bottom and one MCU row more (its header's
   height lowered in a copy), again the whole decode's rows to the bit; without simplejpeg,
   PIL's ``Image.draft`` does the scaling,
4. crops the box out and resizes it to the target once, with the drawn bilinear or bicubic:
   OpenCV's ``resize`` when OpenCV is installed (what PaddleClas's default ``backend: cv2``
   uses), else PIL's ``resize(box=...)``. OpenCV's bilinear and bicubic do not antialias and
   PIL's do, so a box that shrinks is first blurred by a small kernel that makes up the
   difference in variance: the result is within one to two grey levels of PIL's on photos.

Everything that is not a plain JPEG goes the unfused way, with the same pixels and the same
errors as before: PNG and other formats, CMYK/YCCK JPEGs, JPEGs whose EXIF orientation is not 1
(the crop box is drawn on the upright image), images over PIL's decompression-bomb limit, and
data libjpeg-turbo calls damaged (PIL then decodes it or names the error, as before).

Differences from the unfused ops (measured in tests/data/test_reader.py and docs/benchmarks.md): a
DCT-scaled decode differs from a full decode averaged over the same blocks by JPEG rounding
(mean absolute difference < 1 grey level), and the OpenCV resize differs from PIL's by one to
two grey levels on average. ``Global.fast_reader: False`` (``ImageNetDataset(fast_reader=False)``) keeps the ops
unfused.
"""

import io
import math
import os
import threading

import numpy as np
from PIL import Image

from .decode import _fail, _read
from . import native
from . import ops as _ops
from .ops import ColorJitter, DecodeImage, NormalizeImage, RandCropImage, _PIL_METHODS, _RANDOM_CHOICES, _rng

try:  # a small wheel that bundles libjpeg-turbo (requirements.txt); PIL is the fallback
    import simplejpeg
except ImportError:  # pragma: no cover - depends on the environment
    simplejpeg = None

_BUFFERS = threading.local()  # each thread's reusable decode buffer (no page faults per image)
_DCT_FACTORS = (8, 4, 2)  # libjpeg-turbo's power-of-two DCT scalings, largest first
_EXIF_ORIENTATION = 0x0112


def jpeg_size(data):
    """``(height, width)`` of a JPEG the fast path can decode (baseline or progressive, YCbCr,
    RGB or grey, upright), from its header alone; ``None`` for anything else."""
    if data[:3] != b"\xff\xd8\xff":
        return None
    if _has_exif(data) and _exif_orientation(data) != 1:
        return None
    if simplejpeg is not None:
        try:
            h, w, colorspace, _ = simplejpeg.decode_jpeg_header(data)
        except ValueError:
            return None
        if colorspace not in ("YCbCr", "Gray", "RGB"):
            return None
    else:
        try:
            img = Image.open(io.BytesIO(data))
        except Exception:  # noqa: BLE001 - PIL will name the problem on the unfused path
            return None
        if img.format != "JPEG" or img.mode not in ("RGB", "L"):
            return None
        w, h = img.size
    limit = Image.MAX_IMAGE_PIXELS
    if h <= 0 or w <= 0 or (limit is not None and w * h > limit):
        return None
    return h, w


def _segments(data):
    """``(marker, position)`` of each marker segment of the JPEG ``data`` up to and including its
    start of scan (0xDA), from the segment headers alone; ``(None, position)`` where the
    headers cannot be followed (damaged data, or the file ends first)."""
    pos, end = 2, len(data)
    while pos + 4 <= end:
        if data[pos] != 0xFF:
            break
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        yield marker, pos
        if marker == 0xDA:
            return
        if marker == 0x01 or 0xD0 <= marker <= 0xD7:  # markers without a length
            pos += 2
        else:
            pos += 2 + int.from_bytes(data[pos + 2:pos + 4], "big")
    yield None, pos


def _has_exif(data):
    """Whether the JPEG ``data`` has an APP1 ``Exif`` segment among the segments before its
    image data (a walk over the segment headers: a few hundred bytes, not a scan of the file).
    A header the walk cannot follow answers True (PIL then reads the EXIF, if any)."""
    for marker, pos in _segments(data):
        if marker is None or marker == 0xE1 and data[pos + 4:pos + 10] == b"Exif\x00\x00":
            return True
        if marker == 0xDA:  # start of scan: no EXIF after this point
            return False
    return True


def _ends_with_eoi(data):
    """Whether the JPEG ``data`` ends with its EOI marker (zero padding allowed): not cut short."""
    return data.rstrip(b"\x00").endswith(b"\xff\xd9")


def _baseline_height_field(data):
    """Offset of the frame height in a baseline / extended-sequential (SOF0, SOF1) JPEG whose
    data ends with its EOI marker; ``None`` for progressive, lossless, arithmetic-coded or
    truncated files (only the first kind decodes its rows strictly top to bottom)."""
    if not _ends_with_eoi(data):
        return None
    for marker, pos in _segments(data):
        if marker in (0xC0, 0xC1):
            return pos + 5 if pos + 9 <= len(data) else None
        if marker is None or marker == 0xDA or 0xC2 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            return None  # unreadable headers, another frame type, or a scan before any frame
    return None


_ROW_MARGIN = 16  # rows decoded past the box: one 4:2:0 MCU row (the chroma upsampling reads ahead)


def _top_rows(data, rows):
    """``data`` with the frame height set to ``rows`` when that saves decoding (a baseline JPEG
    decodes its rows top to bottom and stops there); else ``None``."""
    field = _baseline_height_field(data)
    if field is None or rows >= int.from_bytes(data[field:field + 2], "big"):
        return None
    return data[:field] + int(rows).to_bytes(2, "big") + data[field + 2:]


def _exif_orientation(data):
    try:
        return Image.open(io.BytesIO(data)).getexif().get(_EXIF_ORIENTATION, 1)
    except Exception:  # noqa: BLE001 - unreadable EXIF: let the unfused path decide
        return None


def dct_factor(box, size):
    """The largest of 8, 4, 2 that leaves the ``box`` (left, top, right, bottom) at least
    ``size`` (w, h) after dividing by it; 1 when none does."""
    bw, bh = box[2] - box[0], box[3] - box[1]
    for k in _DCT_FACTORS:
        if bw // k >= size[0] and bh // k >= size[1]:
            return k
    return 1


def decode_jpeg_scaled(data, h, w, k, rows=None):
    """The RGB ``uint8`` pixels of a JPEG of ``h`` x ``w`` decoded at about 1/``k`` of its size
    (``ceil(h / k)`` x ``ceil(w / k)``). Raises ``ValueError``/``OSError`` on damaged data.
    With simplejpeg the array is a view of this thread's decode buffer, valid until the thread's
    next call (the fused op resizes it into a new array at once).

    ``rows``: only the top ``rows`` source rows are needed. A baseline JPEG then decodes only
    those (and a margin), by declaring that height in a copy of its header: the rows returned
    are those of the whole decode, to the bit (tests/data/test_reader.py), and fewer of them."""
    if simplejpeg is not None:
        strict = True
        if rows is not None:
            rows = min(h, -(-(rows + _ROW_MARGIN * k) // 16) * 16)
            short = _top_rows(data, rows)
            if short is not None:  # libjpeg-turbo reports the unread image data as a warning
                data, h, strict = short, rows, False
        oh, ow = -(-h // k), -(-w // k)
        buf = getattr(_BUFFERS, "pixels", None)
        if buf is None or buf.size < oh * ow * 3:  # one buffer per thread, grown as needed
            buf = _BUFFERS.pixels = np.empty(max(oh * ow * 3, 1 << 20), np.uint8)
        if k == 1:
            return simplejpeg.decode_jpeg(data, colorspace="RGB", buffer=buf, strict=strict)
        return simplejpeg.decode_jpeg(data, colorspace="RGB", min_height=oh, min_width=ow, buffer=buf,
                                      strict=strict)
    img = Image.open(io.BytesIO(data))
    if k > 1:
        img.draft("RGB", (w // k, h // k))  # PIL picks the scale from floor(size / requested)
    img.load()
    return np.asarray(img if img.mode == "RGB" else img.convert("RGB"))


def box_bounds(box, w, h):
    """The whole pixels (left, top, right, bottom) of ``box`` (floats allowed) that
    ``resize_box`` resizes in a ``w`` x ``h`` image: rounded, at least one pixel, inside it."""
    left, top = min(max(0, int(round(box[0]))), w - 1), min(max(0, int(round(box[1]))), h - 1)
    return left, top, max(left + 1, min(w, int(round(box[2])))), max(top + 1, min(h, int(round(box[3]))))


def resize_box(arr, box, size, method):
    """``arr`` cropped to ``box`` (left, top, right, bottom; floats allowed) and resized to
    ``size`` (w, h) in one step; ``method`` is bilinear or bicubic (see the module docstring)."""
    cv2 = _ops._import_cv2()
    if cv2 is None:
        return np.asarray(Image.fromarray(arr).resize(size, _PIL_METHODS[method], box=box))
    left, top, right, bottom = box_bounds(box, arr.shape[1], arr.shape[0])
    return resize_region(arr[top:bottom, left:right], size, method)


def resize_region(region, size, method):
    """The whole of ``region`` resized to ``size`` with OpenCV's bilinear or bicubic, blurred
    first when it shrinks (see the module docstring)."""
    cv2 = _ops._import_cv2()
    # PIL widens its filter by the shrink ratio r (antialiasing); OpenCV samples the source with
    # the filter at its width. Blurring first by a kernel of variance (r^2 - 1) / 6 (the
    # triangle's 1/6 times r^2 - 1) makes up the difference, per axis.
    ax, ay = (((n / t) ** 2 - 1) / 12 for n, t in zip(region.shape[1::-1], size))
    if ax > _BLUR_FROM or ay > _BLUR_FROM:
        region = cv2.sepFilter2D(region, -1, _blur_kernel(ax), _blur_kernel(ay))
    flag = cv2.INTER_CUBIC if method == "bicubic" else cv2.INTER_LINEAR
    return cv2.resize(region, size, interpolation=flag)


_BLUR_FROM = 0.04  # a above which the box is blurred first: a shrink of about 1.22


def _blur_kernel(a):
    """A kernel of variance ``2a``: ``[a, 1 - 2a, a]`` up to a shrink of 2 (``a = 1/4``, where
    the DCT scaling takes over for all but long boxes), a Gaussian beyond; one tap when ``a`` is
    negligible."""
    if a <= 0.01:
        return _ONE_TAP
    if a <= 0.25:
        return np.array([a, 1 - 2 * a, a], np.float32)
    sigma = (2 * a) ** 0.5
    return _ops._import_cv2().getGaussianKernel(2 * math.ceil(3 * sigma) + 1, sigma, ktype=5)  # 5: CV_32F


_ONE_TAP = np.ones(1, np.float32)
# OpenCV's interpolation flags (cv2.INTER_NEAREST, _LINEAR, _CUBIC, _AREA, _LANCZOS4)
_CV2_FLAGS = {"nearest": 0, "bilinear": 1, "bicubic": 2, "area": 3, "lanczos": 4}


def _scaled(box, k, sx, sy):
    """``box`` in the pixels of an image decoded at 1/``k``, ``sx`` x ``sy`` of the original."""
    return box if k == 1 else (box[0] * sx, box[1] * sy, box[2] * sx, box[3] * sy)


class DecodeRandCrop:
    """``DecodeImage`` then ``RandCropImage`` in one step (see the module docstring). Takes what
    ``DecodeImage`` takes; an array or PIL image goes through the two ops unfused."""

    chw_output = False

    def __init__(self, decode, crop):
        self.decode, self.crop = decode, crop

    def __call__(self, src, rng=None):
        if isinstance(src, (bytes, bytearray, memoryview, str, os.PathLike)):
            name = "<bytes>" if isinstance(src, (bytes, bytearray, memoryview)) else os.fspath(src)
            data = _read(src, name)
            if not data:
                _fail(name, "empty file (0 bytes)")
            hw = jpeg_size(data)
            if hw is not None:
                return self._fast(src, data, hw, _rng(rng))
        return self.crop(self.decode(src), rng)

    def plan(self, h, w, rng):
        """(box, interpolation, DCT factor) for an ``h`` x ``w`` image: the box and the
        interpolation drawn with RandCropImage's generator calls, in its order."""
        crop = self.crop
        box = crop.box(h, w, rng)
        method = crop.resizer.interpolation
        if method == "random":  # the draw _Resizer makes, in the same place
            method = _RANDOM_CHOICES[int(rng.random() * len(_RANDOM_CHOICES))]
        return box, method, dct_factor(box, crop.size)

    def _fast(self, src, data, hw, rng):
        h, w = hw
        crop = self.crop
        box, method, k = self.plan(h, w, rng)
        size = (-(-w // k), -(-h // k))  # the decode's (w, h) at 1/k
        out = self._region_path(data, k, size, _scaled(box, k, size[0] / w, size[1] / h), method)
        if out is not None:
            return out
        try:
            arr = decode_jpeg_scaled(data, h, w, k, rows=int(math.ceil(box[3])))
        except (ValueError, OSError, SyntaxError):
            arr = None
        if arr is None or arr.ndim != 3 or arr.shape[2] != 3:
            k, arr = 1, self.decode(src)  # damaged for libjpeg-turbo: PIL decodes it or names the error
            if arr.shape[:2] != (h, w):  # pragma: no cover - a header that lies about the size
                return self.crop(arr, rng)
        # the whole image's scale (the array may hold only its top rows; PIL's draft picks its own)
        scaled = _scaled(box, k, arr.shape[1] / w, size[1] / h)
        if crop.resizer.backend == "pil" and method in ("bilinear", "bicubic"):
            return resize_box(arr, scaled, crop.size, method)
        return self._unfused_resize(arr, scaled, method)

    def _region_path(self, data, k, size, scaled, method):
        """The crop decoded alone (``native.jpeg_region``: only its rows and columns) and
        resized, where the resize reads nothing outside the box's whole pixels (OpenCV's, as
        ``resize_box`` and the ``backend: cv2`` resize do); None where that is not so, without
        the native helper, or on data it calls damaged (the caller then decodes it all)."""
        cv2 = _ops._import_cv2()
        if cv2 is None or not native.available() or not _ends_with_eoi(data):
            return None  # (a file cut short takes the usual decode, which names the damage as before)
        pil = self.crop.resizer.backend == "pil"
        if pil and method in ("bilinear", "bicubic"):
            left, top, right, bottom = box_bounds(scaled, *size)
        elif not pil:
            left, top, right, bottom = (int(round(v)) for v in scaled)
            if not (0 <= left < right <= size[0] and 0 <= top < bottom <= size[1]):
                return None
        else:
            return None  # PIL's other filters read past the box
        region = native.jpeg_region(data, k, size, left, top, right, bottom)
        if region is None:
            return None
        if pil:
            return resize_region(region, self.crop.size, method)
        return cv2.resize(np.ascontiguousarray(region), self.crop.size, interpolation=_CV2_FLAGS[method])

    def _unfused_resize(self, arr, box, method):
        """The configured backend's own resize (other interpolations, ``backend: cv2``)."""
        resizer = self.crop.resizer
        box = tuple(int(round(v)) for v in box)
        if resizer.backend == "pil":
            return np.asarray(Image.fromarray(arr).resize(self.crop.size, _PIL_METHODS[method], box=box))
        cv2 = _ops._import_cv2()
        region = arr[box[1]:box[3], box[0]:box[2]]
        return cv2.resize(np.ascontiguousarray(region), self.crop.size, interpolation=_CV2_FLAGS[method])


def _native_jitter(arr, draws):
    """Whether the native jitter takes this image and these draws (uint8 RGB, no hue)."""
    return arr.dtype == np.uint8 and arr.ndim == 3 and arr.shape[2] == 3 and all(key != "hue" for key, _ in draws)


class JitterNormalize:
    """``ColorJitter`` then ``NormalizeImage`` (``order: ''``) and the [C, H, W] step in one: a
    brightness or contrast lookup the jitter ends with is folded into the normalise tables
    instead of making a pass over the image of its own. The same draws and the same numbers as
    the two ops one after the other (tests/data/test_reader.py)."""

    chw_output = True

    def __init__(self, jitter, normalize):
        self.jitter, self.normalize = jitter, normalize
        # the native step does float32 output of three channels (else the ops' own arithmetic)
        self.native = not normalize.output_fp16 and normalize.channel_num == 3

    def __call__(self, img, rng=None):
        arr, draws = _ops._as_array(img), self.jitter.draw(_rng(rng))
        if self.native and _native_jitter(arr, draws):
            out = native.jitter_normalize(arr, draws, self.normalize.columns())
            if out is not None:
                return out
        arr, table = self.jitter.apply(arr, draws, defer=True)
        return self.normalize.to_chw(arr, table=table)


class JitterCHW:
    """A last ``ColorJitter`` and the dataset's [C, H, W] step in one (the list of a dataset that
    leaves ``NormalizeImage`` to the device): the native helper's one pass per adjustment into
    uint8 [3, H, W], else the op then ``ToCHWImage``. The same draws and the same bytes."""

    chw_output = True

    def __init__(self, jitter):
        self.jitter = jitter

    def __call__(self, img, rng=None):
        arr, draws = _ops._as_array(img), self.jitter.draw(_rng(rng))
        if _native_jitter(arr, draws):
            out = native.jitter_chw(arr, draws)
            if out is not None:
                return out
        return _ops.ToCHWImage()(self.jitter.apply(arr, draws))


def fusable(decode, crop):
    return (type(decode) is DecodeImage and type(crop) is RandCropImage and decode.to_np
            and decode.to_rgb and not decode.channel_first)


def fuse_reader_ops(ops, chw=False):
    """``ops`` with each fusable ``DecodeImage`` + ``RandCropImage`` pair as one ``DecodeRandCrop``.
    ``chw``: the list is to end in [C, H, W] (the dataset's own step after it); a last
    ``NormalizeImage`` (``order: ''``) then does that itself, together with a ``ColorJitter``
    just before it, and so does a last ``ColorJitter`` (``JitterCHW``). Returns (the steps,
    whether they end in [C, H, W] themselves)."""
    out, i = [], 0
    while i < len(ops):
        if i + 1 < len(ops) and fusable(ops[i], ops[i + 1]):
            out.append(DecodeRandCrop(ops[i], ops[i + 1]))
            i += 2
        else:
            out.append(ops[i])
            i += 1
    if chw and out and type(out[-1]) is ColorJitter:
        out[-1] = JitterCHW(out[-1])
        return out, True
    if not (chw and out and type(out[-1]) is NormalizeImage and not out[-1].chw):
        return out, False
    if len(out) > 1 and type(out[-2]) is ColorJitter:
        out[-2:] = [JitterNormalize(out[-2], out[-1])]
    else:
        out[-1] = out[-1].to_chw
    return out, True

