"""MobileNeXt in PyTorch, for the speed comparison only (not part of the ppcls package).

The same network as ``ppcls/arch/backbone/mobilenext.py`` (full identity shortcut), with the
official PyTorch parameter names, so the official state_dict in ../shared/fixtures loads
into it with ``strict=True``: ``python benchmark/torch_mobilenext.py`` checks that it
reproduces the fixture's logits, i.e. that the PyTorch side of the benchmark is the
official network and not an approximation of it.
"""

import math
import os
import sys

import torch
from torch import nn

# The stage table and rounding rule of ppcls/arch/backbone/mobilenext.py, restated so this
# process does not import Paddle (whose OpenMP runtime would share the cores with PyTorch's);
# the fixture check below is what keeps the two in step.
STAGES = [(2, 96, 1, 2), (6, 144, 1, 1), (6, 192, 3, 2), (6, 288, 3, 2), (6, 384, 4, 1),
          (6, 576, 4, 2), (6, 960, 3, 1), (6, 1280, 1, 1)]
STEM_CHANNELS = 32


def make_divisible(value, divisor=8):
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


def conv_bn(in_ch, out_ch, kernel, stride=1, depthwise=False, relu6=True):
    layers = [nn.Conv2d(in_ch, out_ch, kernel, stride, kernel // 2,
                        groups=in_ch if depthwise else 1, bias=False), nn.BatchNorm2d(out_ch)]
    if relu6:
        layers.append(nn.ReLU6(inplace=True))
    return layers


class SandglassBlock(nn.Module):
    def __init__(self, in_ch, out_ch, stride, reduction, single_in_stage=False):
        super().__init__()
        hidden = in_ch // reduction
        if hidden < out_ch / 6.0:
            hidden = make_divisible(math.ceil(out_ch / 6.0), 16)
        full = reduction == 2 or single_in_stage or in_ch == out_ch
        layers = conv_bn(in_ch, in_ch, 3, depthwise=True) if full else []
        layers += conv_bn(in_ch, hidden, 1, relu6=False) + conv_bn(hidden, out_ch, 1)
        if full or stride != 1:
            layers += conv_bn(out_ch, out_ch, 3, stride, depthwise=True, relu6=False)
        self.conv = nn.Sequential(*layers)
        self.use_shortcut = stride == 1 and in_ch == out_ch and reduction != 2 and not single_in_stage

    def forward(self, x):
        out = self.conv(x)
        return out + x if self.use_shortcut else out


class MobileNeXt(nn.Module):
    def __init__(self, scale=1.0, num_classes=1000, dropout=0.2):
        super().__init__()
        in_ch = make_divisible(STEM_CHANNELS * scale)
        features = [nn.Sequential(*conv_bn(3, in_ch, 3, stride=2))]
        for i, (t, c, n, s) in enumerate(STAGES):
            out_ch = c if (i == len(STAGES) - 1 and scale < 1.0) else make_divisible(c * scale)
            for j in range(n):
                features.append(SandglassBlock(in_ch, out_ch, s if j == 0 else 1, t, n == 1))
                in_ch = out_ch
        self.features = nn.Sequential(*features)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(in_ch, num_classes))

    def forward(self, x):
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


def check_against_fixture(path):
    """Max |logits - official logits| after loading the fixture's official state_dict."""
    import numpy as np

    npz = np.load(path)
    prefix = "state_dict/"
    state = {k[len(prefix):]: torch.from_numpy(npz[k]) for k in npz.files if k.startswith(prefix)}
    model = MobileNeXt()
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]
    if missing or unexpected:
        raise SystemExit(f"state_dict mismatch: missing {missing[:3]}, unexpected {unexpected[:3]}")
    model.eval()
    with torch.no_grad():
        logits = model(torch.from_numpy(npz["input"])).numpy()
    return float(np.abs(logits - npz["logits"]).max())


if __name__ == "__main__":
    here = os.path.dirname(os.path.abspath(__file__))
    fixture = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
        here, "..", "..", "shared", "fixtures", "mobilenext_official_w1_0.npz")
    diff = check_against_fixture(fixture)
    print(f"PyTorch MobileNeXt vs official logits: max abs diff {diff:.2e}")
    sys.exit(0 if diff < 1e-4 else 1)
