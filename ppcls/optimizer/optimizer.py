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
learning rate, weight decay and gradient clip are supplied to the constructor.

- ``clip_norm: X`` clips each gradient tensor to norm X (``paddle.nn.ClipGradByNorm``), as
  PaddleClas does.
- Coupled optimizers (Momentum, SGD, Adam, RMSProp) take ``regularizer`` or, as PaddleClas's
  do, a number ``weight_decay`` (L2 coefficient; the regularizer wins when both are set).
- An AdamW (``AdamW``, ``AdamWDL``) gets decoupled ``weight_decay`` from its own key and no
  regularizer. PaddleClas's AdamW and AdamWDL take any other key (``**args``) and ignore it:
  here such keys are accepted with ONE warning listing them, except ``clip_grad``, which
  means a global-norm clip (see :func:`grad_clip`).
"""

import paddle
from paddle.nn.clip import ClipGradBase

from ppcls.optimizer.lr import build_lr
from ppcls.utils import logger
from ppcls.utils.errors import ConfigError
from ppcls.utils.registry import Registry, accepted_keys, build, suggest

OPTIMIZERS = Registry("optimizer")
REGULARIZERS = Registry("regularizer")
COMMON_KEYS = ("lr", "regularizer", "clip_norm", "no_weight_decay_name",
               "one_dim_param_no_weight_decay")
NONE_WORDS = ("none", "null", "~", "")

OPTIMIZERS.register(paddle.optimizer.SGD, name="SGD")
OPTIMIZERS.register(paddle.optimizer.Adam, name="Adam")


@OPTIMIZERS.register
class Momentum(paddle.optimizer.Momentum):
    """paddle's Momentum with PaddleClas's default ``multi_precision: True`` (float32 master
    weights for float16 parameters under AMP O2; no effect on float32 parameters)."""

    def __init__(self, learning_rate, momentum=0.9, use_nesterov=False, multi_precision=True,
                 rescale_grad=1.0, parameters=None, weight_decay=None, grad_clip=None):
        super().__init__(learning_rate, momentum=momentum, use_nesterov=use_nesterov,
                         multi_precision=multi_precision, rescale_grad=rescale_grad,
                         parameters=parameters, weight_decay=weight_decay, grad_clip=grad_clip)


@OPTIMIZERS.register
class AdamW(paddle.optimizer.AdamW):
    """paddle's AdamW (decoupled ``weight_decay``) with PaddleClas's keys and defaults.
    ``weight_decay`` null or absent means no decay (PaddleClas passes None on, which paddle
    refuses). ``takes_any_key``: PaddleClas's AdamW swallows unknown keys (``**args``)."""

    takes_any_key = True
    no_effect = ()  # common keys this optimizer ignores, as PaddleClas's does

    def __init__(self, learning_rate, beta1=0.9, beta2=0.999, epsilon=1e-8, weight_decay=None,
                 multi_precision=False, amsgrad=False, lazy_mode=False, parameters=None,
                 apply_decay_param_fun=None, grad_clip=None):
        super().__init__(learning_rate, beta1=beta1, beta2=beta2, epsilon=epsilon,
                         parameters=parameters, weight_decay=float(weight_decay or 0.0),
                         apply_decay_param_fun=apply_decay_param_fun, grad_clip=grad_clip,
                         lazy_mode=lazy_mode, multi_precision=multi_precision, amsgrad=amsgrad)


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


@REGULARIZERS.register(name="L2")
def l2_decay(coeff=0.0):
    """``regularizer: {name: L2, coeff: c}``: paddle's L2Decay, ``c * sum(w ** 2) / 2``."""
    return paddle.regularizer.L2Decay(float(coeff))


@REGULARIZERS.register(name="L1")
def l1_decay(coeff=0.0):
    """``regularizer: {name: L1, coeff: c}``: paddle's L1Decay, ``c * sum(|w|)``."""
    return paddle.regularizer.L1Decay(float(coeff))


def _regularizer(reg, where):
    """The regularizer the section at ``where`` (``Optimizer.regularizer``) names, or None."""
    if reg is None:
        return None
    if not isinstance(reg, dict) or "name" not in reg:
        raise ConfigError(f"{where} must be {{name: L2 or L1, coeff: number}}, got {reg!r}")
    return build(reg, REGULARIZERS, where)


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


class ClipGradChain(ClipGradBase):
    """Several gradient clips, one after the other (``clip_norm`` and ``clip_grad`` both set)."""

    def __init__(self, clips):
        super().__init__()
        self.clips = list(clips)

    def _dygraph_clip(self, params_grads):
        for clip in self.clips:
            params_grads = clip(params_grads)
        return params_grads

    def __str__(self):
        return " then ".join(str(c) for c in self.clips)


def _is_none(value):
    return value is None or (isinstance(value, str) and value.strip().lower() in NONE_WORDS)


