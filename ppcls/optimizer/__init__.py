"""Optimizers (``optimizer.py``) and learning-rate schedules (``lr.py``) by name."""

from ppcls.optimizer.lr import (LR_SCHEDULES, Constant, Cosine, LRPlan, Piecewise, Step, build_lr,
                                lr_signature)
from ppcls.optimizer.optimizer import OPTIMIZERS, REGULARIZERS, build_optimizer, split_decay
from ppcls.optimizer.adamwdl import AdamWDL  # noqa: E402  (registers AdamWDL)

__all__ = ["LR_SCHEDULES", "OPTIMIZERS", "REGULARIZERS", "AdamWDL", "Constant", "Cosine",
           "Piecewise", "Step", "LRPlan", "build_lr", "build_optimizer", "lr_signature",
           "split_decay"]
