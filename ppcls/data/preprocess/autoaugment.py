"""AutoAugment (Cubuk et al. 2018, the ImageNet policy) and ``TimmAutoAugment`` (timm's
RandAugment / AutoAugment / AugMix, configured by a string), as PaddleClas names them.

Both work on a ``[H, W, 3]`` uint8 image (before NormalizeImage) and return the same shape and
dtype; every random choice comes from the ``rng`` the dataset passes in.
"""

import re

import numpy as np
from PIL import Image, ImageOps

from ppcls.utils.errors import ConfigError

from .imageops import (PIL_INTERP, check_fill, check_interp, check_prob, choice_index, enhance, posterize,
                       rotate, shear_x, shear_y, sign, solarize, solarize_add, to_pil, translate_x,
                       translate_y, uint8_image)
from .ops import OPS, _rng

# ------------------------------------------------------------------------------- AutoAugment

# Strength of each operation at magnitude index 0..9 (the AutoAugment paper's discretisation).
_AA_RANGES = {
    "shearX": np.linspace(0, 0.3, 10),
    "shearY": np.linspace(0, 0.3, 10),
    "translateX": np.linspace(0, 150 / 331, 10),
    "translateY": np.linspace(0, 150 / 331, 10),
    "rotate": np.linspace(0, 30, 10),
    "color": np.linspace(0.0, 0.9, 10),
    "posterize": np.round(np.linspace(8, 4, 10)).astype(int),
    "solarize": np.linspace(256, 0, 10),
    "contrast": np.linspace(0.0, 0.9, 10),
    "sharpness": np.linspace(0.0, 0.9, 10),
    "brightness": np.linspace(0.0, 0.9, 10),
}

# The 25 ImageNet sub-policies: (probability, operation, magnitude index) twice.
IMAGENET_POLICY = [
    ((0.4, "posterize", 8), (0.6, "rotate", 9)),
    ((0.6, "solarize", 5), (0.6, "autocontrast", 5)),
    ((0.8, "equalize", 8), (0.6, "equalize", 3)),
    ((0.6, "posterize", 7), (0.6, "posterize", 6)),
    ((0.4, "equalize", 7), (0.2, "solarize", 4)),
    ((0.4, "equalize", 4), (0.8, "rotate", 8)),
    ((0.6, "solarize", 3), (0.6, "equalize", 7)),
    ((0.8, "posterize", 5), (1.0, "equalize", 2)),
    ((0.2, "rotate", 3), (0.6, "solarize", 8)),
    ((0.6, "equalize", 8), (0.4, "posterize", 6)),
    ((0.8, "rotate", 8), (0.4, "color", 0)),
    ((0.4, "rotate", 9), (0.6, "equalize", 2)),
    ((0.0, "equalize", 7), (0.8, "equalize", 8)),
    ((0.6, "invert", 4), (1.0, "equalize", 8)),
    ((0.6, "color", 4), (1.0, "contrast", 8)),
    ((0.8, "rotate", 8), (1.0, "color", 2)),
    ((0.8, "color", 8), (0.8, "solarize", 7)),
    ((0.4, "sharpness", 7), (0.6, "invert", 8)),
    ((0.6, "shearX", 5), (1.0, "equalize", 9)),
    ((0.4, "color", 0), (0.6, "equalize", 3)),
    ((0.4, "equalize", 7), (0.2, "solarize", 4)),
    ((0.6, "solarize", 5), (0.6, "autocontrast", 5)),
    ((0.6, "invert", 4), (1.0, "equalize", 8)),
    ((0.6, "color", 4), (1.0, "contrast", 8)),
    ((0.8, "equalize", 8), (0.6, "equalize", 3)),
]


