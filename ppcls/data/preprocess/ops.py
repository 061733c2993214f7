"""The transform ops a PaddleClas ``transform_ops`` list names, registered under those names.

Every op is a callable ``op(img, rng=None) -> img``. Between ops an image is a numpy array
(``[H, W, C]`` ``uint8`` until ``NormalizeImage`` makes it ``float32``); a PIL image is accepted
as input too. Random ops draw only from ``rng`` (a ``numpy.random.Generator``, or anything with
``random()``, ``uniform(a, b)`` and ``permutation(n)``), so the dataset can make augmentation a
function of (seed, epoch, sample index); without ``rng`` they use numpy's global generator.

Sizes given as a pair are ``[width, height]``, as in PaddleClas. Decoding and resizing are
PIL's (``backend: pil``, our default) or OpenCV's (``backend: cv2``, only when ``cv2`` is
importable: ``pip install opencv-python-headless``). PaddleClas defaults to cv2; here OpenCV is
optional, so an op without a ``backend`` key decodes and resizes with PIL.

The image stays ``[H, W, C]`` through a dataset's list: as in PaddleClas, the dataset makes it
``[C, H, W]`` after the last op unless an op already did (``ToCHWImage``; see
``ppcls.data.dataset.chw_step``, which reads each op's ``chw_output``).
"""

import math
import os
import threading

import numpy as np
from PIL import Image

from ppcls.utils import logger
from ppcls.utils.errors import ConfigError, DataError
from ppcls.utils.registry import Registry

from .decode import _BROKEN, _check_size, _fail, _read, _to_rgb, decode_image

OPS = Registry("transform op", noun="op", listing="known ops")

_PIL_METHODS = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "box": Image.Resampling.BOX,
    "lanczos": Image.Resampling.LANCZOS,
    "hamming": Image.Resampling.HAMMING,
}
_CV2_METHODS = ("nearest", "bilinear", "area", "bicubic", "lanczos")
# "random": each call picks bilinear or bicubic with equal chance (the MobileNeXt training recipe).
_RANDOM_CHOICES = ("bilinear", "bicubic")


def parse_number(value, key):
    """A number from YAML: ``0.5``, ``1``, or a string such as ``'1.0/255.0'`` (PaddleClas writes
    ``scale: 1.0/255.0``). Parsed as at most one division of two decimals; nothing is evaluated."""
    if isinstance(value, bool):
        raise ConfigError(f"key '{key}' expects a number, got {value!r}")
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        parts = value.replace(" ", "").split("/")
        try:
            if len(parts) == 1:
                return float(parts[0])
            if len(parts) == 2:
                den = float(parts[1])
                if den == 0:
                    raise ZeroDivisionError
                return float(parts[0]) / den
        except (ValueError, ZeroDivisionError):
            pass
    raise ConfigError(f"key '{key}' expects a number or a fraction like '1.0/255.0', got {value!r}")


