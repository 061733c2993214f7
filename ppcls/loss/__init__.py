"""Losses by name: the ``Loss`` section of a config -> one callable returning named losses.

PaddleClas schema::

    Loss:
      Train:
        - CELoss: {weight: 1.0, epsilon: 0.1}
      Eval:
        - CELoss: {weight: 1.0}

Each list item is one loss with its ``weight``; the result of :func:`build_loss` returns a
dict with every loss by name plus ``loss``, their weighted sum (what is back-propagated and
what the log lines print last).
"""

import paddle
import paddle.nn.functional as F
from paddle import nn

from ppcls.utils.errors import ConfigError
from ppcls.utils.registry import Registry, build, split_spec

LOSSES = Registry("loss")


@LOSSES.register
class CELoss(nn.Layer):
    """Softmax cross entropy, with label smoothing when ``epsilon`` is in (0, 1).

    With smoothing the target is ``(1 - epsilon) * one_hot + epsilon / class_num``.
    """

    def __init__(self, epsilon=None):
        super().__init__()
        if epsilon is not None and not (isinstance(epsilon, (int, float)) and 0 <= epsilon < 1):
            raise ValueError(f"epsilon must be a number in [0, 1), got {epsilon!r}")
        self.epsilon = float(epsilon) if epsilon else 0.0

    def forward(self, logits, labels):
        labels = labels.reshape([-1]).astype("int64")
        if self.epsilon > 0:
            one_hot = F.one_hot(labels, logits.shape[-1]).astype(logits.dtype)
            soft = F.label_smooth(one_hot, epsilon=self.epsilon)
            return F.cross_entropy(logits, soft, soft_label=True, reduction="mean")
        return F.cross_entropy(logits, labels, reduction="mean")


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


__all__ = ["LOSSES", "CELoss", "CombinedLoss", "build_loss"]