@OPS.register
class AutoAugment:
    """The AutoAugment ImageNet policy: each call picks one of 25 sub-policies uniformly and
    applies its two operations, each with its own probability. Shears, translations and
    enhancements get a random sign; rotation is counter-clockwise by 0..30 degrees with the
    corners filled with grey; ``fillcolor`` ([128, 128, 128]) fills shears and translations."""

    def __init__(self, fillcolor=(128, 128, 128)):
        self.fillcolor = check_fill(fillcolor)
        self.policy = IMAGENET_POLICY

    def apply(self, img, name, index, rng):
        fill = self.fillcolor
        if name in ("autocontrast", "equalize", "invert"):
            return {"autocontrast": ImageOps.autocontrast, "equalize": ImageOps.equalize,
                    "invert": ImageOps.invert}[name](img)
        value = _AA_RANGES[name][index]
        if name == "posterize":
            return posterize(img, int(value))
        if name == "solarize":
            return solarize(img, value)
        if name == "rotate":
            return rotate(img, value, (128, 128, 128), Image.Resampling.NEAREST)
        value = value * sign(rng)
        if name == "shearX":
            return shear_x(img, value, fill, Image.Resampling.BICUBIC)
        if name == "shearY":
            return shear_y(img, value, fill, Image.Resampling.BICUBIC)
        if name == "translateX":
            return translate_x(img, value * img.size[0], fill, Image.Resampling.NEAREST)
        if name == "translateY":
            return translate_y(img, value * img.size[1], fill, Image.Resampling.NEAREST)
        return enhance(name, img, 1.0 + value)

    def run_subpolicy(self, img, idx, rng):
        rng = _rng(rng)
        for prob, name, index in self.policy[idx]:
            if rng.random() < prob:
                img = self.apply(img, name, index, rng)
        return img

    def __call__(self, img, rng=None):
        arr = uint8_image(img, "AutoAugment")
        idx = choice_index(rng, len(self.policy))
        return np.asarray(self.run_subpolicy(to_pil(arr), idx, rng))


# --------------------------------------------------------------------------- timm's operations

_MAX_LEVEL = 10.0


def _timm_arg(name, level, hp, rng):
    """timm's level (0..10) -> the operation's argument; random signs drawn from ``rng``."""
    f = level / _MAX_LEVEL
    if name == "Rotate":
        return 30.0 * f * sign(rng)
    if name in ("ShearX", "ShearY"):
        return 0.3 * f * sign(rng)
    if name in ("TranslateX", "TranslateY"):
        return f * float(hp["translate_const"]) * sign(rng)
    if name in ("TranslateXRel", "TranslateYRel"):
        return f * hp["translate_pct"] * sign(rng)
    if name in ("Color", "Contrast", "Brightness", "Sharpness"):
        return f * 1.8 + 0.1
    if name.endswith("Increasing") and name[:-len("Increasing")] in ("Color", "Contrast", "Brightness",
                                                                     "Sharpness"):
        return 1.0 + f * 0.9 * sign(rng)
    if name == "Posterize":
        return int(f * 4)
    if name == "PosterizeIncreasing":
        return 4 - int(f * 4)
    if name == "PosterizeOriginal":
        return int(f * 4) + 4
    if name == "Solarize":
        return int(f * 256)
    if name == "SolarizeIncreasing":
        return 256 - int(f * 256)
    if name == "SolarizeAdd":
        return int(f * 110)
    return None


def _timm_apply(name, img, arg, fill, resample):
    if name == "AutoContrast":
        return ImageOps.autocontrast(img)
    if name == "Equalize":
        return ImageOps.equalize(img)
    if name == "Invert":
        return ImageOps.invert(img)
    if name == "Rotate":
        return rotate(img, arg, fill, resample)
    if name.startswith("Posterize"):
        return posterize(img, arg)
    if name == "SolarizeAdd":
        return solarize_add(img, arg)
    if name.startswith("Solarize"):
        return solarize(img, arg)
    for kind in ("Color", "Contrast", "Brightness", "Sharpness"):
        if name.startswith(kind):
            return enhance(kind.lower(), img, arg)
    if name == "ShearX":
        return shear_x(img, arg, fill, resample)
    if name == "ShearY":
        return shear_y(img, arg, fill, resample)
    if name == "TranslateX":
        return translate_x(img, arg, fill, resample)
    if name == "TranslateY":
        return translate_y(img, arg, fill, resample)
    if name == "TranslateXRel":
        return translate_x(img, arg * img.size[0], fill, resample)
    if name == "TranslateYRel":
        return translate_y(img, arg * img.size[1], fill, resample)
    raise KeyError(name)


