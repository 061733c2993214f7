"""Optimizers and learning-rate schedules by name: the ``Optimizer`` section -> paddle objects.

PaddleClas schema::

    Optimizer:
      name: Momentum
      momentum: 0.9
      use_nesterov: True
      one_dim_param_no_weight_decay: True   # BN gamma/beta and biases get no weight decay
      no_weight_decay_name: ""              # or: name substrings, space separated (or a list)
      lr:
        name: Cosine
        learning_rate: 0.1
        eta_min: 1.0e-5
        warmup_epoch: 3
        warmup_start_lr: 1.0e-4
        by_epoch: True                      # step once an epoch (else once an iteration)
      regularizer:
        name: L2
        coeff: 1.0e-4

Schedules are ``paddle.optimizer.lr`` schedulers (``LinearWarmup`` wrapping the main one when
``warmup_epoch`` > 0). The engine steps them once an epoch (``by_epoch: True``) or once an
iteration; positions are counted in those units.
"""

import json
from dataclasses import dataclass

import paddle
from paddle.optimizer import lr as lr_mod

from ppcls.utils.errors import ConfigError
from ppcls.utils.registry import Registry

LR_SCHEDULES = Registry("LR schedule")
OPTIMIZERS = Registry("optimizer")
REGULARIZERS = {"L2": paddle.regularizer.L2Decay, "L1": paddle.regularizer.L1Decay}


# --------------------------------------------------------------------------- LR schedules


class Constant(lr_mod.LRScheduler):
    """The same learning rate at every step (e.g. the cooldown after the cosine schedule)."""

    def get_lr(self):
        return self.base_lr


def _units(by_epoch, step_each_epoch):
    return 1 if by_epoch else step_each_epoch


def _with_warmup(main, learning_rate, warmup_epoch, warmup_start_lr, unit):
    steps = int(round(warmup_epoch * unit))
    if steps <= 0:
        return main
    return lr_mod.LinearWarmup(main, warmup_steps=steps, start_lr=warmup_start_lr,
                               end_lr=learning_rate)


@LR_SCHEDULES.register(name="Cosine")
def cosine(learning_rate, epochs, step_each_epoch, by_epoch=False, eta_min=0.0, warmup_epoch=0,
           warmup_start_lr=0.0):
    """Linear warmup for ``warmup_epoch`` epochs, then half a cosine to ``eta_min`` at the end."""
    if not 0 <= warmup_epoch < epochs:
        raise ValueError(f"warmup_epoch must be in [0, Global.epochs={epochs}), got {warmup_epoch}")
    unit = _units(by_epoch, step_each_epoch)
    warmup_steps = int(round(warmup_epoch * unit))
    main = lr_mod.CosineAnnealingDecay(learning_rate, T_max=max(1, epochs * unit - warmup_steps),
                                       eta_min=eta_min)
    return _with_warmup(main, learning_rate, warmup_epoch, warmup_start_lr, unit)


@LR_SCHEDULES.register(name="Constant")
def constant(learning_rate, epochs, step_each_epoch, by_epoch=False, warmup_epoch=0,
             warmup_start_lr=0.0):
    unit = _units(by_epoch, step_each_epoch)
    return _with_warmup(Constant(learning_rate), learning_rate, warmup_epoch, warmup_start_lr, unit)


@LR_SCHEDULES.register(name="Piecewise")
def piecewise(learning_rate=None, epochs=None, step_each_epoch=1, by_epoch=False, decay_epochs=(),
              values=(), warmup_epoch=0, warmup_start_lr=0.0):
    """``values[i]`` until epoch ``decay_epochs[i]`` (``len(values) == len(decay_epochs) + 1``)."""
    if len(values) != len(decay_epochs) + 1:
        raise ValueError(f"values needs one more entry than decay_epochs, got {list(values)} and "
                         f"{list(decay_epochs)}")
    unit = _units(by_epoch, step_each_epoch)
    main = lr_mod.PiecewiseDecay([int(e * unit) for e in decay_epochs], list(values))
    return _with_warmup(main, values[0], warmup_epoch, warmup_start_lr, unit)


@LR_SCHEDULES.register(name="Step")
def step(learning_rate, epochs, step_each_epoch, step_size, gamma=0.1, by_epoch=False,
         warmup_epoch=0, warmup_start_lr=0.0):
    """Multiply by ``gamma`` every ``step_size`` epochs."""
    unit = _units(by_epoch, step_each_epoch)
    main = lr_mod.StepDecay(learning_rate, step_size=max(1, int(step_size * unit)), gamma=gamma)
    return _with_warmup(main, learning_rate, warmup_epoch, warmup_start_lr, unit)


