"""Occlusion augmentations: ``Cutout``, ``GridMask``, ``HideAndSeek`` (PaddleClas's keys).

They accept an image as ``[H, W, C]`` (before ToCHWImage) or ``[C, H, W]`` (after it; the
layout is read from the shape), uint8 or float, and return the same shape and dtype.
"""

import numpy as np
from PIL import Image

from ppcls.utils.errors import ConfigError

from .imageops import apply_mask, channel_axis, check_int, check_prob, randint, set_region, spatial_hw
from .ops import OPS, _as_array, _rng


@OPS.register
class Cutout:
    """``n_holes`` (1) squares of side ``length`` (112), each centred at a uniform pixel and
    clipped by the border, filled with ``fill_value`` ([0, 0, 0]; one number or one per channel;
    ``none`` for a random 0..255 colour per hole) (DeVries & Taylor 2017)."""

    def __init__(self, n_holes=1, length=112, fill_value=(0, 0, 0)):
        self.n_holes = check_int(n_holes, "n_holes", low=0)
        self.length = check_int(length, "length", low=1)
        if fill_value is None or fill_value == "none":
            self.fill_value = None
        elif isinstance(fill_value, (int, float)) and not isinstance(fill_value, bool):
            self.fill_value = np.array([fill_value], np.float64)
        elif isinstance(fill_value, (list, tuple)) and len(fill_value) in (1, 3):
            self.fill_value = np.array(fill_value, np.float64)
        else:
            raise ConfigError(f"key 'fill_value' expects a number, a list of 3 numbers or 'none', got {fill_value!r}")

    def __call__(self, img, rng=None):
        rng = _rng(rng)
        arr = _as_array(img).copy()
        h, w = spatial_hw(arr)
        axis = channel_axis(arr)
        c = 1 if axis is None else arr.shape[axis]
        half = self.length // 2
        for _ in range(self.n_holes):
            y, x = randint(rng, 0, h), randint(rng, 0, w)
            y1, y2 = np.clip([y - half, y + half], 0, h)
            x1, x2 = np.clip([x - half, x + half], 0, w)
            fill = (np.array([randint(rng, 0, 256) for _ in range(c)], np.float64)
                    if self.fill_value is None else self.fill_value)
            fill = np.broadcast_to(fill if len(fill) == c else fill[:1], (c,))
            if y2 > y1 and x2 > x1:
                set_region(arr, int(y1), int(x1), int(y2 - y1), int(x2 - x1), fill.astype(arr.dtype))
        return arr


@OPS.register
class GridMask:
    """GridMask (Chen et al. 2020) with probability ``prob`` (1.0): a grid of period ``d``
    (uniform integer in [``d1``, ``d2``), defaults 96, 224) whose stripes of width
    round(``ratio`` * d) (``ratio`` 0.5), along both axes, at a random offset, are zeroed
    (``mode`` 0); ``mode`` 1 keeps the stripes and zeroes the squares between them. The grid
    turns by a random whole angle in [0, ``rotate``) degrees (``rotate`` 1: never).

    Difference from PaddleClas: there the chance also ramps with a module-level epoch counter
    that nothing in PaddleClas advances, so GridMask is never applied; here ``prob`` is the
    chance per image."""

    def __init__(self, d1=96, d2=224, rotate=1, ratio=0.5, mode=0, prob=1.0):
        self.d1 = check_int(d1, "d1", low=1)
        self.d2 = check_int(d2, "d2", low=self.d1 + 1)
        self.rotate = check_int(rotate, "rotate", low=1)
        self.ratio = check_prob(ratio, "ratio")
        if mode not in (0, 1) or isinstance(mode, bool):
            raise ConfigError(f"key 'mode' expects 0 or 1, got {mode!r}")
        self.mode = mode
        self.prob = check_prob(prob)

    def mask(self, h, w, rng):
        """The [h, w] 0/1 mask of one draw."""
        hh, ww = int(1.5 * h), int(1.5 * w)
        d = randint(rng, self.d1, self.d2)
        stripe = int(d * self.ratio + 0.5)
        st_h, st_w = randint(rng, 0, d), randint(rng, 0, d)
        rows = ((np.arange(hh) - st_h) % d) < stripe
        cols = ((np.arange(ww) - st_w) % d) < stripe
        mask = np.where(rows[:, None] | cols[None, :], 0, 1).astype(np.uint8)
        angle = randint(rng, 0, self.rotate)
        if angle:
            mask = np.asarray(Image.fromarray(mask).rotate(angle))
        top, left = (hh - h) // 2, (ww - w) // 2
        mask = mask[top:top + h, left:left + w]
        return 1 - mask if self.mode == 1 else mask

    def __call__(self, img, rng=None):
        rng = _rng(rng)
        arr = _as_array(img)
        if rng.random() > self.prob:
            return arr
        h, w = spatial_hw(arr)
        return apply_mask(arr, self.mask(h, w, rng))


@OPS.register
class HideAndSeek:
    """Hide-and-Seek (Singh & Lee 2017): the image is cut into square patches of a side drawn
    from {0, 16, 32, 44, 56} (0: nothing hidden) and each patch is zeroed with probability 0.5.
    No keys (PaddleClas has none)."""

    grid_sizes = (0, 16, 32, 44, 56)
    hide_prob = 0.5

    def __init__(self):
        pass

    def __call__(self, img, rng=None):
        rng = _rng(rng)
        arr = _as_array(img)
        size = self.grid_sizes[randint(rng, 0, len(self.grid_sizes))]
        if size == 0:
            return arr
        h, w = spatial_hw(arr)
        mask = np.ones((h, w), np.uint8)
        for y in range(0, h, size):
            for x in range(0, w, size):
                if rng.random() <= self.hide_prob:
                    mask[y:y + size, x:x + size] = 0
        return apply_mask(arr, mask)