def grad_clip(section, where, takes_clip_grad):
    """The gradient clip the section asks for, or None; says what it does in the log.

    - ``clip_norm: X`` (PaddleClas's key): each gradient tensor is clipped to norm X,
      ``paddle.nn.ClipGradByNorm``, exactly as PaddleClas.
    - ``clip_grad: X`` (written by 18 PaddleClas AdamW recipes, which PaddleClas ignores):
      the recipes' authors meant timm's ``--clip-grad``, so here it clips the global norm of
      all gradients together to X (``paddle.nn.ClipGradByGlobalNorm``); ``None``/``null``
      means no clipping. Logged once, when the optimizer is built (once a run).
    """
    clips = []
    norm = section.get("clip_norm")
    if not _is_none(norm):
        clips.append(paddle.nn.ClipGradByNorm(float(norm)))
        logger.info(f"{where}.clip_norm: {norm}: each gradient tensor is clipped to L2 norm "
                    f"{norm} (ClipGradByNorm, as PaddleClas)")
    if takes_clip_grad and "clip_grad" in section:
        value = section["clip_grad"]
        if _is_none(value):
            logger.info(f"{where}.clip_grad: {value}: no gradient clipping from clip_grad")
        else:
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise ConfigError(f"{where}.clip_grad expects a number > 0 or None, got {value!r}")
            clips.append(paddle.nn.ClipGradByGlobalNorm(float(value)))
            logger.info(f"{where}.clip_grad: {value}: the global L2 norm of all gradients "
                        f"together is clipped to {value} (ClipGradByGlobalNorm, timm's "
                        "--clip-grad; PaddleClas ignores this key)")
    if len(clips) > 1:
        return ClipGradChain(clips)
    return clips[0] if clips else None


def _coupled_decay(section, spec, where):
    """Momentum/SGD/Adam/RMSProp: ``regularizer``, else PaddleClas's ``weight_decay`` number
    (an L2 coefficient, paddle's meaning of a float weight_decay)."""
    reg = _regularizer(section.get("regularizer"), f"{where}.regularizer")
    wd = spec.pop("weight_decay", None)
    if wd is None:
        return reg
    if reg is not None:
        logger.warning(f"{where}: both regularizer and weight_decay are set: weight_decay "
                       f"({wd}) is ignored, as PaddleClas does")
        return reg
    if isinstance(wd, dict):
        return _regularizer(wd, f"{where}.weight_decay")
    return paddle.regularizer.L2Decay(float(wd))


def _no_effect(section, cls, spec, where):
    """Keys PaddleClas's optimizer swallows through ``**args`` (or takes and never uses):
    dropped from ``spec``, listed in one warning."""
    keys = accepted_keys(cls, ("learning_rate", "parameters", "apply_decay_param_fun",
                               "grad_clip", "model"))[0]
    unused = [k for k in spec if k != "name" and k not in keys and k != "clip_grad"]
    unused += [k for k in getattr(cls, "no_effect", ()) if k in section]
    for key in unused:
        spec.pop(key, None)
    if unused:
        hints = "".join(suggest(k, keys) for k in unused if suggest(k, keys))
        logger.warning(f"{where}: {', '.join(f'{where}.{k}' for k in unused)} "
                       f"{'has' if len(unused) == 1 else 'have'} no effect: PaddleClas's "
                       f"{spec['name']} accepts any key and ignores these{hints}; "
                       f"{spec['name']} uses: {', '.join(keys)}")


def build_optimizer(section, epochs, step_each_epoch, model, where="Optimizer"):
    """``Optimizer`` section -> ``(paddle optimizer, LRPlan)`` for ``model``'s parameters."""
    if not isinstance(section, dict) or "name" not in section:
        raise ConfigError(f"{where} must be a mapping with a name; registered optimizers: "
                          + ", ".join(OPTIMIZERS.names()))
    check_bounds(section, where)
    spec = {k: v for k, v in section.items() if k not in COMMON_KEYS}
    if "lr" not in section:
        raise ConfigError(f"{where}.lr is missing (e.g. {{name: Cosine, learning_rate: 0.1}})")
    optimizer_cls = OPTIMIZERS.get(spec["name"]) if spec["name"] in OPTIMIZERS else None
    takes_any = bool(getattr(optimizer_cls, "takes_any_key", False))
    if takes_any:
        _no_effect(section, optimizer_cls, spec, where)
        spec.pop("clip_grad", None)
    plan = build_lr(section["lr"], epochs, step_each_epoch, where=f"{where}.lr")
    names = section.get("no_weight_decay_name") or []
    names = names.split() if isinstance(names, str) else list(names)
    decay, no_decay = split_decay(model, names,
                                  bool(section.get("one_dim_param_no_weight_decay", False)))
    supplied = {"learning_rate": plan.scheduler, "grad_clip": grad_clip(section, where, takes_any),
                "model": model}
    if optimizer_cls is not None and issubclass(optimizer_cls, paddle.optimizer.AdamW):
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
        supplied.update(parameters=groups, weight_decay=_coupled_decay(section, spec, where))
    return build(spec, OPTIMIZERS, where, **supplied), plan


__all__ = ["OPTIMIZERS", "REGULARIZERS", "build_optimizer", "grad_clip", "split_decay"]