class TimmOp:
    """One timm operation: applied with probability ``prob`` at ``magnitude`` (0..10), the
    magnitude drawn from N(magnitude, magnitude_std) and clipped to [0, magnitude_max] when
    ``magnitude_std`` > 0. ``interpolation`` None: bilinear or bicubic at random per call."""

    def __init__(self, name, prob, magnitude, hp):
        self.name, self.prob, self.magnitude, self.hp = name, prob, magnitude, hp

    def __call__(self, img, rng):
        rng = _rng(rng)
        if self.prob < 1.0 and rng.random() > self.prob:
            return img
        magnitude = self.magnitude
        if self.hp["magnitude_std"] > 0:
            magnitude = rng.normal(magnitude, self.hp["magnitude_std"])
        magnitude = min(self.hp["magnitude_max"], max(0.0, magnitude))
        arg = _timm_arg(self.name, magnitude, self.hp, rng)
        resample = self.hp["interpolation"]
        if resample is None:
            resample = (Image.Resampling.BILINEAR, Image.Resampling.BICUBIC)[int(rng.random() < 0.5)]
        return _timm_apply(self.name, img, arg, self.hp["fill"], resample)


def _policy(rows):
    return [tuple((name, p, m) for name, p, m in row) for row in rows]


_TIMM_POLICIES = {
    # ImageNet "v0" policy of TF's TPU EfficientNet.
    "v0": _policy([
        [("Equalize", 0.8, 1), ("ShearY", 0.8, 4)], [("Color", 0.4, 9), ("Equalize", 0.6, 3)],
        [("Color", 0.4, 1), ("Rotate", 0.6, 8)], [("Solarize", 0.8, 3), ("Equalize", 0.4, 7)],
        [("Solarize", 0.4, 2), ("Solarize", 0.6, 2)], [("Color", 0.2, 0), ("Equalize", 0.8, 8)],
        [("Equalize", 0.4, 8), ("SolarizeAdd", 0.8, 3)], [("ShearX", 0.2, 9), ("Rotate", 0.6, 8)],
        [("Color", 0.6, 1), ("Equalize", 1.0, 2)], [("Invert", 0.4, 9), ("Rotate", 0.6, 0)],
        [("Equalize", 1.0, 9), ("ShearY", 0.6, 3)], [("Color", 0.4, 7), ("Equalize", 0.6, 0)],
        [("Posterize", 0.4, 6), ("AutoContrast", 0.4, 7)], [("Solarize", 0.6, 8), ("Color", 0.6, 9)],
        [("Solarize", 0.2, 4), ("Rotate", 0.8, 9)], [("Rotate", 1.0, 7), ("TranslateYRel", 0.8, 9)],
        [("ShearX", 0.0, 0), ("Solarize", 0.8, 4)], [("ShearY", 0.8, 0), ("Color", 0.6, 4)],
        [("Color", 1.0, 0), ("Rotate", 0.6, 2)], [("Equalize", 0.8, 4), ("Equalize", 0.0, 8)],
        [("Equalize", 1.0, 4), ("AutoContrast", 0.6, 2)], [("ShearY", 0.4, 7), ("SolarizeAdd", 0.6, 7)],
        [("Posterize", 0.8, 2), ("Solarize", 0.6, 10)], [("Solarize", 0.6, 8), ("Equalize", 0.6, 1)],
        [("Color", 0.8, 6), ("Rotate", 0.4, 5)],
    ]),
    # The AutoAugment paper's ImageNet policy.
    "original": _policy([
        [("PosterizeOriginal", 0.4, 8), ("Rotate", 0.6, 9)], [("Solarize", 0.6, 5), ("AutoContrast", 0.6, 5)],
        [("Equalize", 0.8, 8), ("Equalize", 0.6, 3)],
        [("PosterizeOriginal", 0.6, 7), ("PosterizeOriginal", 0.6, 6)],
        [("Equalize", 0.4, 7), ("Solarize", 0.2, 4)], [("Equalize", 0.4, 4), ("Rotate", 0.8, 8)],
        [("Solarize", 0.6, 3), ("Equalize", 0.6, 7)], [("PosterizeOriginal", 0.8, 5), ("Equalize", 1.0, 2)],
        [("Rotate", 0.2, 3), ("Solarize", 0.6, 8)], [("Equalize", 0.6, 8), ("PosterizeOriginal", 0.4, 6)],
        [("Rotate", 0.8, 8), ("Color", 0.4, 0)], [("Rotate", 0.4, 9), ("Equalize", 0.6, 2)],
        [("Equalize", 0.0, 7), ("Equalize", 0.8, 8)], [("Invert", 0.6, 4), ("Equalize", 1.0, 8)],
        [("Color", 0.6, 4), ("Contrast", 1.0, 8)], [("Rotate", 0.8, 8), ("Color", 1.0, 2)],
        [("Color", 0.8, 8), ("Solarize", 0.8, 7)], [("Sharpness", 0.4, 7), ("Invert", 0.6, 8)],
        [("ShearX", 0.6, 5), ("Equalize", 1.0, 9)], [("Color", 0.4, 0), ("Equalize", 0.6, 3)],
        [("Equalize", 0.4, 7), ("Solarize", 0.2, 4)], [("Solarize", 0.6, 5), ("AutoContrast", 0.6, 5)],
        [("Invert", 0.6, 4), ("Equalize", 1.0, 8)], [("Color", 0.6, 4), ("Contrast", 1.0, 8)],
        [("Equalize", 0.8, 8), ("Equalize", 0.6, 3)],
    ]),
}


