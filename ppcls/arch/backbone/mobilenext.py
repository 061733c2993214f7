"""MobileNeXt: "Rethinking Bottleneck Structure for Efficient Mobile Network Design".

Zhou, Hou, Chen, Feng, Yan, ECCV 2020 (arXiv 2007.02269). The network is read top to
bottom like the paper's figure: the channel rounding rule, the stage table, the sandglass
block in its four variants, the network, and the width constructors.

Parameter names follow the official PyTorch code (``features.<i>.conv.<j>.weight``,
``classifier.1.weight``), so official and PaddleClas checkpoints map onto it by name alone
(see ``ppcls.utils.weights``).
"""

import inspect
import math

import paddle
from paddle import nn

from ppcls.arch.registry import MODELS


def make_divisible(value, divisor=8, min_value=None):
    """Round ``value`` to the nearest multiple of ``divisor``, never dropping below 90% of it."""
    min_value = divisor if min_value is None else min_value
    rounded = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


# One row a stage: t (reduction ratio), c (output channels), n (blocks), s (first stride).
STAGES = [
    (2, 96, 1, 2),
    (6, 144, 1, 1),
    (6, 192, 3, 2),
    (6, 288, 3, 2),
    (6, 384, 4, 1),
    (6, 576, 4, 2),
    (6, 960, 3, 1),
    (6, 1280, 1, 1),
]
STEM_CHANNELS = 32
DROPOUT = 0.2


def conv_bn(in_ch, out_ch, kernel, stride=1, depthwise=False, relu6=True):
    """Conv (no bias) + BN [+ ReLU6] as a flat list, so layer indices match the official names."""
    conv = nn.Conv2D(
        in_ch,
        out_ch,
        kernel,
        stride=stride,
        padding=kernel // 2,
        groups=in_ch if depthwise else 1,
        bias_attr=False,
    )
    layers = [conv, nn.BatchNorm2D(out_ch)]
    if relu6:
        layers.append(nn.ReLU6())
    return layers


class SandglassBlock(nn.Layer):
    """The sandglass block: depthwise convs at the wide ends, a linear bottleneck in the middle.

    Which layers a block has depends on where it stands; the four variants are:

    - ``full``: dw3x3+BN+ReLU6, pw+BN (linear), pw+BN+ReLU6, dw3x3+BN (linear). Used by the
      first block (t == 2, stride on the second depthwise conv), by the single block of a
      stage, and by every block whose input and output widths are equal.
    - ``pointwise``: pw+BN, pw+BN+ReLU6, for a stride-1 block that changes width.
    - ``pointwise_downsample``: pw+BN, pw+BN+ReLU6, dw3x3 stride 2 + BN, for a stride-2
      block that changes width.

    The shortcut (the fourth variant is a ``full`` block with it) is used when the block keeps
    resolution and width and is not the single block of its stage. With
    ``identity_tensor_multiplier`` m < 1 it adds to the first ``int(C * m)`` channels only (the
    official ``C // identity_div`` for m = 1 / identity_div).
    """

    def __init__(self, in_ch, out_ch, stride, reduction, single_in_stage=False,
                 identity_tensor_multiplier=1.0):
        super().__init__()
        hidden = in_ch // reduction
        if hidden < out_ch / 6.0:
            hidden = make_divisible(math.ceil(out_ch / 6.0), 16)

        if reduction == 2 or single_in_stage or in_ch == out_ch:
            self.variant = "full"
        elif stride == 1:
            self.variant = "pointwise"
        else:
            self.variant = "pointwise_downsample"

        layers = []
        if self.variant == "full":
            layers += conv_bn(in_ch, in_ch, 3, depthwise=True)
        layers += conv_bn(in_ch, hidden, 1, relu6=False)
        layers += conv_bn(hidden, out_ch, 1)
        if self.variant != "pointwise":
            layers += conv_bn(out_ch, out_ch, 3, stride=stride, depthwise=True, relu6=False)
        self.conv = nn.Sequential(*layers)

        self.use_shortcut = (stride == 1 and in_ch == out_ch and reduction != 2
                             and not single_in_stage)
        # Floor, as the official C // div; the epsilon keeps e.g. 90 * 0.7 from flooring to 62.
        self.identity_channels = int(in_ch * identity_tensor_multiplier + 1e-6)

    drop_path = 0.0  # stochastic depth: the chance, in training, of skipping the residual branch

    def forward(self, x):
        out = self.conv(x)
        if not self.use_shortcut:
            return out
        if self.training and self.drop_path > 0:  # per sample, rescaled to keep the mean
            keep = 1.0 - self.drop_path
            mask = paddle.floor(keep + paddle.rand([out.shape[0], 1, 1, 1], dtype=out.dtype))
            out = out * mask / keep
        k = self.identity_channels
        if k >= out.shape[1]:
            return out + x
        # Add to the first k channels only, without in-place slice assignment (exportable).
        return paddle.concat([out[:, :k] + x[:, :k], out[:, k:]], axis=1)


