"""Crops, padding, rotation and PCA lighting with PaddleClas's keys: ``CropImageAtRatio``,
``RandCropImageV2``, ``Pad``, ``RandomRotation``, ``PCALighting``.

Images are ``[H, W, C]`` arrays (uint8 straight from DecodeImage; PCALighting also takes
float); sizes given as a pair are ``[width, height]`` as in PaddleClas.
"""

import numpy as np
from PIL import Image

from ppcls.utils.errors import ConfigError, DataError

from .imageops import PIL_INTERP, channel_axis, check_int, check_interp, check_prob, randint
from .ops import OPS, _as_array, _hw, _pair, _Resizer, _rng, parse_number


@OPS.register
class CropImageAtRatio:
    """Centre square of side ``size / (size + pad)`` times the short side, resized to
    ``size`` x ``size`` (``interpolation`` bilinear): the eval crop of a model trained with
    ``pad`` pixels of padding around ``size``-pixel crops."""

    def __init__(self, size, pad, interpolation="bilinear"):
        self.size = check_int(size, "size", low=1)
        self.pad = check_int(pad, "pad", low=0)
        self.ratio = self.size / (self.size + self.pad)
        self.resizer = _Resizer(interpolation, "pil")

    def __call__(self, img, rng=None):
        arr = _as_array(img)
        h, w = _hw(arr)
        crop = max(1, int(self.ratio * min(h, w)))
        top, left = (h - crop) // 2, (w - crop) // 2
        return self.resizer(arr, (self.size, self.size), rng, box=(left, top, left + crop, top + crop))


@OPS.register
class RandCropImageV2:
    """A ``size`` crop ([w, h] or a square) at a uniform random position, not resized; an
    image smaller than the crop is an error. (PaddleClas may place the crop one pixel past the
    border; here every crop lies inside the image.)"""

    def __init__(self, size):
        self.size = _pair(size, "size")

    def __call__(self, img, rng=None):
        arr = _as_array(img)
        h, w = _hw(arr)
        cw, ch = self.size
        if cw > w or ch > h:
            raise DataError(f"RandCropImageV2: image is {w}x{h} (w x h), smaller than the crop {cw}x{ch}")
        top, left = randint(rng, 0, h - ch + 1), randint(rng, 0, w - cw + 1)
        return arr[top:top + ch, left:left + cw]


@OPS.register
class Pad:
    """Pad by ``padding`` pixels: one number for all sides, [horizontal, vertical], or
    [left, top, right, bottom]; with ``fill`` (0; a number or one per channel) for
    ``padding_mode: constant``, or numpy's ``edge``, ``reflect``, ``symmetric``. ``backend``
    (pil or cv2) is accepted for PaddleClas configs; the result is the same."""

    def __init__(self, padding, fill=0, padding_mode="constant", backend="pil"):
        if isinstance(padding, int) and not isinstance(padding, bool):
            padding = [padding] * 4
        elif isinstance(padding, (list, tuple)) and len(padding) == 2:
            padding = [padding[0], padding[1], padding[0], padding[1]]
        if (not isinstance(padding, (list, tuple)) or len(padding) != 4
                or not all(isinstance(p, int) and not isinstance(p, bool) and p >= 0 for p in padding)):
            raise ConfigError(f"key 'padding' expects a whole number >= 0, [x, y] or [left, top, right, bottom], "
                              f"got {padding!r}")
        self.left, self.top, self.right, self.bottom = padding
        if padding_mode not in ("constant", "edge", "reflect", "symmetric"):
            raise ConfigError(f"key 'padding_mode' expects constant, edge, reflect or symmetric, got {padding_mode!r}")
        self.padding_mode = padding_mode
        if backend not in ("pil", "cv2"):
            raise ConfigError(f"key 'backend' expects 'pil' or 'cv2', got {backend!r}")
        if isinstance(fill, (list, tuple)):
            self.fill = np.array([parse_number(v, "fill") for v in fill])
        else:
            self.fill = np.array([parse_number(fill, "fill")])

    def __call__(self, img, rng=None):
        arr = _as_array(img)
        _hw(arr)
        widths = [(self.top, self.bottom), (self.left, self.right)] + [(0, 0)] * (arr.ndim - 2)
        if self.padding_mode != "constant":
            return np.pad(arr, widths, mode=self.padding_mode)
        out = np.pad(arr, widths, mode="constant")
        fill = self.fill.astype(arr.dtype)
        if np.any(fill != 0):
            inner = np.zeros(out.shape[:2], bool)
            inner[self.top:self.top + arr.shape[0], self.left:self.left + arr.shape[1]] = True
            out[~inner] = fill if arr.ndim == 3 and len(fill) == arr.shape[2] else fill[0]
        return out


