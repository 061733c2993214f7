"""The training reader's native helper: ``csrc/fastread.c``, compiled once per machine against
the system's libjpeg-turbo and loaded with ctypes.

- ``jpeg_region(data, k, size, left, top, right, bottom)``: the pixels ``[top:bottom, left:right]`` of
  the JPEG decoded at 1/``k`` scale, decoding only the rows and columns the box needs
  (libjpeg-turbo's ``jpeg_crop_scanline`` / ``jpeg_skip_scanlines``), equal to the same pixels
  of the whole decode to the bit (tests/data/test_reader.py). ``None`` when libjpeg-turbo
  reports an error or a warning (damaged data): the caller decodes the usual way, which names
  the problem as before.
- ``jitter_normalize(arr, draws, columns)`` / ``jitter_chw(arr, draws)``: ColorJitter's brightness, contrast and saturation
  and NormalizeImage's tables (or none) in one pass per step, into a new [3, H, W] float32 (uint8)
  array, with PIL's arithmetic: the values of ``ops.jitter_uint8`` + ``NormalizeImage.to_chw``
  (``ToCHWImage``), to the bit.

Building needs a C compiler and libjpeg-turbo's header (Debian/Ubuntu: ``apt-get install gcc
libjpeg-dev``; ``$CC`` picks the compiler). Without them, or with ``PPCLS_NATIVE_READER=0``,
``available()`` is False and the reader uses simplejpeg / PIL, OpenCV and numpy instead (the
same images; 1.15-1.4x slower per image, docs/benchmarks.md), after one ``ReaderWarning`` per
process saying why (none when switched off). The helper is loaded on first use, in each loader
worker. The library is kept in
``$PPCLS_READER_CACHE``, else ``~/.cache/ppcls/reader`` (``ppcls.utils.native_build``).
"""

import ctypes
import hashlib
import os
import platform
import shlex
import shutil
import subprocess
import threading
import warnings

import numpy as np

from ppcls.utils.native_build import BuildError, cache_dir, cached_library, cpu_flags, switched_off

SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "csrc", "fastread.c")
LIB = "ppcls_fastread.so"
# -ffp-contract=off: no fused multiply-add, so the float32 arithmetic is PIL's to the bit.
CFLAGS = ["-O3", "-march=native", "-ffp-contract=off", "-fPIC", "-shared"]
LIBS = ["-ljpeg"]
ENV_SWITCH = "PPCLS_NATIVE_READER"  # "0" turns the native reader off
CACHE_ENV = "PPCLS_READER_CACHE"

_state = {"lib": None, "error": None}
_lock = threading.Lock()
_BUFFERS = threading.local()  # each thread's region buffer and jitter scratch, reused

class ReaderWarning(UserWarning):
    """The reader's native helper could not be built; the reader runs without it (slower)."""


_KINDS = {"brightness": 0, "contrast": 1, "saturation": 2}  # fastread.c's OP_BRIGHTNESS ...


def _compiler():
    return shlex.split(os.environ.get("CC") or "cc")


def build_key():
    h = hashlib.sha256()
    with open(SOURCE, "rb") as f:
        h.update(f.read())
    h.update(repr([CFLAGS, LIBS, _compiler(), platform.machine(), cpu_flags()]).encode())
    return h.hexdigest()[:16]


def _compile_into(work):
    cc = _compiler()
    if not cc or shutil.which(cc[0]) is None:
        raise BuildError(f"no C compiler found ({' '.join(cc) or 'cc'}; install gcc, or set CC)")
    proc = subprocess.run(cc + CFLAGS + [SOURCE, "-o", os.path.join(work, LIB)] + LIBS,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, check=False)
    if proc.returncode != 0:
        lines = proc.stdout.decode("utf-8", "replace").splitlines()
        errors = [ln.strip() for ln in lines if "error" in ln.lower()] or lines[-1:] or [f"exit code {proc.returncode}"]
        if any("jpeglib.h" in ln for ln in errors):
            raise BuildError("libjpeg-turbo's header jpeglib.h was not found (Debian/Ubuntu: apt-get install "
                             "libjpeg-dev)")
        raise BuildError(f"compiling {SOURCE} failed: {errors[0][:300]}")


def _load():
    path = cached_library(cache_dir(CACHE_ENV, "reader"), build_key(), LIB, _compile_into, CACHE_ENV)
    try:
        lib = ctypes.CDLL(path)
    except OSError as err:
        raise BuildError(f"loading {path} failed: {err}") from None
    lib.ppcls_jpeg_region.restype = ctypes.c_int
    lib.ppcls_jpeg_region.argtypes = [ctypes.c_char_p, ctypes.c_ulong, ctypes.c_void_p, ctypes.c_void_p,
                                      ctypes.c_long, ctypes.c_char_p]
    jitter = [ctypes.c_void_p, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p]
    lib.ppcls_jitter_normalize.restype = lib.ppcls_jitter_chw.restype = None
    lib.ppcls_jitter_normalize.argtypes = jitter + [ctypes.c_void_p] * 3
    lib.ppcls_jitter_chw.argtypes = jitter + [ctypes.c_void_p] * 2
    return lib


