"""Model size: parameters and multiply-adds, counted the way the MobileNeXt paper counts them.

Multiply-adds (MAdds) are the products of the convolutions and fully connected layers:
``out_h * out_w * k_h * k_w * in / groups * out`` for a ``Conv2D`` and ``in * out`` for a
``Linear``, for one image. BatchNorm, activations, pooling and the shortcut additions are
not counted (the convention behind the paper's 311M for MobileNeXt at 224x224).
"""

import numpy as np
import paddle
from paddle import nn

from ppcls.utils.global_config import DEFAULT_IMAGE_SHAPE


def count_parameters(model):
    """``(trainable, total)``: trainable parameters, and all of ``state_dict`` (BN running stats too)."""
    trainable = sum(int(np.prod(p.shape)) for p in model.parameters() if not p.stop_gradient)
    total = sum(int(np.prod(v.shape)) for v in model.state_dict().values())
    return trainable, total


def _conv_madds(layer, output):
    kh, kw = layer._kernel_size
    in_channels = layer._in_channels
    out_h, out_w = output.shape[2], output.shape[3]
    return out_h * out_w * kh * kw * (in_channels // layer._groups) * layer._out_channels


def _linear_madds(layer, output):
    in_features, out_features = layer.weight.shape
    rows = int(np.prod(output.shape[1:-1])) if len(output.shape) > 2 else 1
    return rows * in_features * out_features


def count_madds(model, image_shape=DEFAULT_IMAGE_SHAPE):
    """Multiply-adds of one forward pass of one ``image_shape`` (C, H, W) image.

    Returns ``(total, per_layer)`` with ``per_layer`` a list of ``(layer name, type, MAdds)``.
    """
    per_layer, handles = [], []
    names = {id(layer): name for name, layer in model.named_sublayers()}

    def hook(layer, inputs, output):
        if isinstance(layer, nn.Conv2D):
            madds = _conv_madds(layer, output)
        else:
            madds = _linear_madds(layer, output)
        per_layer.append((names.get(id(layer), type(layer).__name__), type(layer).__name__,
                          int(madds)))

    for layer in model.sublayers():
        if isinstance(layer, (nn.Conv2D, nn.Linear)):
            handles.append(layer.register_forward_post_hook(hook))
    was_training = model.training
    model.eval()
    try:
        with paddle.no_grad():
            model(paddle.zeros([1] + [int(d) for d in image_shape], dtype="float32"))
    finally:
        for handle in handles:
            handle.remove()
        if was_training:
            model.train()
    return sum(m for _, _, m in per_layer), per_layer


def image_shape_from_config(cfg):
    """The input size a config describes: ``Global.image_shape``, else the crop size of the
    Eval (then Train) transforms, else 3x224x224."""
    shape = (cfg.get("Global") or {}).get("image_shape")
    if shape:
        return [int(d) for d in shape]
    loaders = cfg.get("DataLoader") or {}
    for mode, op_names in (("Eval", ("CropImage", "ResizeImage")),
                           ("Train", ("RandCropImage", "CropImage", "ResizeImage"))):
        dataset = ((loaders.get(mode) or {}).get("dataset") or {})
        ops = dataset.get("transform_ops") or []
        for op_name in op_names:
            for op in ops:
                if isinstance(op, dict) and isinstance(op.get(op_name), dict):
                    size = op[op_name].get("size")
                    if size is None:
                        continue
                    if isinstance(size, (list, tuple)):  # PaddleClas lists sizes as [w, h]
                        return [3, int(size[1]), int(size[0])]
                    return [3, int(size), int(size)]
    return list(DEFAULT_IMAGE_SHAPE)


def summarize(model, image_shape=DEFAULT_IMAGE_SHAPE):
    """A dict of the numbers ``tools/model_info.py`` prints."""
    trainable, total = count_parameters(model)
    madds, per_layer = count_madds(model, image_shape)
    return {"image_shape": list(image_shape), "trainable_params": trainable,
            "total_params": total, "madds": madds, "per_layer": per_layer}


def format_summary(name, summary, class_num=None):
    """The summary as the lines ``tools/model_info.py`` prints."""
    c, h, w = summary["image_shape"]
    head = f"{name}" + (f" (class_num {class_num})" if class_num is not None else "")
    return [
        f"Model: {head}",
        f"Input: {c}x{h}x{w}",
        f"Params (trainable): {summary['trainable_params']:,} ({summary['trainable_params'] / 1e6:.2f}M)",
        f"Params (total, with BN running statistics): {summary['total_params']:,} "
        f"({summary['total_params'] / 1e6:.2f}M)",
        f"MAdds: {summary['madds']:,} ({summary['madds'] / 1e6:.1f}M)",
    ]