class MobileNeXt(nn.Layer):
    # The layer whose output size is class_num: weight import (ppcls.utils.weights) reads this
    # to skip a head of another class_num and to read a checkpoint's class count.
    classifier_layer = "classifier.1"

    def __init__(self, scale=1.0, class_num=1000, dropout=DROPOUT, identity_tensor_multiplier=1.0,
                 drop_path_rate=0.0, drop_rate=None):
        """``drop_path_rate``: stochastic depth (as PaddleClas's DeiT/ViT key), rising linearly
        over the blocks from 0 to this rate, on the residual branch of the blocks with a
        shortcut; ``drop_rate``: as ``dropout`` (the classifier's), PaddleClas's other name."""
        super().__init__()
        if drop_rate is not None:
            dropout = drop_rate
        if isinstance(drop_path_rate, bool) or not isinstance(drop_path_rate, (int, float)) \
                or not 0 <= drop_path_rate < 1:
            raise ValueError(f"drop_path_rate must be a number in [0, 1), got {drop_path_rate!r}")
        if not 0.0 < identity_tensor_multiplier <= 1.0:
            raise ValueError("identity_tensor_multiplier must be in (0, 1], got "
                             f"{identity_tensor_multiplier}")
        self.scale = scale
        in_ch = make_divisible(STEM_CHANNELS * scale)
        features = [nn.Sequential(*conv_bn(3, in_ch, 3, stride=2))]
        for i, (t, c, n, s) in enumerate(STAGES):
            last_stage = i == len(STAGES) - 1
            out_ch = c if (last_stage and scale < 1.0) else make_divisible(c * scale)
            for j in range(n):
                features.append(SandglassBlock(
                    in_ch, out_ch, s if j == 0 else 1, t, single_in_stage=(n == 1),
                    identity_tensor_multiplier=identity_tensor_multiplier))
                in_ch = out_ch
        self.features = nn.Sequential(*features)
        blocks = features[1:]
        for i, block in enumerate(blocks):
            block.drop_path = drop_path_rate * i / max(1, len(blocks) - 1)
        self.last_channels = in_ch
        self.avgpool = nn.AdaptiveAvgPool2D(1)
        # A list of rates, one per stage of progressive training (Global.train_mode), starts at
        # the first; ppcls.engine.progressive sets the stage's rate.
        if isinstance(dropout, (list, tuple)) and not (dropout and all(
                isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v < 1 for v in dropout)):
            raise ValueError(f"dropout expects a rate in [0, 1) or a list of them (one per stage), "
                             f"got {dropout!r}")
        self.dropout_rate = list(dropout) if isinstance(dropout, (list, tuple)) else dropout
        first = self.dropout_rate[0] if isinstance(self.dropout_rate, list) else dropout
        self.classifier = nn.Sequential(nn.Dropout(first), nn.Linear(in_ch, class_num))
        self._init_weights()

    def _init_weights(self):
        for layer in self.sublayers():
            if isinstance(layer, nn.Conv2D):
                k = layer._kernel_size[0] * layer._kernel_size[1] * layer._out_channels
                nn.initializer.Normal(0.0, math.sqrt(2.0 / k))(layer.weight)
            elif isinstance(layer, nn.BatchNorm2D):
                nn.initializer.Constant(1.0)(layer.weight)
                nn.initializer.Constant(0.0)(layer.bias)
            elif isinstance(layer, nn.Linear):
                nn.initializer.Normal(0.0, 0.01)(layer.weight)
                nn.initializer.Constant(0.0)(layer.bias)

    def forward(self, x):
        x = self.features(x)
        x = paddle.flatten(self.avgpool(x), 1)
        return self.classifier(x)


