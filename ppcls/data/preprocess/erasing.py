"""RandomErasing (Zhong et al. 2017, with timm's modes), PaddleClas's keys and defaults.

With probability ``EPSILON`` (0.5) a rectangle is erased: its area a uniform fraction in
[``sl``, ``sh``] (0.02, 0.4) of the image, its aspect (h/w) uniform in [``r1``, 1/``r1``] (0.3)
or log-uniform with ``use_log_aspect``; up to ``attempt`` (100) draws for one that fits
(strictly smaller than the image), else the image is left alone. ``mode``: ``const`` fills
with ``mean`` ([0, 0, 0]), ``rand`` with one N(0, 1) colour, ``pixel`` with N(0, 1) noise per
pixel and channel. It usually runs after NormalizeImage, so on a float image; ``[H, W, C]``
and ``[C, H, W]`` are both accepted (the layout is read from the shape), and the output keeps
the input's shape and dtype.
"""

import math

import numpy as np

from ppcls.utils.errors import ConfigError

from .imageops import channel_axis, check_int, check_prob, randint, set_region, spatial_hw
from .ops import OPS, _as_array, _rng, parse_number


@OPS.register
class RandomErasing:
    def __init__(self, EPSILON=0.5, sl=0.02, sh=0.4, r1=0.3, mean=(0.0, 0.0, 0.0), attempt=100,
                 use_log_aspect=False, mode="const"):
        self.EPSILON = check_prob(EPSILON, "EPSILON")
        self.sl = parse_number(sl, "sl")
        self.sh = parse_number(sh, "sh")
        if not 0 <= self.sl <= self.sh <= 1:
            raise ConfigError(f"keys 'sl', 'sh' expect 0 <= sl <= sh <= 1, got sl={sl!r}, sh={sh!r}")
        r1 = parse_number(r1, "r1")
        if r1 <= 0:
            raise ConfigError(f"key 'r1' expects a number > 0, got {r1!r}")
        if not isinstance(use_log_aspect, bool):
            raise ConfigError(f"key 'use_log_aspect' expects true/false, got {use_log_aspect!r}")
        self.use_log_aspect = use_log_aspect
        lo, hi = sorted((r1, 1.0 / r1))
        self.aspect = (math.log(lo), math.log(hi)) if use_log_aspect else (lo, hi)
        self.attempt = check_int(attempt, "attempt", low=1)
        if mode not in ("const", "rand", "pixel"):
            raise ConfigError(f"key 'mode' expects 'const', 'rand' or 'pixel', got {mode!r}")
        self.mode = mode
        if not isinstance(mean, (list, tuple)) or len(mean) not in (1, 3):
            raise ConfigError(f"key 'mean' expects a list of 3 numbers, got {mean!r}")
        self.mean = np.array([parse_number(v, "mean") for v in mean], np.float32)

    def box(self, height, width, rng):
        """(top, left, h, w) of the rectangle to erase, or None when no draw fitted."""
        rng = _rng(rng)
        area = height * width
        for _ in range(self.attempt):
            target = rng.uniform(self.sl, self.sh) * area
            aspect = rng.uniform(*self.aspect)
            if self.use_log_aspect:
                aspect = math.exp(aspect)
            h = int(round(math.sqrt(target * aspect)))
            w = int(round(math.sqrt(target / aspect)))
            if w < width and h < height:
                return randint(rng, 0, height - h + 1), randint(rng, 0, width - w + 1), h, w
        return None

    def __call__(self, img, rng=None):
        rng = _rng(rng)
        arr = _as_array(img)
        if rng.random() > self.EPSILON:
            return arr
        height, width = spatial_hw(arr)
        found = self.box(height, width, rng)
        if found is None:
            return arr
        top, left, h, w = found
        axis = channel_axis(arr)
        c = 1 if axis is None else arr.shape[axis]
        if self.mode == "pixel":
            value = rng.normal(size=(h, w, c))
        elif self.mode == "rand":
            value = rng.normal(size=(1, 1, c))
        else:
            value = self.mean[:c] if len(self.mean) >= c else np.resize(self.mean, c)
        out = arr.copy()
        set_region(out, top, left, h, w, np.asarray(value).astype(arr.dtype))
        return out