def _pair(value, key):
    """``224`` -> ``(224, 224)``; ``[w, h]`` -> ``(w, h)``; positive integers only."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = (value, value)
    if (isinstance(value, (list, tuple)) and len(value) == 2
            and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value)):
        return int(value[0]), int(value[1])
    raise ConfigError(f"key '{key}' expects a positive integer or [width, height], got {value!r}")


def _range(value, key, positive=False):
    if (isinstance(value, (list, tuple)) and len(value) == 2):
        lo, hi = (parse_number(v, key) for v in value)
        if lo <= hi and (lo > 0 or not positive and lo >= 0):
            return lo, hi
    raise ConfigError(f"key '{key}' expects [low, high] with 0 {'<' if positive else '<='} low <= high, "
                      f"got {value!r}")


def _rng(rng):
    return np.random if rng is None else rng


def _as_array(img):
    if isinstance(img, Image.Image):
        return np.array(_to_rgb(img) if img.mode not in ("RGB", "L") else img)
    if isinstance(img, np.ndarray):
        return img
    raise DataError(f"expected a decoded image (numpy array or PIL image), got {type(img).__name__}: "
                    "put DecodeImage first in transform_ops")


def _hw(arr):
    if arr.ndim not in (2, 3):
        raise DataError(f"expected an image array [H, W] or [H, W, C], got shape {arr.shape}")
    return arr.shape[0], arr.shape[1]


_CV2 = []  # [cv2 or None], once imported


def _import_cv2():
    """OpenCV, or None when it is not installed. Its own thread pool follows OMP_NUM_THREADS when
    that is set (OpenCV's pthreads pool ignores it; the reader's images are small, and the
    DataLoader's parallelism is its worker processes: see ``ppcls.data.loader.seed_worker``)."""
    if not _CV2:
        try:
            import cv2
        except ImportError:
            cv2 = None
        threads = os.environ.get("OMP_NUM_THREADS", "").strip()
        if cv2 is not None and threads.isdigit() and int(threads) > 0:
            cv2.setNumThreads(int(threads))
        _CV2.append(cv2)
    return _CV2[0]


def _check_bool(key, value):
    if not isinstance(value, bool):
        raise ConfigError(f"key '{key}' expects true/false, got {value!r}")


def _check_backend(backend):
    """'pil' or 'cv2' (any case, as PaddleClas lowercases it); cv2 only with OpenCV installed."""
    name = backend.lower() if isinstance(backend, str) else backend
    if name not in ("pil", "cv2"):
        raise ConfigError(f"key 'backend' expects 'pil' or 'cv2', got {backend!r}")
    if name == "cv2" and _import_cv2() is None:
        raise ConfigError("key 'backend' is 'cv2' but OpenCV is not installed "
                          "(pip install opencv-python-headless), or use backend: pil")
    return name


def decode_image_cv2(src, name=None):
    """Decode ``src`` (a path or the bytes of an image file) with OpenCV, as PaddleClas's
    ``backend: cv2`` does (``cv2.imdecode`` in colour mode: EXIF orientation applied, alpha
    dropped, 16-bit scaled to 8-bit). Returns ``[H, W, 3]`` ``uint8`` in OpenCV's BGR order.
    Errors are ``decode_image``'s: a ``DataError`` naming the file, and images over PIL's
    decompression-bomb limit are refused before OpenCV allocates them."""
    import io

    cv2 = _import_cv2()
    if name is None:
        name = "<bytes>" if isinstance(src, (bytes, bytearray, memoryview)) else str(src)
    data = _read(src, name)
    if not data:
        _fail(name, "empty file (0 bytes)")
    try:  # the header alone gives the size; a format PIL does not know is left to OpenCV
        header = Image.open(io.BytesIO(data))
    except Exception:  # noqa: BLE001 (any failure here only means "no size check")
        header = None
    if header is not None:
        _check_size(header, name)
    try:
        arr = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
    except (cv2.error, *_BROKEN) as err:
        _fail(name, f"truncated or corrupt image data (OpenCV: {str(err).strip() or type(err).__name__})")
    if arr is None or arr.ndim != 3 or arr.shape[2] != 3 or arr.size == 0:
        _fail(name, f"not an image OpenCV can decode (no image in its {len(data):,} bytes, or corrupt data)")
    return arr


class _Resizer:
    """Resize (optionally a ``box`` of) an image with the configured backend and interpolation."""

    def __init__(self, interpolation, backend, return_numpy=True):
        backend = _check_backend(backend)
        _check_bool("return_numpy", return_numpy)
        self.return_numpy = return_numpy
        known = tuple(_PIL_METHODS) if backend == "pil" else _CV2_METHODS
        interpolation = "bilinear" if interpolation is None else interpolation
        if interpolation != "random" and interpolation not in known:
            raise ConfigError(f"key 'interpolation' expects one of {', '.join(known + ('random',))} "
                              f"for backend {backend}, got {interpolation!r}")
        self.backend = backend
        self.interpolation = interpolation

    def __call__(self, arr, size, rng, box=None):
        """``arr`` resized to ``size`` = (w, h); ``box`` = (left, top, right, bottom) crops first."""
        method = self.interpolation
        if method == "random":
            method = _RANDOM_CHOICES[int(_rng(rng).random() * len(_RANDOM_CHOICES))]
        if self.backend == "pil":
            img = arr if isinstance(arr, Image.Image) else Image.fromarray(arr)
            out = img.resize(size, _PIL_METHODS[method], box=box)
            return np.asarray(out) if self.return_numpy else out
        arr = _as_array(arr)
        cv2 = _import_cv2()
        if box is not None:
            left, top, right, bottom = box
            arr = arr[top:bottom, left:right]
        flag = {"nearest": cv2.INTER_NEAREST, "bilinear": cv2.INTER_LINEAR, "area": cv2.INTER_AREA,
                "bicubic": cv2.INTER_CUBIC, "lanczos": cv2.INTER_LANCZOS4}[method]
        out = cv2.resize(np.ascontiguousarray(arr), size, interpolation=flag)
        return out[:, :, None] if arr.ndim == 3 and out.ndim == 2 else out


@OPS.register
class DecodeImage:
    """File path or bytes -> ``[H, W, 3]`` ``uint8`` RGB (``to_rgb: False`` gives BGR, the channel
    order OpenCV-based pipelines expect); ``channel_first: True`` gives ``[3, H, W]``.

    ``backend``: ``pil`` (default here: ``decode_image``, which also composites transparency on
    white and handles 16-bit and palette images) or ``cv2`` (OpenCV's ``imdecode``, PaddleClas's
    default; needs OpenCV). Both give the same RGB pixels for ordinary 8-bit images.
    ``to_np: False`` hands the next op the image as the backend decodes it: a PIL RGB image with
    ``pil`` (the next ops take PIL images), OpenCV's BGR array with ``cv2``; ``to_rgb`` and
    ``channel_first`` apply only with ``to_np: True``, as in PaddleClas."""

    def __init__(self, to_rgb=True, channel_first=False, to_np=True, backend="pil"):
        for key, value in (("to_rgb", to_rgb), ("channel_first", channel_first), ("to_np", to_np)):
            _check_bool(key, value)
        self.backend = _check_backend(backend)
        self.to_rgb = to_rgb
        self.channel_first = channel_first
        self.to_np = to_np
        # the layout this op leaves (read by the dataset, which makes [C, H, W] after the list)
        self.chw_output = channel_first and to_np
        if not to_np and (channel_first or not to_rgb or self.backend == "cv2"):
            ignored = [f"{k}: {v}" for k, v in (("to_rgb", to_rgb), ("channel_first", channel_first))
                       if v != (k == "to_rgb")]
            what = "a PIL RGB image" if self.backend == "pil" else "OpenCV's BGR [H, W, 3] array"
            logger.warning(f"DecodeImage with to_np: False gives {what}"
                           + (f"; {', '.join(ignored)} is ignored" if ignored else "")
                           + " (to_rgb and channel_first apply only with to_np: True, as in PaddleClas)")

    def __call__(self, src, rng=None):
        if isinstance(src, Image.Image):
            img = _to_rgb(src)
            if not self.to_np:
                return img
            arr = np.asarray(img)
        elif isinstance(src, np.ndarray):
            if not self.to_np:
                return src
            arr = src
        elif self.backend == "cv2":
            bgr = decode_image_cv2(src)
            if not self.to_np:
                return bgr
            arr = bgr[:, :, ::-1]
        else:
            arr = decode_image(src)
            if not self.to_np:
                return Image.fromarray(arr)
        if not self.to_rgb:
            arr = arr[:, :, ::-1]
        if self.channel_first:
            arr = arr.transpose(2, 0, 1)
        return np.ascontiguousarray(arr)


@OPS.register
class ResizeImage:
    """Resize to ``size`` ([w, h] or a square), or so the short side is ``resize_short``
    (the long side scaled by the same factor and rounded, as PaddleClas does).
    ``return_numpy: False`` (``backend: pil`` only, as in PaddleClas) gives a PIL image."""

    def __init__(self, size=None, resize_short=None, interpolation=None, backend="pil",
                 return_numpy=True):
        if (size is None) == (resize_short is None):
            raise ConfigError("give exactly one of the keys 'size' and 'resize_short'")
        self.size = _pair(size, "size") if size is not None else None
        if resize_short is not None and (not isinstance(resize_short, int) or isinstance(resize_short, bool)
                                         or resize_short <= 0):
            raise ConfigError(f"key 'resize_short' expects a positive integer, got {resize_short!r}")
        self.resize_short = resize_short
        self.resizer = _Resizer(interpolation, backend, return_numpy)

    def target_size(self, h, w):
        if self.size is not None:
            return self.size
        percent = self.resize_short / min(w, h)
        return max(1, int(round(w * percent))), max(1, int(round(h * percent)))

    def __call__(self, img, rng=None):
        if isinstance(img, Image.Image) and self.resizer.backend == "pil":
            w, h = img.size  # resized as it is: no round trip through numpy
            return self.resizer(_to_rgb(img) if img.mode not in ("RGB", "L") else img,
                                self.target_size(h, w), rng)
        arr = _as_array(img)
        h, w = _hw(arr)
        return self.resizer(arr, self.target_size(h, w), rng)


@OPS.register
class CropImage:
    """Center crop to ``size`` ([w, h] or a square); an image smaller than that is an error."""

    def __init__(self, size):
        self.size = _pair(size, "size")

    def __call__(self, img, rng=None):
        arr = _as_array(img)
        h, w = _hw(arr)
        cw, ch = self.size
        if cw > w or ch > h:
            raise DataError(f"CropImage: image is {w}x{h} (w x h), smaller than the crop {cw}x{ch}; "
                            "resize it first (ResizeImage)")
        top, left = (h - ch) // 2, (w - cw) // 2
        return arr[top:top + ch, left:left + cw]


@OPS.register
class RandCropImage:
    """Random-resized crop (Inception style): a box of ``scale`` times the image area with
    aspect ratio (w/h) in ``ratio`` (uniform, or log-uniform with ``use_log_aspect``), at a
    random place, resized to ``size``. Up to ten tries for a box that fits; else the largest
    centred box whose ratio is in range. ``interpolation: random`` picks bilinear or bicubic
    per call.

    ``progress_size`` (a list of sizes, one per stage) is what progressive training
    (``Global.train_mode: progressive``, ``ppcls.engine.progressive``) sets ``size`` from, stage
    by stage; the op itself always crops to ``size``."""

    def __init__(self, size, scale=None, ratio=None, interpolation=None, use_log_aspect=False,
                 backend="pil", progress_size=None):
        self.size = _pair(size, "size")
        if progress_size is not None:
            if not isinstance(progress_size, (list, tuple)) or not progress_size:
                raise ConfigError(f"key 'progress_size' expects a list of sizes (one per training "
                                  f"stage), got {progress_size!r}")
            progress_size = [_pair(v, "progress_size") for v in progress_size]
        self.progress_size = progress_size
        self.scale = _range([0.08, 1.0] if scale is None else scale, "scale", positive=True)
        self.ratio = _range([3.0 / 4.0, 4.0 / 3.0] if ratio is None else ratio, "ratio", positive=True)
        if not isinstance(use_log_aspect, bool):
            raise ConfigError(f"key 'use_log_aspect' expects true/false, got {use_log_aspect!r}")
        self.use_log_aspect = use_log_aspect
        self.resizer = _Resizer(interpolation, backend)

    def box(self, h, w, rng):
        """The crop box (left, top, right, bottom) for an ``h`` x ``w`` image."""
        rng = _rng(rng)
        area = h * w
        lo, hi = self.ratio
        for _ in range(10):
            target = area * rng.uniform(*self.scale)
            if self.use_log_aspect:
                aspect = math.exp(rng.uniform(math.log(lo), math.log(hi)))
            else:
                aspect = rng.uniform(lo, hi)
            cw = int(round(math.sqrt(target * aspect)))
            ch = int(round(math.sqrt(target / aspect)))
            if 0 < cw <= w and 0 < ch <= h:
                left = min(int(rng.random() * (w - cw + 1)), w - cw)
                top = min(int(rng.random() * (h - ch + 1)), h - ch)
                return left, top, left + cw, top + ch
        in_ratio = w / h
        if in_ratio < lo:
            cw, ch = w, max(1, min(h, int(round(w / lo))))
        elif in_ratio > hi:
            cw, ch = max(1, min(w, int(round(h * hi)))), h
        else:
            cw, ch = w, h
        left, top = (w - cw) // 2, (h - ch) // 2
        return left, top, left + cw, top + ch

    def __call__(self, img, rng=None):
        arr = _as_array(img)
        h, w = _hw(arr)
        return self.resizer(arr, self.size, rng, box=self.box(h, w, rng))


@OPS.register
class RandFlipImage:
    """Flip with probability 0.5: ``flip_code`` 1 horizontal, 0 vertical, -1 both."""

    def __init__(self, flip_code=1):
        if flip_code not in (-1, 0, 1) or isinstance(flip_code, bool):
            raise ConfigError(f"key 'flip_code' expects 1 (horizontal), 0 (vertical) or -1 (both), "
                              f"got {flip_code!r}")
        self.flip_code = flip_code

    def __call__(self, img, rng=None):
        arr = _as_array(img)
        if _rng(rng).random() >= 0.5:
            return arr
        cv2 = _import_cv2()
        if cv2 is not None and arr.dtype == np.uint8 and arr.ndim == 3 and arr.shape[2] in (1, 3, 4):
            return cv2.flip(np.ascontiguousarray(arr), self.flip_code).reshape(arr.shape)
        axes = {1: (1,), 0: (0,), -1: (0, 1)}[self.flip_code]
        return np.flip(arr, axis=axes)  # a view: the next copy (ColorJitter, [C, H, W]) pays for it


@OPS.register
class ColorJitter:
    """Random brightness, contrast, saturation (factors uniform in [max(0, 1 - x), 1 + x]) and hue
    (shift uniform in [-hue, hue], hue <= 0.5), applied in a random order with probability
    ``prob``; the adjustments are those of paddle.vision's functional ops on PIL images (PIL's
    ``ImageEnhance``), on a uint8 RGB image computed as: brightness and contrast one lookup table
    each (PIL's blend arithmetic on the 256 grey levels, so the same values), saturation one
    blend with the grey image (PIL's arithmetic in float32), hue paddle.vision's ``adjust_hue``."""

    def __init__(self, brightness=0.0, contrast=0.0, saturation=0.0, hue=0.0, prob=1.0):
        self.factors = {}
        for key, value in (("brightness", brightness), ("contrast", contrast),
                           ("saturation", saturation), ("hue", hue)):
            value = parse_number(value, key)
            if value < 0 or (key == "hue" and value > 0.5):
                raise ConfigError(f"key '{key}' expects a number in [0, {'0.5' if key == 'hue' else 'inf'}), "
                                  f"got {value!r}")
            self.factors[key] = value
        self.prob = parse_number(prob, "prob")
        if not 0 <= self.prob <= 1:
            raise ConfigError(f"key 'prob' expects a probability in [0, 1], got {prob!r}")

    def __call__(self, img, rng=None):
        return self.apply(_as_array(img), self.draw(_rng(rng)))

    def draw(self, rng):
        """One image's adjustments, ``[(name, factor), ...]`` in their random order (empty when
        the op is skipped), drawn from ``rng`` with the calls the op always made."""
        if self.prob < 1 and rng.random() >= self.prob:
            return []
        names = list(self.factors)
        draws = []
        for i in rng.permutation(len(names)):
            key = names[int(i)]
            x = self.factors[key]
            if x == 0:
                continue
            draws.append((key, rng.uniform(-x, x) if key == "hue" else rng.uniform(max(0.0, 1 - x), 1 + x)))
        return draws

    def apply(self, arr, draws, defer=False):
        """The adjustments ``draws`` on the array ``arr``. ``defer``: return ``(image, table)``,
        where ``table`` is a uint8 lookup still to apply to the image (a last brightness or
        contrast, for the caller to fold into its own lookup) or None."""
        if not draws:
            return (arr, None) if defer else arr
        if arr.dtype == np.uint8 and arr.ndim == 3 and arr.shape[2] == 3:
            return jitter_uint8(arr, draws, defer)
        from paddle.vision.transforms import functional as F

        adjust = {"brightness": F.adjust_brightness, "contrast": F.adjust_contrast,
                  "saturation": F.adjust_saturation, "hue": F.adjust_hue}
        pil = Image.fromarray(arr)
        for key, factor in draws:
            pil = adjust[key](pil, factor)
        return (np.asarray(pil), None) if defer else np.asarray(pil)


_LEVELS = np.arange(256, dtype=np.float32)  # the 256 grey levels, for the tables below


def _blend_lut(base, factor):
    """PIL's ``Image.blend(constant base, image, factor)`` for every grey level, as a 256-entry
    table: ``base + factor * (v - base)`` in float32, clipped, truncated (PIL's Blend.c)."""
    base = np.float32(base)
    out = _LEVELS - base
    out *= np.float32(factor)
    out += base
    np.maximum(out, 0, out=out)  # clipped to 0..255 (np.clip costs more on 256 values)
    return np.minimum(out, 255, out=out).astype(np.uint8)


# PIL's RGB -> L weights (ITU-R 601-2 in 16-bit fixed point) and its rounding 0.5, as one
# [1, 4] matrix: every weight is k / 65536, so each product of an 8-bit value and each partial
# sum is a multiple of 1/65536 below 2^24 / 65536 - exact in float32 and in double, in any order
# and with or without fused multiply-add. Floored, the sum is PIL's grey value exactly.
_GREY_MATRIX = np.array([[19595, 38470, 7471, 32768]], np.float32) / np.float32(65536)
_SCRATCH = threading.local()  # each thread's float32 work buffers for jitter_uint8


def _scratch(shape):
    """This thread's float32 buffers for a [H, W, 3] image: (rgb [H, W, 3], grey [H, W],
    grey on three channels [H, W, 3]), views of buffers kept between calls (grown as needed):
    no fresh pages to fault in for every image."""
    h, w = shape[:2]
    n = h * w
    buf = getattr(_SCRATCH, "buf", None)
    if buf is None or buf.size < 7 * n:
        buf = _SCRATCH.buf = np.empty(7 * n, np.float32)
    return buf[:3 * n].reshape(h, w, 3), buf[3 * n:4 * n].reshape(h, w), buf[4 * n:7 * n].reshape(h, w, 3)


def _grey_into(arr, rgb, grey, table=None):
    """PIL's ``convert("L")`` of the uint8 [H, W, 3] ``arr`` (through the uint8 lookup ``table``
    first, when given), as float32 in ``grey``; ``rgb`` receives that image as float32."""
    cv2 = _import_cv2()
    if table is None:
        np.copyto(rgb, arr)
    elif cv2 is not None:  # one pass: the table's values as float32, looked up straight into rgb
        cv2.LUT(arr, table.astype(np.float32), dst=rgb)
    else:
        np.copyto(rgb, table[arr])
    if cv2 is not None:
        cv2.transform(rgb, _GREY_MATRIX, dst=grey)
    else:
        np.matmul(rgb, _GREY_MATRIX[0, :3], out=grey)
        np.add(grey, _GREY_MATRIX[0, 3], out=grey)
    return np.floor(grey, out=grey)


def _lookup_into(arr, lut, owned):
    """``lut`` applied to ``arr``, in place when ``owned`` (an intermediate of ours)."""
    cv2 = _import_cv2()
    if cv2 is None:
        return lut[arr]
    return cv2.LUT(arr, lut, dst=arr) if owned else cv2.LUT(arr, lut)


def jitter_uint8(arr, draws, defer=False):
    """``ColorJitter``'s adjustments ``draws`` ((name, factor) in order) on a uint8 [H, W, 3] RGB
    array with PIL ``ImageEnhance``'s arithmetic: ``Image.blend`` (float32
    ``base + factor * (v - base)``, clipped, truncated) against black (brightness), the rounded
    mean of the grey image (contrast) - a lookup table each - and the grey image (saturation).
    ``arr`` itself is left alone; the result is a new array. Brightness and contrast tables wait
    until the pixels are needed and compose meanwhile, and the float32 copy the grey image needs
    is looked up through the waiting table: without hue, at most one uint8 lookup pass.
    ``defer``: return ``(image, table)`` with the table still waiting (None if there is none)."""
    arr, owned, table = np.ascontiguousarray(arr), False, None  # table: a lookup not applied yet
    for key, factor in draws:
        if key == "brightness":
            lut = _blend_lut(0, factor)
            table = lut if table is None else lut[table]
        elif key == "contrast":
            rgb, grey, _ = _scratch(arr.shape)
            _grey_into(arr, rgb, grey, table)
            # ImageStat's mean, rounded: the sum of integers is exact in double (cv2 and numpy
            # both accumulate float32 in double here), so the mean is that of PIL.
            cv2 = _import_cv2()
            total = cv2.sumElems(grey)[0] if cv2 is not None else float(grey.sum(dtype=np.float64))
            lut = _blend_lut(int(total / grey.size + 0.5), factor)
            table = lut if table is None else lut[table]
        elif key == "saturation":
            rgb, grey, grey3 = _scratch(arr.shape)
            _grey_into(arr, rgb, grey, table)
            table = None
            cv2 = _import_cv2()  # the grey image on all three channels: same-shape arithmetic is faster
            if cv2 is not None:
                cv2.merge([grey, grey, grey], dst=grey3)
            else:
                grey3[...] = grey[..., None]
            np.subtract(rgb, grey3, out=rgb)  # in place: grey + factor * (rgb - grey)
            np.multiply(rgb, np.float32(factor), out=rgb)
            np.add(rgb, grey3, out=rgb)
            if factor > 1:  # a blend within [0, 1] stays within 0..255
                np.clip(rgb, 0, 255, out=rgb)
            if not owned:
                arr, owned = np.empty(arr.shape, np.uint8), True
            np.copyto(arr, rgb, casting="unsafe")  # truncates, as astype(uint8) and PIL do
        else:
            from paddle.vision.transforms import functional as F

            if table is not None:
                arr, owned, table = _lookup_into(arr, table, owned), True, None
            arr = np.asarray(F.adjust_hue(Image.fromarray(arr), factor))
            owned = arr.flags.writeable  # ours (PIL's arrays may be read-only)
    if defer:
        return arr, table
    return arr if table is None else _lookup_into(arr, table, owned)


@OPS.register
class NormalizeImage:
    """``(img * scale - mean) / std`` per channel, as float32 (float16 with ``output_fp16``).
    ``order``: layout of the input, '' or 'hwc' for [H, W, C] (straight after decoding),
    'chw' (PaddleClas's default) for [C, H, W]. ``channel_num: 4`` appends a zero channel."""

    def __init__(self, scale=None, mean=None, std=None, order="chw", output_fp16=False, channel_num=3):
        self.scale = parse_number("1.0/255.0" if scale is None else scale, "scale")
        mean = [0.485, 0.456, 0.406] if mean is None else mean
        std = [0.229, 0.224, 0.225] if std is None else std
        for key, value in (("mean", mean), ("std", std)):
            if not isinstance(value, (list, tuple)) or len(value) != 3:
                raise ConfigError(f"key '{key}' expects a list of 3 numbers (one per channel), got {value!r}")
        mean = np.array([parse_number(v, "mean") for v in mean], dtype=np.float32)
        std = np.array([parse_number(v, "std") for v in std], dtype=np.float32)
        if np.any(std == 0):
            raise ConfigError(f"key 'std' must not contain 0, got {std.tolist()}")
        if order not in ("", "hwc", "chw"):
            raise ConfigError(f"key 'order' expects '' or 'hwc' (input [H, W, C]) or 'chw', got {order!r}")
        if channel_num not in (3, 4) or isinstance(channel_num, bool):
            raise ConfigError(f"key 'channel_num' expects 3 or 4, got {channel_num!r}")
        if not isinstance(output_fp16, bool):
            raise ConfigError(f"key 'output_fp16' expects true/false, got {output_fp16!r}")
        self.chw = order == "chw"
        shape = (3, 1, 1) if self.chw else (1, 1, 3)
        self.mean = mean.reshape(shape)
        self.std = std.reshape(shape)
        self.output_fp16 = output_fp16
        self.channel_num = channel_num

    def table(self):
        """``[256, 3]``: the op's output for every uint8 value and channel, computed with the
        same float32 arithmetic as for an image (so a lookup gives the same numbers)."""
        if getattr(self, "_table", None) is None:
            levels = np.arange(256, dtype=np.float32)[:, None]
            out = (levels * np.float32(self.scale) - self.mean.reshape(1, 3)) / self.std.reshape(1, 3)
            self._table = np.ascontiguousarray(out.astype(np.float16 if self.output_fp16 else np.float32))
        return self._table

    def columns(self):
        """``table()`` as three contiguous [1, 256] float32 tables, one per channel (for cv2.LUT)."""
        if getattr(self, "_columns", None) is None:
            self._columns = [np.ascontiguousarray(self.table()[:, c].reshape(1, 256)) for c in range(3)]
        return self._columns

    def __call__(self, img, rng=None):
        arr = _as_array(img)
        axis = 0 if self.chw else 2
        if arr.ndim != 3 or arr.shape[axis] != 3:
            layout = "[3, H, W] (order: chw)" if self.chw else "[H, W, 3] (order: '')"
            raise DataError(f"NormalizeImage expects an image of shape {layout}, got {arr.shape}; "
                            "check its 'order' key and where ToCHWImage stands")
        if arr.dtype == np.uint8 and self.channel_num == 3:
            return self._lookup(arr, axis)
        out = (arr.astype(np.float32) * np.float32(self.scale) - self.mean) / self.std
        if self.channel_num == 4:
            pad_shape = list(out.shape)
            pad_shape[axis] = 1
            out = np.concatenate([out, np.zeros(pad_shape, np.float32)], axis=axis)
        return out.astype(np.float16 if self.output_fp16 else np.float32)

    def to_chw(self, img, rng=None, table=None):
        """This op (``order: ''``) followed by the [H, W, C] -> [C, H, W] step, in one: a uint8
        image is split into its planes first (a quarter of the bytes to move) and each plane is
        looked up straight into its place in the output. ``table``: a uint8 lookup the image
        still needs first (``ColorJitter.apply(..., defer=True)``), folded into this op's tables."""
        arr = _as_array(img)
        fast = not self.chw and arr.dtype == np.uint8 and self.channel_num == 3 and arr.ndim == 3 and arr.shape[2] == 3
        cv2 = _import_cv2()
        if table is not None and not (fast and cv2 is not None and not self.output_fp16):
            arr, table = _lookup_into(np.ascontiguousarray(arr), table, False), None
        if not fast:
            return ToCHWImage()(self(arr))
        if cv2 is None or self.output_fp16:
            return self._lookup(np.ascontiguousarray(arr.transpose(2, 0, 1)), 0)
        planes = getattr(_SCRATCH, "planes", None)  # this thread's uint8 planes, reused
        if planes is None or planes.size < arr.size:
            planes = _SCRATCH.planes = np.empty(max(arr.size, 3 << 16), np.uint8)
        planes = channel_planes(arr, planes[:arr.size].reshape((3,) + arr.shape[:2]))
        columns = self.columns()
        if table is not None:  # the waiting lookup, then this op's: one table per channel
            columns = [np.ascontiguousarray(column[:, table]) for column in columns]
        out = np.empty(planes.shape, np.float32)  # each plane looked up straight into its place
        for plane, column, dst in zip(planes, columns, out):
            cv2.LUT(plane, column, dst=dst)
        return out

    def _lookup(self, arr, axis):
        """A uint8 image through ``table()``: one lookup per value instead of float arithmetic."""
        table = self.table()
        cv2 = _import_cv2()
        if cv2 is not None and axis == 2 and table.dtype == np.float32:
            return cv2.LUT(np.ascontiguousarray(arr), table.reshape(1, 256, 3)).reshape(arr.shape)
        out = np.empty(arr.shape, table.dtype)
        if cv2 is not None and axis == 0 and table.dtype == np.float32:
            for c, column in enumerate(self.columns()):
                cv2.LUT(np.ascontiguousarray(arr[c]), column, dst=out[c])
            return out
        for c in range(3):
            index = (slice(None),) * axis + (c,)
            np.take(table[:, c], arr[index], out=out[index])
        return out


@OPS.register
class ToCHWImage:
    """[H, W, C] -> [C, H, W] (a grayscale [H, W] array becomes [1, H, W])."""

    chw_output = True  # the dataset does not transpose after a list that has this op

    def __init__(self):
        pass

    def __call__(self, img, rng=None):
        arr = _as_array(img)
        if arr.ndim == 2:
            arr = arr[:, :, None]
        if arr.ndim == 3 and arr.shape[2] in (3, 4) and arr.dtype in (np.uint8, np.float32):
            return channel_planes(arr, np.empty((arr.shape[2],) + arr.shape[:2], arr.dtype))
        return np.ascontiguousarray(arr.transpose(2, 0, 1))


def channel_planes(arr, out):
    """The channels of the [H, W, C] ``arr`` written into ``out`` [C, H, W] and returned: one
    ``cv2.split`` pass straight into ``out``'s planes (a strided numpy copy without OpenCV)."""
    cv2 = _import_cv2()
    if cv2 is None:
        np.copyto(out, arr.transpose(2, 0, 1))
        return out
    dsts = list(out)
    for plane, dst in zip(cv2.split(np.ascontiguousarray(arr), dsts), dsts):
        if plane is not dst:  # an OpenCV that returned new arrays instead
            dst[...] = plane
    return out