def library():
    """The loaded helper, building it first if needed; None when it cannot be had (the reason:
    ``last_error()``). Tried once per process."""
    if _state["lib"] is None and _state["error"] is None:
        with _lock:
            if _state["lib"] is None and _state["error"] is None:
                if switched_off(ENV_SWITCH):
                    _state["error"] = f"turned off by {ENV_SWITCH}=0"
                elif not os.path.isfile(SOURCE):
                    _state["error"] = f"{SOURCE} is missing from this installation"
                else:
                    try:
                        _state["lib"] = _load()
                    except BuildError as err:
                        _state["error"] = str(err)
                        warnings.warn(f"the training reader's native helper is unavailable ({err}); decoding "
                                      f"whole images instead (same images, slower). {ENV_SWITCH}=0 silences "
                                      "this.", ReaderWarning, stacklevel=3)
    return _state["lib"]


def available():
    return library() is not None


def last_error():
    return _state["error"]


def _buffer(name, size):
    buf = getattr(_BUFFERS, name, None)
    if buf is None or buf.size < size:
        buf = np.empty(max(size, 1 << 20), np.uint8)
        setattr(_BUFFERS, name, buf)
    return buf


def jpeg_region(data, k, size, left, top, right, bottom):
    """``[top:bottom, left:right]`` of the JPEG ``data`` decoded at 1/``k`` (1, 2, 4, 8) as RGB
    uint8, a view of this thread's buffer valid until its next call; None on damaged data, when
    the decode is not ``size`` (w, h) or without the library. The box is in the scaled image's
    pixels and must lie inside it."""
    lib = library()
    if lib is None:
        return None
    # one column more on each side: the outer columns of a cropped decode lack their neighbour
    # for the chroma upsampling (rows are exact: skipping decodes their context)
    first, last = max(0, left - 1), min(size[0], right + 1)
    geometry = np.array([k, first, top, last, bottom], np.int32)
    width = last - first + 32  # the crop widens to whole iMCU columns (at most 2 x 16 pixels)
    buf = _buffer("region", width * 3 * (bottom - top))
    message = getattr(_BUFFERS, "message", None)
    if message is None:
        message = _BUFFERS.message = ctypes.create_string_buffer(200)  # libjpeg's words, on a failure
    status = lib.ppcls_jpeg_region(data, len(data), geometry.ctypes.data, buf.ctypes.data, buf.size, message)
    if status != 0:  # damaged data, or a box outside the image: the caller's usual decode decides
        return None
    x0, columns, rows = int(geometry[0]), int(geometry[1]), int(geometry[2])
    if rows != bottom - top or (int(geometry[3]), int(geometry[4])) != tuple(size):
        return None
    region = buf[:rows * columns * 3].reshape(rows, columns, 3)
    return region[:, left - x0:right - x0]


def jitter_normalize(arr, draws, columns):
    """ColorJitter's ``draws`` ((name, factor) in order: brightness, contrast, saturation; no hue)
    on the uint8 [H, W, 3] ``arr``, then NormalizeImage's float32 ``columns`` (three [1, 256]
    tables), into a new [3, H, W] float32 array. None without the library."""
    return _jitter(arr, draws, columns)


def jitter_chw(arr, draws):
    """ColorJitter's ``draws`` (as ``jitter_normalize``) on the uint8 [H, W, 3] ``arr``, into a
    new [3, H, W] uint8 array. None without the library."""
    return _jitter(arr, draws, None)


def _jitter(arr, draws, columns):
    lib = library()
    if lib is None:
        return None
    arr = np.ascontiguousarray(arr)
    h, w = arr.shape[:2]
    n = max(len(draws), 1)
    kinds, factors = np.zeros(n, np.int32), np.zeros(n, np.float32)  # alive through the call
    for i, (key, factor) in enumerate(draws):
        kinds[i], factors[i] = _KINDS[key], factor
    scratch = _buffer("scratch", h * w * 7 + 64)
    args = (arr.ctypes.data, h, w, len(draws), kinds.ctypes.data, factors.ctypes.data)
    if columns is None:
        out = np.empty((3, h, w), np.uint8)
        lib.ppcls_jitter_chw(*args, scratch.ctypes.data, out.ctypes.data)
    else:
        out = np.empty((3, h, w), np.float32)
        lib.ppcls_jitter_normalize(*args, _normalize_table(columns).ctypes.data, scratch.ctypes.data, out.ctypes.data)
    return out


def _normalize_table(columns):
    """The three [1, 256] float32 columns as one contiguous [3, 256] table (kept per list)."""
    key = id(columns)
    cached = getattr(_BUFFERS, "norm", None)
    if cached is None or cached[0] != key or cached[1] is not columns:
        cached = _BUFFERS.norm = (key, columns, np.ascontiguousarray(np.concatenate([c.reshape(1, 256) for c in columns])))
    return cached[2]
