"""The ``EMA`` section: an exponential moving average of the model's weights.

Upstream PaddleClas's meaning: ``EMA: {decay: 0.9999}``; the average is updated after every
optimizer step, evaluated beside the trained model, and saved as PaddleClas develop lays it out
(``ppcls.engine.checkpoint``: ``.pdparams`` holds the EMA weights, ``.pdema`` the trained ones).
"""

import copy

import paddle

from ppcls.utils.errors import ConfigError

EMA_KEYS = {"decay"}


class ModelEMA:
    """Exponential moving average of a model's weights (parameters and BN statistics)."""

    def __init__(self, model, decay):
        if not isinstance(decay, (int, float)) or isinstance(decay, bool) or not 0 < decay < 1:
            raise ConfigError(f"EMA.decay expects a number in (0, 1), got {decay!r}")
        self.decay = float(decay)
        self.model = copy.deepcopy(model)
        self.model.eval()
        for p in self.model.parameters():
            p.stop_gradient = True

    @paddle.no_grad()
    def update(self, model):
        """One step of the average: ``ema = decay * ema + (1 - decay) * model``.

        The model's weights are read with ``state_dict(use_hook=False)``: under AMP O2,
        ``paddle.amp.decorate(save_dtype="float32")`` hangs a state-dict hook on every sublayer,
        and each hook casts every entry collected so far (on MobileNeXt-1.0: 44,225 casts a
        call). Here only the float16 weights are cast, once each, to the average's float32,
        which is what the hooks produce for them too (float16 -> float32 is exact)."""
        current = model.state_dict(use_hook=False)
        for name, value in self.model.state_dict(use_hook=False).items():
            src = current[name]
            if paddle.is_floating_point(value):
                if src.dtype != value.dtype:
                    src = paddle.cast(src, value.dtype)
                value.set_value(value * self.decay + src * (1.0 - self.decay))
            else:
                value.set_value(src)


def build_ema(model, section):
    """The ``ModelEMA`` of ``model`` an ``EMA`` config section asks for."""
    if not isinstance(section, dict) or set(section) - EMA_KEYS:
        raise ConfigError(f"EMA expects {{decay: 0.9999}}, got {section!r}")
    return ModelEMA(model, section.get("decay", 0.9999))
