"""Mixed precision: the ``AMP`` section read once, the loss scaler, and the rules around them.

PaddleClas's ``AMP`` keys: ``use_amp``, ``level`` (O1: float16 ops under ``auto_cast``, float32
weights; O2: float16 weights with float32 master weights in the optimizer), ``scale_loss``,
``use_dynamic_loss_scaling``, ``use_fp16_test``, ``use_promote`` and Paddle's scaler keys
``incr_every_n_steps``, ``decr_every_n_nan_or_inf``, ``incr_ratio``, ``decr_ratio``.

Rules (each logged once when it applies):

- Paddle runs float16 AMP on a GPU only; on any other device the run trains and evaluates in
  float32 with one warning, so a GPU recipe still runs on a laptop or in CI.
- Under O2 the weights are float16, so evaluation runs under ``auto_cast`` too
  (``use_fp16_test`` is forced on, as PaddleClas does).
- Loss scaling follows the config's keys; a key the config does not name takes Paddle's
  ``GradScaler`` default (dynamic scaling from 65536), and the log line says which is which.
  With no scaling key at all a warning says so: PaddleClas would train with a static scale of
  1.0, under which small float16 gradients underflow to zero unnoticed.
- The update is ``scaler.step(optimizer)`` then ``scaler.update()``: ``scaler.minimize`` reads
  the optimizer's parameter list and fails on parameter groups (our Momentum/SGD use groups).
"""

import inspect

from ppcls.utils import logger
from ppcls.utils.errors import ConfigError

AMP_KEYS = {"use_amp", "scale_loss", "use_dynamic_loss_scaling", "level", "use_fp16_test",
            "use_promote", "incr_every_n_steps", "decr_every_n_nan_or_inf", "incr_ratio",
            "decr_ratio"}
# config key -> paddle.amp.GradScaler argument
SCALING_KEYS = {"scale_loss": "init_loss_scaling",
                "use_dynamic_loss_scaling": "use_dynamic_loss_scaling",
                "incr_every_n_steps": "incr_every_n_steps",
                "decr_every_n_nan_or_inf": "decr_every_n_nan_or_inf",
                "incr_ratio": "incr_ratio", "decr_ratio": "decr_ratio"}


def amp_available(device):
    """Whether Paddle runs float16 mixed precision on ``device``. On CPU, Paddle's ``auto_cast``,
    ``decorate`` and ``GradScaler`` silently do nothing, so we say so and train in float32."""
    return device == "gpu"


def amp_settings(config, device):
    """The checked ``AMP`` section as a dict (``level`` upper-cased, ``use_fp16_test`` set), or
    ``None`` when the run is in float32 (no section, ``use_amp: False``, or no GPU)."""
    amp = config.get("AMP")
    if not amp:
        return None
    if not isinstance(amp, dict):
        raise ConfigError(f"AMP expects a mapping such as {{scale_loss: 65536, level: O1}}, got {amp!r}")
    unknown = set(amp) - AMP_KEYS
    if unknown:
        raise ConfigError(f"unknown key(s) in AMP: {', '.join(sorted(unknown))}; known: "
                          f"{', '.join(sorted(AMP_KEYS))}")
    if not amp.get("use_amp", True):
        return None
    level = str(amp.get("level", "O1")).upper()
    if level not in ("O1", "O2"):
        raise ConfigError(f"AMP.level expects O1 or O2, got {amp.get('level')!r}")
    if not amp_available(device):
        logger.warning(f"AMP (level {level}) needs a GPU; this run is on {device}, so it trains and "
                       "evaluates in float32 (the AMP section is ignored)")
        return None
    settings = dict(amp, level=level)
    if level == "O2" and not settings.get("use_fp16_test"):
        logger.info("AMP level O2 keeps the weights in float16, so evaluation runs in float16 "
                    "as well (AMP.use_fp16_test is set to True)")
        settings["use_fp16_test"] = True
    settings.setdefault("use_fp16_test", False)
    return settings


def scaler_arguments(settings):
    """``(GradScaler keyword arguments, log line)``: the config's scaling keys, Paddle's defaults
    for the rest, and which is which."""
    import paddle

    given = {arg: settings[key] for key, arg in SCALING_KEYS.items() if key in settings}
    params = inspect.signature(paddle.amp.GradScaler.__init__).parameters
    parts = []
    for arg in SCALING_KEYS.values():
        if arg in given:
            parts.append(f"{arg}={given[arg]} (config)")
        else:
            parts.append(f"{arg}={params[arg].default} (Paddle default)")
    return given, "[AMP] loss scaling: " + ", ".join(parts)


def _scaler_class():
    import paddle

    class GradScaler(paddle.amp.GradScaler):
        """Paddle's scaler with its loss-scale update made numpy-2 safe: Paddle 3.3.1 prints
        ``float(self._scale)`` of a shape-[1] tensor when it lowers the scale, which numpy >= 2.3
        refuses (TypeError), so the first inf/nan gradient stopped training."""

        def _update(self):
            if not self._enable:
                return
            if self._cache_found_inf:
                self._incr_count = 0
                self._decr_count += 1
                if self._decr_count == self._decr_every_n_nan_or_inf:
                    before = float(self._scale.numpy().reshape(-1)[0])
                    self._scale = self._scale * self._decr_ratio
                    self._decr_count = 0
                    logger.info(f"[AMP] inf/nan gradients: step skipped, loss scale "
                                f"{before:g} -> {before * self._decr_ratio:g}")
            else:
                self._decr_count = 0
                self._incr_count += 1
                if self._incr_count == self._incr_every_n_steps:
                    self._scale = self._scale * self._incr_ratio
                    self._incr_count = 0

    return GradScaler


def build_scaler(settings):
    """The loss scaler (a ``paddle.amp.GradScaler``) of a training run with AMP on."""
    kwargs, line = scaler_arguments(settings)
    if not kwargs:
        logger.warning("the AMP section names no loss-scaling key (scale_loss, "
                       "use_dynamic_loss_scaling, ...): using Paddle's GradScaler defaults, "
                       "dynamic loss scaling (PaddleClas would use a static scale of 1.0, under "
                       "which small float16 gradients underflow to zero)")
    logger.info(line)
    return _scaler_class()(**kwargs)


__all__ = ["AMP_KEYS", "amp_available", "amp_settings", "build_scaler", "scaler_arguments"]