def _research_posterize(rows, old):
    """The 'r' variants: posterize drops more bits as magnitude grows (Google research's form)."""
    return [tuple(("PosterizeIncreasing" if n == old else n, p, m) for n, p, m in row) for row in rows]


_TIMM_POLICIES["v0r"] = _research_posterize(_TIMM_POLICIES["v0"], "Posterize")
_TIMM_POLICIES["originalr"] = _research_posterize(_TIMM_POLICIES["original"], "PosterizeOriginal")

RAND_TRANSFORMS = ["AutoContrast", "Equalize", "Invert", "Rotate", "Posterize", "Solarize", "SolarizeAdd",
                   "Color", "Contrast", "Brightness", "Sharpness", "ShearX", "ShearY", "TranslateXRel",
                   "TranslateYRel"]
RAND_INCREASING_TRANSFORMS = ["AutoContrast", "Equalize", "Invert", "Rotate", "PosterizeIncreasing",
                              "SolarizeIncreasing", "SolarizeAdd", "ColorIncreasing", "ContrastIncreasing",
                              "BrightnessIncreasing", "SharpnessIncreasing", "ShearX", "ShearY",
                              "TranslateXRel", "TranslateYRel"]
# timm's weight set 0 (``w0``) for the op choice of RandAugment.
RAND_CHOICE_WEIGHTS_0 = {"Rotate": 0.3, "ShearX": 0.2, "ShearY": 0.2, "TranslateXRel": 0.1,
                         "TranslateYRel": 0.1, "Color": .025, "Sharpness": 0.025, "AutoContrast": 0.025,
                         "Solarize": .005, "SolarizeAdd": .005, "Contrast": .005, "Brightness": .005,
                         "Equalize": .005, "Posterize": 0, "Invert": 0}
AUGMIX_TRANSFORMS = ["AutoContrast", "ColorIncreasing", "ContrastIncreasing", "BrightnessIncreasing",
                     "SharpnessIncreasing", "Equalize", "Rotate", "PosterizeIncreasing", "SolarizeIncreasing",
                     "ShearX", "ShearY", "TranslateXRel", "TranslateYRel"]


def _parse_sections(config_str, allowed):
    """'rand-m9-mstd0.5-inc1' -> {'m': '9', 'mstd': '0.5', 'inc': '1'} (after the first section)."""
    out = {}
    for part in config_str.split("-")[1:]:
        pieces = re.split(r"(\d.*)", part)
        if len(pieces) < 2 or pieces[0] not in allowed:
            raise ConfigError(f"key 'config_str': unknown section {part!r} in {config_str!r}; "
                              f"sections are {', '.join(k + '<number>' for k in allowed)}")
        out[pieces[0]] = pieces[1]
    return out


