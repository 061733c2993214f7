"""``AdamWDL``: AdamW with layer-wise learning-rate decay, PaddleClas's fine-tuning optimizer.

PaddleClas schema::

    Optimizer:
      name: AdamWDL
      beta1: 0.9
      beta2: 0.999
      epsilon: 1.0e-8
      weight_decay: 0.05
      layerwise_decay: 0.65      # < 1: layers nearer the input learn slower
      filter_bias_and_bn: True   # no weight decay for 1-D parameters and biases
      lr: {name: Cosine, ...}

With ``L`` layers, a parameter of layer ``l`` (1..L) learns at ``lr * layerwise_decay **
(L + 1 - l)``; the input embedding (stem) at ``lr * layerwise_decay ** (L + 1)``; everything
after the last layer (the head) at ``lr``. PaddleClas numbers a ViT's ``blocks``; for
MobileNeXt a layer is one **stage** of its stage table (``STAGES``, 8 rows), in order, so the
stem conv gets ``decay**9``, stage 1 ``decay**8`` ... stage 8 ``decay**1`` and the classifier
``1``. The decoupled weight decay of each parameter uses its own (scaled) rate, as timm's and
BEiT's layer-decay parameter groups do.
"""

import re

import paddle

from ppcls.optimizer.optimizer import OPTIMIZERS, AdamW
from ppcls.utils.errors import ConfigError


def _bare(model):
    return model._layers if isinstance(model, paddle.DataParallel) else model


def mobilenext_layers(model):
    """``({parameter name: layer}, L)``: 0 the stem, 1..L the stages, L + 1 the head."""
    from ppcls.arch.backbone.mobilenext import STAGES, MobileNeXt

    if not isinstance(model, MobileNeXt):
        raise ConfigError(f"Optimizer.layerwise_decay: the layers of {type(model).__name__} are "
                          "not known here (MobileNeXt's layers are its stages)")
    stage_of = [0] + [i + 1 for i, (_, _, n, _) in enumerate(STAGES) for _ in range(n)]
    layers = {}
    for name, _ in model.named_parameters():
        found = re.match(r"features\.(\d+)\.", name)
        layers[name] = stage_of[int(found.group(1))] if found else len(STAGES) + 1
    return layers, len(STAGES)


def layer_ratios(model, decay):
    """``{parameter name: learning-rate multiplier}`` for ``layerwise_decay`` = ``decay``."""
    layers, n_layers = mobilenext_layers(model)
    return {name: decay ** (n_layers + 1 - layer) for name, layer in layers.items()}


@OPTIMIZERS.register
class AdamWDL(AdamW):
    """AdamW whose parameters learn at ``lr * layerwise_decay ** depth`` (see the module
    docstring). ``layerwise_decay`` null or 1 means no decay; ``filter_bias_and_bn`` keeps
    weight decay off 1-D parameters, ``*.bias`` and the model's ``no_weight_decay()`` names.
    As in PaddleClas, ``no_weight_decay_name`` and ``one_dim_param_no_weight_decay`` have no
    effect here (``filter_bias_and_bn`` decides); they are named in the no-effect warning."""

    no_effect = ("no_weight_decay_name", "one_dim_param_no_weight_decay")

    def __init__(self, learning_rate, beta1=0.9, beta2=0.999, epsilon=1e-8, weight_decay=None,
                 multi_precision=False, layerwise_decay=None, filter_bias_and_bn=True,
                 amsgrad=False, lazy_mode=False, *, model, grad_clip=None):
        model = _bare(model)
        named = [(n, p) for n, p in model.named_parameters() if not p.stop_gradient]
        skip = set(model.no_weight_decay()) if hasattr(model, "no_weight_decay") else set()
        decayed = {p.name for n, p in named
                   if not (filter_bias_and_bn and (len(p.shape) <= 1 or n.endswith(".bias")
                                                   or n in skip))}
        if layerwise_decay is not None and (isinstance(layerwise_decay, bool) or not isinstance(
                layerwise_decay, (int, float)) or not 0 < layerwise_decay <= 1):
            raise ConfigError(f"Optimizer.layerwise_decay must be in (0, 1], got {layerwise_decay!r}")
        if layerwise_decay is not None and layerwise_decay < 1:
            ratios = layer_ratios(model, float(layerwise_decay))
            groups = {}
            for n, p in named:
                groups.setdefault(ratios[n], []).append(p)
            parameters = [{"params": ps, "learning_rate": r} for r, ps in groups.items()]
        else:
            parameters = [p for _, p in named]
        self.layerwise_decay = layerwise_decay
        super().__init__(learning_rate, beta1=beta1, beta2=beta2, epsilon=epsilon,
                         weight_decay=weight_decay, multi_precision=multi_precision,
                         amsgrad=amsgrad, lazy_mode=lazy_mode, parameters=parameters,
                         apply_decay_param_fun=lambda name: name in decayed, grad_clip=grad_clip)


__all__ = ["AdamWDL", "layer_ratios", "mobilenext_layers"]
