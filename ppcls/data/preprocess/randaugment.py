"""RandAugment (Cubuk et al. 2019) as PaddleClas configures it: ``RandAugment``,
``RandAugmentV2`` (EfficientNetV2's variant) and ``RandAugmentV3`` (MobileViTv2's variant).

Each call applies ``num_layers`` operations, each drawn uniformly (with replacement) from the
variant's list, at a strength fixed by ``magnitude`` (0..10, ``level = magnitude / 10``):

=============  =====================================  ==============================  ==================
operation      RandAugment                            RandAugmentV2                   RandAugmentV3
=============  =====================================  ==============================  ==================
shearX/Y       factor 0.3*level, random sign          same                            same
translateX/Y   0.453*level of the size, random sign   100*level pixels, random sign   as RandAugment
rotate         30*level degrees, counter-clockwise    30*level degrees, random sign   as V2
color, contrast,
sharpness,
brightness     factor 1 + 0.9*level*(random sign)     factor 1.8*level + 0.1          as RandAugment
posterize      keep int(4*level) bits                 same                            8 - int(4*level)
solarize       invert values >= 256*level             >= int(256*level)               >= 255*(1 - level)
solarize_add   -                                      +int(110*level) below 128       -
cutout         -                                      square of side 2*int(40*level)  -
autocontrast, equalize, invert: no parameter
=============  =====================================  ==============================  ==================

Keys: ``num_layers`` (2), ``magnitude`` (5; V3: 5 too), ``fillcolor`` ([128, 128, 128], the
colour of uncovered corners), ``interpolation`` (bicubic) for the geometric ones, and for V2
``progress_magnitude`` (accepted for PaddleClas's progressive EfficientNetV2 recipes, where the
trainer raises ``magnitude`` over the epochs; here it is stored, the trainer sets ``magnitude``).

Differences from PaddleClas, on purpose: PaddleClas's V2 translates by ``100*level`` *times the
image size* since its refactor (the image leaves the frame entirely); here it is
``100*level`` pixels, as PaddleClas's V2 did originally and TF's EfficientNetV2 does.
Input: a ``[H, W, 3]`` uint8 image (before NormalizeImage); output the same shape and dtype.
"""

import numpy as np

from .imageops import (PIL_INTERP, check_fill, check_int, check_interp, choice_index, cutout, enhance,
                       posterize, rotate, shear_x, shear_y, sign, solarize, solarize_add, to_pil,
                       translate_x, translate_y, uint8_image)
from .ops import OPS, parse_number
from PIL import ImageOps

from ppcls.utils.errors import ConfigError


@OPS.register
class RandAugment:
    """RandAugment: ``num_layers`` random operations of strength ``magnitude`` (see module doc)."""

    def __init__(self, num_layers=2, magnitude=5, fillcolor=(128, 128, 128), interpolation="bicubic"):
        self.num_layers = check_int(num_layers, "num_layers", low=0)
        self.magnitude = parse_number(magnitude, "magnitude")
        if self.magnitude < 0:
            raise ConfigError(f"key 'magnitude' expects a number >= 0, got {magnitude!r}")
        self.fillcolor = check_fill(fillcolor)
        self.interpolation = check_interp(interpolation)
        self.resample = PIL_INTERP[self.interpolation]
        self.level_map = self.levels(self.magnitude / 10.0)
        self.names = list(self.level_map)

    def levels(self, level):
        """op name -> (strength, whether its sign is random)."""
        return {
            "shearX": (0.3 * level, True),
            "shearY": (0.3 * level, True),
            "translateX": (150.0 / 331.0 * level, True),
            "translateY": (150.0 / 331.0 * level, True),
            "rotate": (30.0 * level, False),
            "color": (0.9 * level, True),
            "posterize": (int(4.0 * level), False),
            "solarize": (256.0 * level, False),
            "contrast": (0.9 * level, True),
            "sharpness": (0.9 * level, True),
            "brightness": (0.9 * level, True),
            "autocontrast": (0, False),
            "equalize": (0, False),
            "invert": (0, False),
        }

    def translate_pixels(self, img, name, value):
        """``translateX/Y`` strength -> pixels: a fraction of the image size here."""
        return value * (img.size[0] if name == "translateX" else img.size[1])

    def enhance_factor(self, value):
        return 1.0 + value

    def apply(self, img, name, rng):
        """Apply operation ``name`` to PIL image ``img`` at this op's strength."""
        value, signed = self.level_map[name]
        if signed:
            value = value * sign(rng)
        fill, resample = self.fillcolor, self.resample
        if name == "shearX":
            return shear_x(img, value, fill, resample)
        if name == "shearY":
            return shear_y(img, value, fill, resample)
        if name == "translateX":
            return translate_x(img, self.translate_pixels(img, name, value), fill, resample)
        if name == "translateY":
            return translate_y(img, self.translate_pixels(img, name, value), fill, resample)
        if name == "rotate":
            return rotate(img, value, fill, resample)
        if name in ("color", "contrast", "sharpness", "brightness"):
            return enhance(name, img, self.enhance_factor(value))
        if name == "posterize":
            return posterize(img, value)
        if name == "solarize":
            return solarize(img, value)
        if name == "solarize_add":
            return solarize_add(img, value)
        if name == "cutout":
            return cutout(img, int(value), fill[0], rng)
        if name == "autocontrast":
            return ImageOps.autocontrast(img)
        if name == "equalize":
            return ImageOps.equalize(img)
        if name == "invert":
            return ImageOps.invert(img)
        raise KeyError(name)

    def choose(self, rng):
        """The operation names of one call (uniform, with replacement)."""
        return [self.names[choice_index(rng, len(self.names))] for _ in range(self.num_layers)]

    def __call__(self, img, rng=None):
        arr = uint8_image(img, type(self).__name__)
        pil = to_pil(arr)
        for name in self.choose(rng):
            pil = self.apply(pil, name, rng)
        return np.asarray(pil)


@OPS.register
class RandAugmentV2(RandAugment):
    """EfficientNetV2's RandAugment: adds ``solarize_add`` and ``cutout``, translates in pixels,
    rotates both ways, enhancement factors 0.1..1.9 without a sign (see module doc)."""

    def __init__(self, num_layers=2, magnitude=5, progress_magnitude=None, fillcolor=(128, 128, 128),
                 interpolation="bicubic"):
        self.progress_magnitude = progress_magnitude
        super().__init__(num_layers, magnitude, fillcolor, interpolation)

    def levels(self, level):
        out = super().levels(level)
        out.update({
            "translateX": (100.0 * level, True),
            "translateY": (100.0 * level, True),
            "rotate": (30.0 * level, True),
            "color": (1.8 * level - 0.9, False),
            "solarize": (int(256.0 * level), False),
            "solarize_add": (int(110.0 * level), False),
            "contrast": (1.8 * level - 0.9, False),
            "sharpness": (1.8 * level - 0.9, False),
            "brightness": (1.8 * level - 0.9, False),
            "cutout": (int(40.0 * level), False),
        })
        return out

    def translate_pixels(self, img, name, value):
        return value


@OPS.register
class RandAugmentV3(RandAugment):
    """MobileViTv2's RandAugment: rotation both ways, posterize keeps 8 - int(4*level) bits,
    solarize threshold 255*(1 - level) (stronger as magnitude grows)."""

    def levels(self, level):
        out = super().levels(level)
        out.update({
            "rotate": (30.0 * level, True),
            "posterize": (8 - int(4.0 * level), False),
            "solarize": (255.0 * (1 - level), False),
        })
        return out