@OPS.register
class RandomRotation:
    """With probability ``prob`` (0.5), rotate by an angle uniform in [-degrees, degrees] (or
    [min, max] when ``degrees`` is a pair), counter-clockwise for positive angles, with
    paddle.vision's RandomRotation keys (``interpolation`` nearest, ``expand`` False, ``center``
    None = the image centre, ``fill`` 0). PIL's ``Image.rotate`` does the work, as in
    paddle.vision for PIL images, so the data workers never import paddle."""

    def __init__(self, degrees, prob=0.5, interpolation="nearest", expand=False, center=None, fill=0):
        if isinstance(degrees, (int, float)) and not isinstance(degrees, bool):
            if degrees < 0:
                raise ConfigError(f"key 'degrees' expects a number >= 0 or [min, max], got {degrees!r}")
            self.degrees = (-float(degrees), float(degrees))
        elif (isinstance(degrees, (list, tuple)) and len(degrees) == 2
              and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in degrees)
              and degrees[0] <= degrees[1]):
            self.degrees = (float(degrees[0]), float(degrees[1]))
        else:
            raise ConfigError(f"key 'degrees' expects a number >= 0 or [min, max], got {degrees!r}")
        self.prob = check_prob(prob)
        self.interpolation = check_interp(interpolation)
        if not isinstance(expand, bool):
            raise ConfigError(f"key 'expand' expects true/false, got {expand!r}")
        self.expand = expand
        if center is not None and not (isinstance(center, (list, tuple)) and len(center) == 2):
            raise ConfigError(f"key 'center' expects [x, y] or null, got {center!r}")
        self.center = center
        self.fill = fill

    def angle(self, rng):
        return float(_rng(rng).uniform(*self.degrees))

    def __call__(self, img, rng=None):
        rng = _rng(rng)
        arr = _as_array(img)
        if rng.random() >= self.prob:
            return arr
        angle = self.angle(rng)
        fill = tuple(self.fill) if isinstance(self.fill, (list, tuple)) else self.fill
        center = None if self.center is None else tuple(self.center)
        out = Image.fromarray(arr).rotate(angle, PIL_INTERP[self.interpolation], expand=self.expand,
                                          center=center, fillcolor=fill)
        return np.asarray(out)


@OPS.register
class PCALighting:
    """AlexNet's PCA lighting noise: adds ``eigvec @ (alpha * eigval)`` to every pixel, alpha
    ~ N(0, 0.1) per call, with ImageNet's RGB eigenvalues and eigenvectors (PaddleClas's
    constants, no keys). Input [H, W, 3] (or [3, H, W]); output float32 of the same shape.
    PaddleClas places it after NormalizeImage, where the shift is on the normalised scale."""

    alphastd = 0.1
    eigval = np.array([0.2175, 0.0188, 0.0045], np.float32)
    eigvec = np.array([[-0.5675, 0.7192, 0.4009],
                       [-0.5808, -0.0045, -0.8140],
                       [-0.5836, -0.6948, 0.4203]], np.float32)

    def __init__(self):
        pass

    def shift(self, rng):
        """The RGB shift of one draw."""
        alpha = _rng(rng).normal(0.0, self.alphastd, size=3).astype(np.float32)
        return self.eigvec @ (alpha * self.eigval)

    def __call__(self, img, rng=None):
        arr = _as_array(img)
        axis = channel_axis(arr)
        if axis is None or arr.shape[axis] != 3:
            raise DataError(f"PCALighting expects an RGB image [H, W, 3] or [3, H, W], got shape {arr.shape}")
        rgb = self.shift(rng)
        rgb = rgb.reshape(3, 1, 1) if axis == 0 else rgb.reshape(1, 1, 3)
        return (arr.astype(np.float32) + rgb).astype(np.float32)