@dataclass
class LRPlan:
    """A scheduler plus how the engine drives it."""

    scheduler: lr_mod.LRScheduler
    by_epoch: bool
    step_each_epoch: int
    signature: str  # equal signatures = the same schedule (see ``ppcls.engine`` on resuming)

    @property
    def name(self):
        return type(self.scheduler).__name__

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
    params = dict(lr_config)
    name = params.pop("name")
    params.pop("last_epoch", None)  # PaddleClas writes it; positions come from checkpoints here
    try:
        fn = LR_SCHEDULES.get(name)
    except KeyError as err:
        raise ConfigError(f"{where}.name: {err.args[0]}") from None
    by_epoch = bool(params.get("by_epoch", False))
    try:
        scheduler = fn(epochs=epochs, step_each_epoch=step_each_epoch, **params)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{where} ({name}): {err}") from None
    return LRPlan(scheduler, by_epoch, step_each_epoch,
                  lr_signature(lr_config, epochs, step_each_epoch))


# --------------------------------------------------------------------------- optimizers


def _no_decay_names(cfg):
    names = cfg.pop("no_weight_decay_name", None) or []
    if isinstance(names, str):
        names = names.split()
    one_dim = bool(cfg.pop("one_dim_param_no_weight_decay", False))
    return list(names), one_dim


def split_decay(model, no_decay_names=(), one_dim=False):
    """Trainable parameters as (decayed, not decayed) lists of ``(name, param)``."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if param.stop_gradient:
            continue
        skip = (one_dim and len(param.shape) <= 1) or any(n in name for n in no_decay_names)
        (no_decay if skip else decay).append((name, param))
    return decay, no_decay


def _regularizer(cfg, where):
    reg = cfg.pop("regularizer", None)
    if reg is None:
        return None
    if not isinstance(reg, dict) or reg.get("name") not in REGULARIZERS or set(reg) - {"name", "coeff"}:
        raise ConfigError(f"{where}.regularizer must be {{name: L2 or L1, coeff: number}}, got {reg!r}")
    return REGULARIZERS[reg["name"]](float(reg.get("coeff", 0.0)))


def _grad_clip(cfg):
    clip = cfg.pop("clip_norm", None)
    return paddle.nn.ClipGradByGlobalNorm(float(clip)) if clip else None


def _groups(model, cfg):
    names, one_dim = _no_decay_names(cfg)
    decay, no_decay = split_decay(model, names, one_dim)
    groups = [{"params": [p for _, p in decay]}]
    if no_decay:
        groups.append({"params": [p for _, p in no_decay], "weight_decay": 0.0})
    return groups


@OPTIMIZERS.register
def Momentum(model, learning_rate, cfg, where):
    reg, clip = _regularizer(cfg, where), _grad_clip(cfg)
    return paddle.optimizer.Momentum(learning_rate=learning_rate, parameters=_groups(model, cfg),
                                     weight_decay=reg, grad_clip=clip, **cfg)


@OPTIMIZERS.register
def SGD(model, learning_rate, cfg, where):
    reg, clip = _regularizer(cfg, where), _grad_clip(cfg)
    return paddle.optimizer.SGD(learning_rate=learning_rate, parameters=_groups(model, cfg),
                                weight_decay=reg, grad_clip=clip, **cfg)


@OPTIMIZERS.register
def AdamW(model, learning_rate, cfg, where):
    """Decoupled weight decay ``weight_decay`` (default 0.01), skipped for no-decay parameters."""
    clip = _grad_clip(cfg)
    names, one_dim = _no_decay_names(cfg)
    if "regularizer" in cfg:
        raise ConfigError(f"{where}: AdamW takes weight_decay (decoupled), not a regularizer")
    decay, _ = split_decay(model, names, one_dim)
    decay_ids = {p.name for _, p in decay}
    return paddle.optimizer.AdamW(learning_rate=learning_rate, parameters=model.parameters(),
                                  apply_decay_param_fun=lambda n: n in decay_ids, grad_clip=clip,
                                  **cfg)


def build_optimizer(section, epochs, step_each_epoch, model, where="Optimizer"):
    """``Optimizer`` section -> ``(paddle optimizer, LRPlan)`` for ``model``'s parameters."""
    if not isinstance(section, dict) or "name" not in section:
        raise ConfigError(f"{where} must be a mapping with a name; registered optimizers: "
                          + ", ".join(OPTIMIZERS.names()))
    cfg = dict(section)
    name = cfg.pop("name")
    try:
        fn = OPTIMIZERS.get(name)
    except KeyError as err:
        raise ConfigError(f"{where}.name: {err.args[0]}") from None
    if "lr" not in cfg:
        raise ConfigError(f"{where}.lr is missing (e.g. {{name: Cosine, learning_rate: 0.1}})")
    plan = build_lr(cfg.pop("lr"), epochs, step_each_epoch, where=f"{where}.lr")
    try:
        optimizer = fn(model, plan.scheduler, cfg, where)
    except TypeError as err:
        raise ConfigError(f"{where} ({name}): {err}") from None
    return optimizer, plan


__all__ = ["LR_SCHEDULES", "OPTIMIZERS", "Constant", "LRPlan", "build_lr", "build_optimizer",
           "lr_signature", "split_decay"]