WIDTHS = {"x0_35": 0.35, "x0_5": 0.5, "x0_75": 0.75, "x1_0": 1.0, "x1_4": 1.4}
ALIASES = {"x0_35": "35", "x0_5": "50", "x0_75": "75", "x1_0": "100", "x1_4": "140"}
# ``Arch.pretrained: True``: the ImageNet weights PaddleClas publishes (its model zoo lists
# only width 1.0 for MobileNeXt), downloaded once into ~/.paddleclas/weights/.
PRETRAINED_URLS = {
    "x1_0": "https://paddle-imagenet-models-name.bj.bcebos.com/dygraph/"
            "MobileNeXt_x1_0_pretrained.pdparams",
}


def _load_pretrained(model, suffix, pretrained):
    """``Arch.pretrained``: ``True`` (PaddleClas's published file) or a path. A classifier of
    another ``class_num`` is left as initialised, with a warning (fine-tuning)."""
    from ppcls.utils.weights import load_pretrained

    def load(path):
        load_pretrained(model, path, skip_mismatched_head=True)

    if pretrained is not True:
        return load(pretrained)
    if suffix not in PRETRAINED_URLS:
        from ppcls.utils.errors import CheckpointError

        raise CheckpointError(
            f"Arch.pretrained=True: PaddleClas publishes no pretrained weights for "
            f"MobileNeXt_{suffix} (only for {', '.join('MobileNeXt_' + s for s in PRETRAINED_URLS)}); "
            "pass the path of a .pdparams or .safetensors file instead "
            f"(Arch.pretrained=./MobileNeXt_{suffix}_pretrained.pdparams)")
    from ppcls.utils.download import fetch_pretrained

    fetch_pretrained(PRETRAINED_URLS[suffix], load)


def _build(suffix, pretrained=False, class_num=1000, **kwargs):
    model = MobileNeXt(scale=WIDTHS[suffix], class_num=class_num, **kwargs)
    if pretrained:
        _load_pretrained(model, suffix, pretrained)
    return model


def _register_width(suffix, scale):
    def constructor(pretrained=False, class_num=1000, **kwargs):
        return _build(suffix, pretrained=pretrained, class_num=class_num, **kwargs)

    constructor.__doc__ = f"MobileNeXt at width {scale} (PaddleClas name MobileNeXt_{suffix})."
    # the keys an Arch section may give (checked by ppcls.utils.registry.build): MobileNeXt's
    constructor.__signature__ = inspect.Signature(
        [inspect.Parameter("pretrained", inspect.Parameter.KEYWORD_ONLY, default=False)]
        + [p.replace(kind=p.KEYWORD_ONLY) for n, p in inspect.signature(MobileNeXt).parameters.items()
           if n != "scale"])
    for name in (f"MobileNeXt_{suffix}", f"MobileNeXt_{ALIASES[suffix]}"):
        MODELS.register(constructor, name=name)
    return constructor


MobileNeXt_x0_35 = _register_width("x0_35", 0.35)
MobileNeXt_x0_5 = _register_width("x0_5", 0.5)
MobileNeXt_x0_75 = _register_width("x0_75", 0.75)
MobileNeXt_x1_0 = _register_width("x1_0", 1.0)
MobileNeXt_x1_4 = _register_width("x1_4", 1.4)
MobileNeXt_35, MobileNeXt_50, MobileNeXt_75 = MobileNeXt_x0_35, MobileNeXt_x0_5, MobileNeXt_x0_75
MobileNeXt_100, MobileNeXt_140 = MobileNeXt_x1_0, MobileNeXt_x1_4
