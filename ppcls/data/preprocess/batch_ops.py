"""Batch transform ops (``DataLoader.Train.dataset.batch_transform_ops`` in PaddleClas):
``MixupOperator``, ``CutmixOperator`` and ``OpSampler``, from a small registry ``BATCH_OPS``.

They act on a whole batch, after the per-sample ``transform_ops``::

    ops = create_batch_operators(cfg["batch_transform_ops"],
                                 where="DataLoader.Train.dataset.batch_transform_ops",
                                 class_num=cfg_arch_class_num)
    rng = batch_rng(seed, epoch, batch_index)        # one generator per batch
    images, targets = apply_batch_operators(images, labels, ops, rng)

``images``: a numpy float array ``[N, C, H, W]`` or ``[N, H, W, C]`` (the layout is read from
the shape: a channel axis of 1, 3 or 4); ``labels``: ``N`` integer class ids (shape ``[N]`` or
``[N, 1]``). The result: the mixed images (same shape and dtype) and **soft targets**,
float32 ``[N, class_num]``, each row summing to 1: ``lam * one_hot(y) + (1 - lam) *
one_hot(y[perm])`` -- PaddleClas's current form (its CELoss reads a ``[N, class_num]``
label as soft labels; SoftTargetCrossEntropy takes it directly). A batch OpSampler leaves
unmixed still comes back with one-hot targets, so the loss always sees one kind of
target: CE on a one-hot row equals CE on the hard label. Train top-k needs hard labels:
skip it (as PaddleClas does) whenever ``ops`` is non-empty.

Determinism: every random draw comes from ``rng``; ``batch_rng(seed, epoch, batch_index)``
gives the generator for a batch independently of the number of workers (the sample generators
use ``[seed, epoch, index]``; the extra tag keeps the two streams apart).
"""

import numpy as np

from ppcls.utils import logger
from ppcls.utils.errors import ConfigError, DataError
from ppcls.utils.registry import Registry, build

from .imageops import check_prob, randint
from .ops import parse_number

BATCH_OPS = Registry("batch transform op", noun="op")

_BATCH_STREAM = 0xBA7C  # tag separating batch generators from per-sample ones


def batch_rng(seed, epoch, batch_index):
    """The generator for the batch ops of batch ``batch_index`` in ``epoch``."""
    return np.random.default_rng([int(seed) % 2**64, int(epoch) % 2**64, int(batch_index), _BATCH_STREAM])


def _channel_axis(images):
    if images.ndim != 4:
        raise DataError(f"batch transform ops expect images [N, C, H, W] or [N, H, W, C], got shape {images.shape}")
    if images.shape[1] in (1, 3, 4) and images.shape[3] not in (1, 3, 4):
        return 1
    if images.shape[3] in (1, 3, 4):
        return 3
    return 1


def one_hot(labels, class_num):
    labels = np.asarray(labels).reshape(-1).astype(np.int64)
    if labels.size and (labels.min() < 0 or labels.max() >= class_num):
        raise DataError(f"label {int(labels.max() if labels.max() >= class_num else labels.min())} is outside "
                        f"[0, {class_num}) (Arch.class_num / class_num)")
    return np.eye(class_num, dtype=np.float32)[labels]


def _check_alpha(alpha, op):
    a = parse_number(alpha, "alpha")
    if a <= 0:
        raise ConfigError(f"key 'alpha' of {op} expects a number > 0, got {alpha!r}")
    return a


@BATCH_OPS.register
class MixupOperator:
    """Mixup (Zhang et al. 2018): ``lam ~ Beta(alpha, alpha)`` (``alpha`` 1.0) per batch;
    image i becomes ``lam * x_i + (1 - lam) * x_perm(i)`` for a random permutation."""

    def __init__(self, class_num, alpha=1.0):
        self.class_num = class_num
        self.alpha = _check_alpha(alpha, "MixupOperator")

    def draw(self, n, rng):
        """The batch's random draws, in the order ``__call__`` makes them: (perm, lam)."""
        perm = rng.permutation(n)
        return perm, float(rng.beta(self.alpha, self.alpha))

    def __call__(self, images, targets, rng):
        perm, lam = self.draw(images.shape[0], rng)
        mixed = (lam * images + (1 - lam) * images[perm]).astype(images.dtype)
        return mixed, lam * targets + (1 - lam) * targets[perm]


