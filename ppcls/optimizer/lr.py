"""Learning-rate schedules by name: ``Optimizer.lr`` -> an :class:`LRPlan`.

PaddleClas schema::

    lr:
      name: Cosine
      learning_rate: 0.1
      eta_min: 1.0e-5
      warmup_epoch: 3          # linear warm-up (every schedule; applied here, once)
      warmup_start_lr: 1.0e-4
      by_epoch: True           # step once an epoch (else once an iteration)

A schedule is one decorated ``paddle.optimizer.lr`` scheduler class. Its constructor takes its
own YAML keys plus, when it names them, what :func:`build_lr` supplies:
``total_steps`` (the whole run), ``warmup_steps`` and ``steps_per_epoch`` (in scheduler steps:
1 an epoch with ``by_epoch``, else the iterations of an epoch). ``warmup_epoch``,
``warmup_start_lr``, ``by_epoch`` and PaddleClas's ``last_epoch`` are common keys handled
here: the warm-up wraps the schedule in ``LinearWarmup`` up to the schedule's first rate.
"""

import json
import math
from dataclasses import dataclass

from paddle.optimizer import lr as lr_mod

from ppcls.utils import logger
from ppcls.utils.errors import ConfigError
from ppcls.utils.registry import Registry, build

LR_SCHEDULES = Registry("LR schedule")
COMMON_KEYS = ("warmup_epoch", "warmup_start_lr", "by_epoch", "last_epoch")


@LR_SCHEDULES.register
class Cosine(lr_mod.CosineAnnealingDecay):
    """Half a cosine from ``learning_rate`` (after the warm-up) to ``eta_min`` at the end."""

    def __init__(self, learning_rate, eta_min=0.0, *, total_steps, warmup_steps):
        super().__init__(learning_rate, T_max=max(1, total_steps - warmup_steps), eta_min=eta_min)


@LR_SCHEDULES.register
class Constant(lr_mod.LRScheduler):
    """The same learning rate at every step (e.g. the cooldown after the cosine schedule)."""

    def __init__(self, learning_rate):
        super().__init__(learning_rate)

    def get_lr(self):
        return self.base_lr


@LR_SCHEDULES.register
class Piecewise(lr_mod.PiecewiseDecay):
    """``values[i]`` until epoch ``decay_epochs[i]`` (``len(values) == len(decay_epochs) + 1``);
    the boundaries are epochs, counted in iterations unless ``by_epoch``. As in PaddleClas, a
    ``learning_rate`` replaces both lists (with a warning): ten times lower every 30 epochs."""

    def __init__(self, decay_epochs=(), values=(), learning_rate=None, *, steps_per_epoch, epochs):
        if learning_rate:
            decay_epochs = list(range(30, epochs, 30))
            values = [learning_rate * 0.1 ** i for i in range(len(decay_epochs) + 1)]
            if not decay_epochs:
                decay_epochs, values = [epochs], [values[0], values[0]]
            logger.warning(f"Optimizer.lr (Piecewise) has learning_rate {learning_rate}: the rate is "
                           f"divided by 10 every 30 epochs, decay_epochs={decay_epochs}, "
                           f"values={values} (as PaddleClas does)")
        if len(values) != len(decay_epochs) + 1:
            raise ValueError(f"values needs one more entry than decay_epochs, got {list(values)} "
                             f"and {list(decay_epochs)}")
        super().__init__([int(e * steps_per_epoch) for e in decay_epochs], list(values))


@LR_SCHEDULES.register
class Step(lr_mod.StepDecay):
    """Multiply by ``gamma`` every ``step_size`` epochs (counted after the warm-up)."""

    def __init__(self, learning_rate, step_size, gamma=0.1, *, steps_per_epoch):
        super().__init__(learning_rate, step_size=max(1, int(step_size * steps_per_epoch)),
                         gamma=gamma)


@LR_SCHEDULES.register
class MultiStepDecay(lr_mod.MultiStepDecay):
    """Multiply by ``gamma`` at each epoch of ``milestones`` (counted after the warm-up)."""

    def __init__(self, learning_rate, milestones, gamma=0.1, *, steps_per_epoch):
        if not isinstance(milestones, (list, tuple)) or not milestones:
            raise ValueError(f"milestones expects a non-empty list of epochs, got {milestones!r}")
        super().__init__(learning_rate, milestones=[int(m * steps_per_epoch) for m in milestones],
                         gamma=gamma)


@LR_SCHEDULES.register
class Linear(lr_mod.PolynomialDecay):
    """Polynomial decay from ``learning_rate`` (after the warm-up) to ``end_lr`` at the end:
    ``(lr - end_lr) * (1 - t / T) ** power + end_lr``; ``power`` 1.0 is a straight line. With
    ``cycle`` the decay restarts when it reaches the end."""

    def __init__(self, learning_rate, end_lr=0.0, power=1.0, cycle=False, *, total_steps,
                 warmup_steps):
        super().__init__(learning_rate, decay_steps=max(1, total_steps - warmup_steps),
                         end_lr=end_lr, power=power, cycle=cycle)