def _num(text, key, config_str, kind=float):
    try:
        return kind(text)
    except ValueError:
        raise ConfigError(f"key 'config_str': section {key}{text} of {config_str!r} expects a "
                          f"{'number' if kind is float else 'whole number'}") from None


@OPS.register
class TimmAutoAugment:
    """timm's augmentations, chosen by ``config_str``:

    - ``rand-...`` RandAugment: ``n`` ops per image (2) from 15, each applied with probability 0.5
      at magnitude ``m`` (10) of 10; ``mstd`` magnitude noise std (0), ``mmax`` its clip (10),
      ``inc1`` the variants whose strength increases with magnitude, ``w0`` timm's op weights
      (then chosen without replacement). DeiT: ``rand-m9-mstd0.5-inc1``.
    - ``original``, ``originalr``, ``v0``, ``v0r`` (optionally ``-mstd<x>``): AutoAugment
      policies (the paper's ImageNet policy; TF EfficientNet's; 'r': research posterize).
      ``auto-<policy>`` is accepted too.
    - ``augmix-...`` AugMix: ``w`` chains (3) of depth ``d`` (-1: 1..3 at random) of ops at
      severity ``m`` (3), mixed with Dirichlet(``a``) weights and blended with the original by
      Beta(``a``, ``a``) (``a`` = 1); ``b`` (blended mode) is accepted and runs the same mix.

    ``img_size`` (224) sets absolute translations (0.45 of its short side), ``mean`` the fill
    colour (255 * mean), ``interpolation`` (bicubic; 'random' = bilinear or bicubic per op),
    ``prob`` (1.0) the chance the whole augmentation runs.
    """

    def __init__(self, config_str="rand-m9-mstd0.5-inc1", interpolation="bicubic", img_size=224,
                 mean=(0.485, 0.456, 0.406), prob=1.0):
        if config_str is None:  # FasterNet_T0.yaml: no augmentation, timm's `--aa None`
            self.config_str, self.kind, self.prob = None, "none", check_prob(prob)
            return
        if not isinstance(config_str, str) or not config_str:
            raise ConfigError(f"key 'config_str' expects a string such as 'rand-m9-mstd0.5-inc1', got {config_str!r}")
        self.config_str = config_str
        self.prob = check_prob(prob)
        sizes = img_size if isinstance(img_size, (list, tuple)) else [img_size]
        if not sizes or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in sizes):
            raise ConfigError(f"key 'img_size' expects a positive integer or [w, h], got {img_size!r}")
        if (not isinstance(mean, (list, tuple)) or len(mean) != 3
                or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in mean)):
            raise ConfigError(f"key 'mean' expects a list of 3 numbers, got {mean!r}")
        resample = None
        if interpolation and interpolation != "random":
            resample = PIL_INTERP[check_interp(interpolation, allow_random=True)]
        self.hp = {"translate_const": int(min(sizes) * 0.45), "translate_pct": 0.45,
                   "fill": tuple(min(255, int(round(255 * v))) for v in mean), "interpolation": resample,
                   "magnitude_std": 0.0, "magnitude_max": _MAX_LEVEL}
        head = config_str.split("-")[0]
        if head == "rand":
            self._build_rand()
        elif head == "augmix":
            self._build_augmix()
        elif head in _TIMM_POLICIES or head == "auto":
            self._build_auto()
        else:
            raise ConfigError(f"key 'config_str' expects 'rand-...', 'augmix-...' or an AutoAugment policy "
                              f"({', '.join(_TIMM_POLICIES)}), got {config_str!r}")

    def _build_rand(self):
        s = _parse_sections(self.config_str, ("m", "n", "w", "mstd", "mmax", "inc"))
        magnitude = _num(s.get("m", "10"), "m", self.config_str)
        self.num_layers = _num(s.get("n", "2"), "n", self.config_str, int)
        self.hp["magnitude_std"] = _num(s.get("mstd", "0"), "mstd", self.config_str)
        self.hp["magnitude_max"] = _num(s.get("mmax", "10"), "mmax", self.config_str)
        increasing = _num(s.get("inc", "0"), "inc", self.config_str, int) != 0
        self.names = RAND_INCREASING_TRANSFORMS if increasing else RAND_TRANSFORMS
        self.weights = None
        if "w" in s:
            if _num(s["w"], "w", self.config_str, int) != 0:
                raise ConfigError(f"key 'config_str': only weight set w0 exists, got {self.config_str!r}")
            w = np.array([RAND_CHOICE_WEIGHTS_0.get(n, RAND_CHOICE_WEIGHTS_0.get(
                n.replace("Increasing", ""), 0)) for n in self.names], dtype=np.float64)
            self.weights = w / w.sum()
        self.ops = [TimmOp(n, 0.5, magnitude, self.hp) for n in self.names]
        self.kind, self.magnitude = "rand", magnitude

    def _build_auto(self):
        parts = self.config_str.split("-")
        if parts[0] == "auto":
            parts = parts[1:] or ["original"]
        name = parts[0]
        if name not in _TIMM_POLICIES:
            raise ConfigError(f"key 'config_str': unknown AutoAugment policy {name!r} in {self.config_str!r}; "
                              f"known: {', '.join(_TIMM_POLICIES)}")
        s = _parse_sections("-".join(["x"] + parts[1:]), ("mstd",))
        self.hp["magnitude_std"] = _num(s.get("mstd", "0"), "mstd", self.config_str)
        self.policy = [[TimmOp(n, p, m, self.hp) for n, p, m in row] for row in _TIMM_POLICIES[name]]
        self.kind = "auto"

    def _build_augmix(self):
        s = _parse_sections(self.config_str, ("m", "w", "d", "a", "b", "mstd"))
        self.hp["translate_pct"] = 0.3
        magnitude = _num(s.get("m", "3"), "m", self.config_str)
        self.width = _num(s.get("w", "3"), "w", self.config_str, int)
        self.depth = _num(s.get("d", "-1"), "d", self.config_str, int)
        self.alpha = _num(s.get("a", "1"), "a", self.config_str)
        self.hp["magnitude_std"] = _num(s.get("mstd", "0"), "mstd", self.config_str)
        if self.width < 1 or self.alpha <= 0:
            raise ConfigError(f"key 'config_str': AugMix needs w >= 1 and a > 0, got {self.config_str!r}")
        self.ops = [TimmOp(n, 1.0, magnitude, self.hp) for n in AUGMIX_TRANSFORMS]
        self.kind = "augmix"

    def _rand(self, img, rng):
        if self.weights is None:
            picks = [choice_index(rng, len(self.ops)) for _ in range(self.num_layers)]
        else:
            picks = _rng(rng).choice(len(self.ops), self.num_layers, replace=False, p=self.weights)
        for i in picks:
            img = self.ops[int(i)](img, rng)
        return img

    def _augmix(self, img, rng):
        rng = _rng(rng)
        weights = rng.dirichlet([self.alpha] * self.width).astype(np.float32)
        m = np.float32(rng.beta(self.alpha, self.alpha))
        mixed = np.zeros((img.size[1], img.size[0], len(img.getbands())), np.float32)
        for w in weights:
            depth = self.depth if self.depth > 0 else int(rng.integers(1, 4))
            aug = img
            for _ in range(depth):
                aug = self.ops[choice_index(rng, len(self.ops))](aug, rng)
            mixed += w * np.asarray(aug, dtype=np.float32)
        mixed = Image.fromarray(np.clip(mixed, 0, 255).astype(np.uint8))
        return Image.blend(img, mixed, float(m))

    def __call__(self, img, rng=None):
        arr = uint8_image(img, "TimmAutoAugment")
        if self.kind == "none" or self.prob < 1 and _rng(rng).random() >= self.prob:
            return arr
        pil = to_pil(arr)
        if self.kind == "rand":
            pil = self._rand(pil, rng)
        elif self.kind == "augmix":
            pil = self._augmix(pil, rng)
        else:
            for op in self.policy[choice_index(rng, len(self.policy))]:
                pil = op(pil, rng)
        return np.asarray(pil)