@BATCH_OPS.register
class CutmixOperator:
    """CutMix (Yun et al. 2019): ``lam ~ Beta(alpha, alpha)`` (``alpha`` 0.2); a box of
    ``sqrt(1 - lam)`` times each side, centred at a uniform pixel and clipped by the border, is
    pasted from image perm(i) into image i; the targets use the pasted area's true fraction,
    ``lam = 1 - box area / image area``."""

    def __init__(self, class_num, alpha=0.2):
        self.class_num = class_num
        self.alpha = _check_alpha(alpha, "CutmixOperator")

    def draw(self, n, h, w, rng):
        """The batch's random draws, in the order ``__call__`` makes them: (perm, the drawn
        lam, the pasted box (y1, y2, x1, x2) in an h x w image)."""
        perm = rng.permutation(n)
        lam = float(rng.beta(self.alpha, self.alpha))
        return perm, lam, self.box(h, w, lam, rng)

    @staticmethod
    def box(h, w, lam, rng):
        """(y1, y2, x1, x2) of the pasted box."""
        cut = np.sqrt(1.0 - lam)
        ch, cw = int(h * cut), int(w * cut)
        cy, cx = randint(rng, 0, h), randint(rng, 0, w)
        y1, y2 = np.clip([cy - ch // 2, cy + ch // 2], 0, h)
        x1, x2 = np.clip([cx - cw // 2, cx + cw // 2], 0, w)
        return int(y1), int(y2), int(x1), int(x2)

    def __call__(self, images, targets, rng):
        axis = _channel_axis(images)
        h, w = (images.shape[2], images.shape[3]) if axis == 1 else (images.shape[1], images.shape[2])
        perm, _, (y1, y2, x1, x2) = self.draw(images.shape[0], h, w, rng)
        out = images.copy()
        if axis == 1:
            out[:, :, y1:y2, x1:x2] = images[perm, :, y1:y2, x1:x2]
        else:
            out[:, y1:y2, x1:x2, :] = images[perm, y1:y2, x1:x2, :]
        lam = 1.0 - (y2 - y1) * (x2 - x1) / float(h * w)
        return out, lam * targets + (1 - lam) * targets[perm]


@BATCH_OPS.register
class OpSampler:
    """Pick one of its batch ops per batch with the op's ``prob``; with the remaining
    1 - sum(prob) nothing is done. Written as ``OpSampler: {MixupOperator: {alpha: 0.8, prob:
    0.5}, CutmixOperator: {alpha: 1.0, prob: 0.5}}``. An op without ``prob`` gets 0 (with a
    warning, as PaddleClas); probabilities summing above 1 are an error."""

    def __init__(self, class_num, **op_dict):
        self.class_num = class_num
        self.ops, probs = [], []
        if not op_dict:
            logger.warning("OpSampler has no operators; it does nothing")
        for name, params in op_dict.items():
            params = {} if params is None else params
            if not isinstance(params, dict):
                raise ConfigError(f"OpSampler.{name}: expected a mapping of parameters, got {params!r}")
            params = dict(params)
            if "prob" not in params:
                logger.warning(f"OpSampler: operator {name} has no 'prob'; it is never chosen (prob 0)")
            prob = check_prob(params.pop("prob", 0), f"{name}.prob")
            self.ops.append(build({name: params}, BATCH_OPS, "OpSampler", class_num=class_num))
            probs.append(prob)
        total = float(sum(probs))
        if total > 1 + 1e-9:
            raise ConfigError(f"the probabilities of OpSampler's operators sum to {total:g}, more than 1")
        self.probs = np.array(probs + [max(0.0, 1.0 - total)], np.float64)
        self.probs /= self.probs.sum()

    def choose(self, rng):
        """Index of the op for one batch; ``len(self.ops)`` means none."""
        return int(rng.choice(len(self.probs), p=self.probs))

    def __call__(self, images, targets, rng):
        i = self.choose(rng)
        if i == len(self.ops):
            return images, targets
        return self.ops[i](images, targets, rng)


def create_batch_operators(op_list, where="batch_transform_ops", class_num=None):
    """Build a ``batch_transform_ops`` list (PaddleClas's YAML form). ``class_num`` (from
    ``Arch.class_num``) is required as soon as the list is non-empty."""
    if op_list is None:
        return []
    if not isinstance(op_list, list):
        raise ConfigError(f"{where} expects a list of ops, got {op_list!r}")
    if op_list and (isinstance(class_num, bool) or not isinstance(class_num, int) or class_num < 1):
        raise ConfigError(f"{where} needs the number of classes: set Arch.class_num (got {class_num!r})")
    ops = []
    for i, item in enumerate(op_list):
        if not isinstance(item, str) and not (isinstance(item, dict) and len(item) == 1):
            raise ConfigError(f"{where}.{i}: expected one op name with its parameters "
                              f"(e.g. '- MixupOperator: {{alpha: 0.2}}'), got {item!r}")
        ops.append(build(item, BATCH_OPS, f"{where}.{i}", class_num=class_num))
    return ops


def apply_batch_operators(images, labels, ops, rng):
    """Run ``ops`` in order on a batch; returns (images, soft targets [N, class_num] float32).
    See the module docstring for shapes and how the loader calls it."""
    if not ops:
        raise ValueError("apply_batch_operators needs at least one op (no ops: keep the hard labels)")
    images = np.asarray(images)
    _channel_axis(images)
    targets = one_hot(labels, ops[0].class_num)
    if targets.shape[0] != images.shape[0]:
        raise DataError(f"batch has {images.shape[0]} images but {targets.shape[0]} labels")
    for op in ops:
        images, targets = op(images, targets, rng)
    return images, targets.astype(np.float32)
