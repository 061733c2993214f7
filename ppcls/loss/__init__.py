"""Losses by name: the ``Loss`` section of a config -> one callable returning named losses.

PaddleClas schema::

    Loss:
      Train:
        - CELoss: {weight: 1.0, epsilon: 0.1}
      Eval:
        - CELoss: {weight: 1.0}

Losses: ``CELoss`` (``epsilon``), ``MixCELoss`` (its older name), ``SoftTargetCrossEntropy``.
``labels`` are class ids, or soft targets ``float32 [N, class_num]`` when
``batch_transform_ops`` mixed the batch. Each list item is one loss with its ``weight``; the
result of :func:`build_loss` returns a dict with every loss by name plus ``loss``, their
weighted sum (what is back-propagated and what the log lines print last).
"""

import paddle
import paddle.nn.functional as F
from paddle import nn

from ppcls.utils import logger
from ppcls.utils.errors import ConfigError
from ppcls.utils.registry import Registry, build, split_spec

LOSSES = Registry("loss")


def _is_soft(logits, labels):
    """Soft targets: a float ``[N, class_num]`` tensor (what Mixup/Cutmix make)."""
    return (paddle.is_floating_point(labels) and len(labels.shape) == 2
            and labels.shape[-1] == logits.shape[-1] and logits.shape[-1] > 1)


def _soft_ce(logits, targets):
    """Mean over the batch of ``-sum(targets * log_softmax(logits))``."""
    logp = F.log_softmax(logits.astype("float32"), axis=-1)
    return (-(targets.astype("float32") * logp).sum(axis=-1)).mean()


@LOSSES.register
class CELoss(nn.Layer):
    """Softmax cross entropy, PaddleClas's keys: ``epsilon`` (label smoothing, used when in
    (0, 1); the target becomes ``(1 - epsilon) * target + epsilon / class_num``).

    ``labels`` are class ids ``[N]`` / ``[N, 1]``, or soft targets ``[N, class_num]`` (float,
    rows summing to 1: what ``batch_transform_ops`` make); smoothing applies to both.
    """

    def __init__(self, epsilon=None):
        super().__init__()
        if epsilon is not None and (isinstance(epsilon, bool) or not isinstance(epsilon, (int, float))
                                    or not 0 <= epsilon < 1):
            raise ValueError(f"epsilon must be a number in [0, 1), got {epsilon!r}")
        self.epsilon = float(epsilon) if epsilon else 0.0

    def forward(self, logits, labels):
        if _is_soft(logits, labels):
            targets = labels.astype("float32")
            if self.epsilon > 0:
                targets = F.label_smooth(targets, epsilon=self.epsilon)
            return _soft_ce(logits, targets)
        labels = labels.reshape([-1]).astype("int64")
        if self.epsilon > 0:
            one_hot = F.one_hot(labels, logits.shape[-1]).astype(logits.dtype)
            soft = F.label_smooth(one_hot, epsilon=self.epsilon)
            return F.cross_entropy(logits, soft, soft_label=True, reduction="mean")
        return F.cross_entropy(logits, labels, reduction="mean")


@LOSSES.register
class MixCELoss(CELoss):
    """PaddleClas's older name for cross entropy on Mixup/Cutmix targets (PaddleClas 2.x now
    refuses it and asks for CELoss); here it is CELoss (same keys, same soft-target handling),
    with a warning."""

    def __init__(self, epsilon=None):
        super().__init__(epsilon)
        logger.warning("Loss MixCELoss is PaddleClas's deprecated name for CELoss on mixed "
                       "targets; computed as CELoss")


@LOSSES.register
class SoftTargetCrossEntropy(nn.Layer):
    """``mean(-sum(target * log_softmax(logits)))`` (no keys); hard labels are taken as one-hot."""

    def forward(self, logits, labels):
        if not _is_soft(logits, labels):
            labels = F.one_hot(labels.reshape([-1]).astype("int64"), logits.shape[-1])
        return _soft_ce(logits, labels)


class CombinedLoss:
    """Weighted sum of named losses: ``__call__(logits, labels)`` -> ``{name: value, "loss": sum}``."""

    def __init__(self, items):
        self.items = items  # [(name, weight, loss_fn)]

    @property
    def names(self):
        return [name for name, _, _ in self.items]

    def __call__(self, logits, labels):
        out, total = {}, None
        for name, weight, fn in self.items:
            value = fn(logits, labels)
            out[name] = value
            total = value * weight if total is None else total + value * weight
        out["loss"] = total
        return out


def build_loss(section, where="Loss"):
    """``section``: a list of ``{LossName: {weight: w, ...}}`` items (``Loss.Train`` / ``Loss.Eval``)."""
    if not isinstance(section, list) or not section:
        raise ConfigError(f"{where} must be a non-empty list such as "
                          "[{CELoss: {weight: 1.0}}]; registered losses: " + ", ".join(LOSSES.names()))
    items = []
    for i, item in enumerate(section):
        if not isinstance(item, dict) or len(item) != 1:
            raise ConfigError(f"{where}.{i} must be one mapping {{LossName: {{weight: ...}}}}, "
                              f"got {item!r}")
        name, params, _ = split_spec(item, f"{where}.{i}")
        weight = params.pop("weight", 1.0)  # the sum's, not the loss's
        if isinstance(weight, bool) or not isinstance(weight, (int, float)):
            raise ConfigError(f"{where}.{i}.{name}.weight expects a number, got {weight!r}")
        items.append((name, float(weight), build({name: params}, LOSSES, f"{where}.{i}")))
    return CombinedLoss(items)


__all__ = ["LOSSES", "CELoss", "MixCELoss", "SoftTargetCrossEntropy", "CombinedLoss", "build_loss"]