def _name(scheduler):
    """The name log lines print: the paddle scheduler's (``CosineAnnealingDecay``,
    ``LinearWarmup``), or the class's own when it derives from the base directly."""
    for cls in type(scheduler).__mro__:
        if cls.__module__.startswith("paddle") and cls is not lr_mod.LRScheduler:
            return cls.__name__
    return type(scheduler).__name__


@dataclass
class LRPlan:
    """A scheduler plus how the engine drives it."""

    scheduler: lr_mod.LRScheduler
    by_epoch: bool
    step_each_epoch: int
    signature: str  # equal signatures = the same schedule (see ``ppcls.engine.checkpoint``)

    @property
    def name(self):
        return _name(self.scheduler)

    def get_lr(self):
        return float(self.scheduler())

    def steps_done(self, epochs_done):
        """The scheduler position at the start of epoch ``epochs_done + 1``."""
        return epochs_done * (1 if self.by_epoch else self.step_each_epoch)

    def fast_forward(self, epochs_done):
        """Move a fresh scheduler to the start of epoch ``epochs_done + 1``."""
        steps = self.steps_done(epochs_done)
        if steps > 0:
            self.scheduler.step(steps)


def lr_signature(lr_config, epochs, step_each_epoch):
    by_epoch = bool((lr_config or {}).get("by_epoch", False))
    return json.dumps({"lr": lr_config, "epochs": epochs,
                       "step_each_epoch": None if by_epoch else step_each_epoch},
                      sort_keys=True, default=str)


def build_lr(lr_config, epochs, step_each_epoch, where="Optimizer.lr"):
    """``Optimizer.lr`` -> :class:`LRPlan`. A bare number means a constant rate."""
    if isinstance(lr_config, (int, float)) and not isinstance(lr_config, bool):
        lr_config = {"name": "Constant", "learning_rate": float(lr_config)}
    if not isinstance(lr_config, dict) or "name" not in lr_config:
        raise ConfigError(f"{where} must be a mapping with a name; registered LR schedules: "
                          + ", ".join(LR_SCHEDULES.names()))
    spec = {k: v for k, v in lr_config.items() if k not in COMMON_KEYS}
    by_epoch = bool(lr_config.get("by_epoch", False))
    warmup_epoch = lr_config.get("warmup_epoch", 0)
    warmup_start_lr = lr_config.get("warmup_start_lr", 0.0)
    unit = 1 if by_epoch else step_each_epoch
    if isinstance(warmup_epoch, bool) or not isinstance(warmup_epoch, (int, float)) \
            or warmup_epoch < 0:
        raise ConfigError(f"{where} ({spec['name']}): warmup_epoch must be a number >= 0, "
                          f"got {warmup_epoch!r}")
    if warmup_epoch >= epochs > 0:  # PaddleClas's rule: the warm-up is cut to the run
        from ppcls.utils import logger

        logger.warning(f"{where}.warmup_epoch ({warmup_epoch}) is not shorter than the run "
                       f"(Global.epochs={epochs}): the warm-up is shortened to {epochs} epoch(s), "
                       "the whole run")
        warmup_epoch = epochs
    warmup_steps = int(round(warmup_epoch * unit))
    main = build(spec, LR_SCHEDULES, where, total_steps=epochs * unit, warmup_steps=warmup_steps,
                 steps_per_epoch=unit, epochs=epochs)
    scheduler = main
    first = float(main())
    if not math.isfinite(first):
        raise ConfigError(f"{where} ({spec['name']}): the learning rate must be a finite number, "
                          f"got {lr_config.get('learning_rate', first)!r}")
    if warmup_steps > 0:
        if isinstance(warmup_start_lr, bool) or not isinstance(warmup_start_lr, (int, float)) \
                or not math.isfinite(warmup_start_lr):
            raise ConfigError(f"{where}.warmup_start_lr must be a finite number, got "
                              f"{warmup_start_lr!r}")
        if not first > warmup_start_lr:  # Paddle's LinearWarmup asserts it; say it in words
            raise ConfigError(f"{where}: the warm-up must rise from warmup_start_lr "
                              f"({warmup_start_lr}) to the schedule's first rate ({first}); raise "
                              f"learning_rate or lower warmup_start_lr, or set warmup_epoch: 0")
    if warmup_steps > 0:  # the one place warm-up is applied
        scheduler = lr_mod.LinearWarmup(main, warmup_steps=warmup_steps, start_lr=warmup_start_lr,
                                        end_lr=float(main()))
    last_epoch = lr_config.get("last_epoch", -1)
    if isinstance(last_epoch, bool) or not isinstance(last_epoch, int) or last_epoch < -1:
        raise ConfigError(f"{where}.last_epoch expects an integer >= -1, got {last_epoch!r}")
    if last_epoch >= 0:  # PaddleClas: the schedule starts as if last_epoch steps were done
        scheduler.step(last_epoch + 1)
    return LRPlan(scheduler, by_epoch, step_each_epoch,
                  lr_signature(lr_config, epochs, step_each_epoch))


__all__ = ["LR_SCHEDULES", "Constant", "Cosine", "Linear", "MultiStepDecay", "Piecewise", "Step",
           "LRPlan", "build_lr", "lr_signature"]
