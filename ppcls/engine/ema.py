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
        current = model.state_dict()
        for name, value in self.model.state_dict().items():
            src = current[name]
            if paddle.is_floating_point(value):
                value.set_value(value * self.decay + src.astype(value.dtype) * (1.0 - self.decay))
            else:
                value.set_value(src)


def build_ema(model, section):
    """The ``ModelEMA`` of ``model`` an ``EMA`` config section asks for."""
    if not isinstance(section, dict) or set(section) - EMA_KEYS:
        raise ConfigError(f"EMA expects {{decay: 0.9999}}, got {section!r}")
    return ModelEMA(model, section.get("decay", 0.9999))
