"""Drop-in layers that run the fast CPU operators and otherwise behave as their parents.

``FastDepthwiseConv3x3`` is an ``nn.Conv2D`` and ``FastBatchNorm`` an ``nn.BatchNorm2D``:
``convert`` only changes the class of existing layers, so parameters, buffers, names,
``state_dict`` keys and optimizer state stay exactly as they were. Each forward takes the
fast operator only in dynamic mode, on a CPU float32 tensor; anything else (GPU, AMP
dtypes, ``paddle.jit.to_static`` tracing and export) runs the parent's Paddle kernels.
"""

import paddle
from paddle import nn
import paddle.nn.functional as F

from ppcls.ops.fast_cpu import runtime


def _fast(x):
    return (paddle.in_dynamic_mode() and x.dtype in (paddle.float32, paddle.float64) and x.ndim == 4
            and x.place.is_cpu_place())


class FastDepthwiseConv3x3(nn.Conv2D):
    """3x3 depthwise convolution, padding 1, stride 1 or 2, NCHW, no bias."""

    @staticmethod
    def fits(layer):
        return (type(layer) is nn.Conv2D and layer._data_format == "NCHW"
                and layer._groups == layer._in_channels == layer._out_channels
                and list(layer._kernel_size) == [3, 3] and list(layer._dilation) == [1, 1]
                and layer._padding_mode == "zeros" and list(layer._updated_padding) == [1, 1]
                and layer._padding_algorithm == "EXPLICIT"
                and layer._stride[0] == layer._stride[1] and layer._stride[0] in (1, 2)
                and layer.bias is None)

    def forward(self, x):
        if _fast(x):
            return runtime.run_op("fast_dwconv3x3", x, self.weight, self._stride[0])[0]
        return super().forward(x)


class FastPointwiseConv(nn.Conv2D):
    """1x1 convolution, stride 1, no padding, no groups, NCHW, no bias."""

    @staticmethod
    def fits(layer):
        return (type(layer) is nn.Conv2D and layer._data_format == "NCHW" and layer._groups == 1
                and list(layer._kernel_size) == [1, 1] and list(layer._stride) == [1, 1]
                and list(layer._dilation) == [1, 1] and list(layer._updated_padding) == [0, 0]
                and layer._padding_algorithm == "EXPLICIT" and layer.bias is None)

    def forward(self, x):
        if _fast(x):
            return runtime.run_op("fast_conv1x1", x, self.weight)[0]
        return super().forward(x)


class FastBatchNorm(nn.BatchNorm2D):
    """Training-mode batch norm on batch statistics, with the following ReLU6 fused when
    ``fused_relu6`` is set (the ``ReLU6`` layer after it is then a ``FusedReLU6``)."""

    fused_relu6 = False

    @staticmethod
    def fits(layer):
        return type(layer) is nn.BatchNorm2D and layer._data_format == "NCHW"

    def forward(self, x):
        if self.training and not self._use_global_stats and _fast(x):
            y, _, _, mean, var = runtime.run_op(
                "fast_bn_act_train", x, self.weight, self.bias, self._mean, self._variance,
                float(self._momentum), float(self._epsilon), bool(self.fused_relu6))
            with paddle.no_grad():
                paddle.assign(mean, output=self._mean)
                paddle.assign(var, output=self._variance)
            return y
        y = super().forward(x)
        return F.relu6(y) if self.fused_relu6 else y


class FusedReLU6(nn.ReLU6):
    """A ``ReLU6`` whose work the ``FastBatchNorm`` right before it already did."""

    def forward(self, x):
        return x


def convert(model):
    """Switch every fitting layer of ``model`` to its fast class; return how many."""
    count = 0
    for layer in [model] + list(model.sublayers()):
        children = list(layer._sub_layers.values())
        for i, child in enumerate(children):
            if FastDepthwiseConv3x3.fits(child):
                child.__class__ = FastDepthwiseConv3x3
                count += 1
            elif FastPointwiseConv.fits(child):
                child.__class__ = FastPointwiseConv
                count += 1
            elif FastBatchNorm.fits(child):
                child.__class__ = FastBatchNorm
                child.fused_relu6 = False
                nxt = children[i + 1] if i + 1 < len(children) else None
                # In a Sequential the next child is the next call; fuse a plain ReLU6 there.
                if isinstance(layer, nn.Sequential) and type(nxt) is nn.ReLU6:
                    child.fused_relu6 = True
                    nxt.__class__ = FusedReLU6
                count += 1
    return count


def revert(model):
    """Undo ``convert``: every fast layer back to its Paddle class; return how many."""
    count = 0
    for layer in model.sublayers():
        if type(layer) in (FastDepthwiseConv3x3, FastPointwiseConv):
            layer.__class__ = nn.Conv2D
        elif type(layer) is FastBatchNorm:
            layer.__class__ = nn.BatchNorm2D
            layer.__dict__.pop("fused_relu6", None)
        elif type(layer) is FusedReLU6:
            layer.__class__ = nn.ReLU6
        else:
            continue
        count += 1
    return count
