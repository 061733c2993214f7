"""Optimizers by name: the ``Optimizer`` section -> a paddle optimizer and its :class:`LRPlan`.

PaddleClas schema::

    Optimizer:
      name: Momentum
      momentum: 0.9
      use_nesterov: True
      one_dim_param_no_weight_decay: True   # BN gamma/beta and biases get no weight decay
      no_weight_decay_name: ""              # or: name substrings, space separated (or a list)
      lr: {name: Cosine, ...}               # see ppcls.optimizer.lr
      regularizer:
        name: L2
        coeff: 1.0e-4

An optimizer is one decorated ``paddle.optimizer`` class; its own keys (``momentum``,
``beta1``...) are checked against its constructor. The common keys above (``lr``,
``regularizer``, ``clip_norm`` and the two no-decay keys) are handled here: the parameters,
learning rate, weight decay and gradient clip are supplied to the constructor. An optimizer
that takes ``apply_decay_param_fun`` (AdamW) gets decoupled ``weight_decay`` from its own key
and no regularizer.
"""

import paddle

from ppcls.optimizer.lr import build_lr
from ppcls.utils.errors import ConfigError
from ppcls.utils.registry import Registry, accepted_keys, build

OPTIMIZERS = Registry("optimizer")
REGULARIZERS = {"L2": paddle.regularizer.L2Decay, "L1": paddle.regularizer.L1Decay}
COMMON_KEYS = ("lr", "regularizer", "clip_norm", "no_weight_decay_name",
               "one_dim_param_no_weight_decay")

OPTIMIZERS.register(paddle.optimizer.Momentum, name="Momentum")
OPTIMIZERS.register(paddle.optimizer.SGD, name="SGD")
OPTIMIZERS.register(paddle.optimizer.AdamW, name="AdamW")
OPTIMIZERS.register(paddle.optimizer.Adam, name="Adam")


@OPTIMIZERS.register
class RMSProp(paddle.optimizer.RMSProp):
    """paddle's RMSProp with PaddleClas's keys: ``rho`` (0.95), ``epsilon`` (1e-6), ``momentum``
    (0.0), ``centered``; ``multi_precision`` is accepted as PaddleClas accepts it (float32
    master weights only matter under AMP O2, which paddle's RMSProp does not offer)."""

    def __init__(self, learning_rate, rho=0.95, epsilon=1e-6, momentum=0.0, centered=False,
                 multi_precision=False, parameters=None, weight_decay=None, grad_clip=None):
        super().__init__(learning_rate, rho=rho, epsilon=epsilon, momentum=momentum,
                         centered=centered, parameters=parameters, weight_decay=weight_decay,
                         grad_clip=grad_clip)


def split_decay(model, no_decay_names=(), one_dim=False):
    """Trainable parameters as (decayed, not decayed) lists of ``(name, param)``."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if param.stop_gradient:
            continue
        skip = (one_dim and len(param.shape) <= 1) or any(n in name for n in no_decay_names)
        (no_decay if skip else decay).append((name, param))
    return decay, no_decay


def _regularizer(reg, where):
    if reg is None:
        return None
    if not isinstance(reg, dict) or reg.get("name") not in REGULARIZERS or set(reg) - {"name", "coeff"}:
        raise ConfigError(f"{where}.regularizer must be {{name: L2 or L1, coeff: number}}, got {reg!r}")
    return REGULARIZERS[reg["name"]](float(reg.get("coeff", 0.0)))


# Ranges of the numeric keys any optimizer may take: (low, high, low included, high included).
BOUNDS = {"momentum": (0.0, 1.0, True, False), "beta1": (0.0, 1.0, True, False),
          "beta2": (0.0, 1.0, True, False), "rho": (0.0, 1.0, True, False),
          "epsilon": (0.0, None, False, None), "weight_decay": (0.0, None, True, None),
          "clip_norm": (0.0, None, False, None)}


def check_bounds(section, where):
    """Refuse out-of-range values (momentum -5, regularizer coeff -1...) with one line."""
    reg = section.get("regularizer")
    items = [(k, section[k]) for k in BOUNDS if section.get(k) is not None]
    if isinstance(reg, dict) and reg.get("coeff") is not None:
        items.append(("regularizer.coeff", reg["coeff"]))
    for key, value in items:
        low, high, low_in, high_in = BOUNDS.get(key, (0.0, None, True, None))
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            if key == "weight_decay" and isinstance(value, (str, dict)):
                continue  # a PaddleClas regularizer spec given as weight_decay
            raise ConfigError(f"{where}.{key} expects a number, got {value!r}")
        ok = (value >= low if low_in else value > low) and (
            high is None or (value <= high if high_in else value < high))
        if not ok:
            rng = (("[" if low_in else "(") + f"{low:g}, " + (f"{high:g}" if high is not None
                   else "inf") + ("]" if high_in else ")"))
            raise ConfigError(f"{where}.{key} must be in {rng}, got {value!r}")


def build_optimizer(section, epochs, step_each_epoch, model, where="Optimizer"):
    """``Optimizer`` section -> ``(paddle optimizer, LRPlan)`` for ``model``'s parameters."""
    if not isinstance(section, dict) or "name" not in section:
        raise ConfigError(f"{where} must be a mapping with a name; registered optimizers: "
                          + ", ".join(OPTIMIZERS.names()))
    check_bounds(section, where)
    spec = {k: v for k, v in section.items() if k not in COMMON_KEYS}
    if "lr" not in section:
        raise ConfigError(f"{where}.lr is missing (e.g. {{name: Cosine, learning_rate: 0.1}})")
    plan = build_lr(section["lr"], epochs, step_each_epoch, where=f"{where}.lr")
    names = section.get("no_weight_decay_name") or []
    names = names.split() if isinstance(names, str) else list(names)
    decay, no_decay = split_decay(model, names,
                                  bool(section.get("one_dim_param_no_weight_decay", False)))
    clip = section.get("clip_norm")
    supplied = {"learning_rate": plan.scheduler,
                "grad_clip": paddle.nn.ClipGradByGlobalNorm(float(clip)) if clip else None}
    optimizer_cls = OPTIMIZERS.get(spec["name"]) if spec["name"] in OPTIMIZERS else None
    if optimizer_cls is not None and "apply_decay_param_fun" in accepted_keys(optimizer_cls)[0]:
        if section.get("regularizer") is not None:
            raise ConfigError(f"{where}: {spec['name']} takes weight_decay (decoupled), not a "
                              "regularizer")
        decay_ids = {p.name for _, p in decay}
        supplied.update(parameters=model.parameters(),
                        apply_decay_param_fun=lambda n: n in decay_ids)
    else:
        groups = [{"params": [p for _, p in decay]}]
        if no_decay:
            groups.append({"params": [p for _, p in no_decay], "weight_decay": 0.0})
        supplied.update(parameters=groups,
                        weight_decay=_regularizer(section.get("regularizer"), where))
    return build(spec, OPTIMIZERS, where, **supplied), plan


__all__ = ["OPTIMIZERS", "REGULARIZERS", "build_optimizer", "split_decay"]
