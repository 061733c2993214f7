"""Normalise on the device: uint8 batches from the workers, ``NormalizeImage`` on the batch.

When a dataset's ``transform_ops`` end with ``NormalizeImage`` and every op before it leaves a
``uint8`` image, the dataset stops before that op (``split_normalize``) and hands on ``uint8``
``[3, H, W]`` images: a quarter of float32's bytes through the worker queues, shared memory and
the host-to-device copy. The loader then applies the op to the whole batch where the batch
lives (the GPU when training on one), right before the model sees it (``DeviceNormalize``):
``(x * scale - mean) / std`` in float32, a zero fourth channel with ``channel_num: 4``, float16
with ``output_fp16``, the same numbers as the op in the worker within float rounding
(tests/test_reader.py). ``Global.device_normalize: False`` keeps it in the workers.
"""

import numpy as np
import paddle

from .preprocess.ops import NormalizeImage

# Ops known to hand on a uint8 image (the deferral is decided once per list, never per image).
UINT8_OPS = frozenset({
    "DecodeImage", "DecodeRandCrop", "ResizeImage", "CropImage", "RandCropImage", "RandCropImageV2",
    "CropImageAtRatio", "RandFlipImage", "ColorJitter", "ToCHWImage", "AutoAugment",
    "TimmAutoAugment", "RandAugment", "RandAugmentV2", "RandAugmentV3", "RandomRotation", "Pad",
})


def split_normalize(ops):
    """``(ops without a final NormalizeImage, that op)`` when it can run on the batch; else
    ``(ops, None)``."""
    if len(ops) < 2 or type(ops[-1]) is not NormalizeImage:
        return ops, None
    if not all(type(op).__name__ in UINT8_OPS for op in ops[:-1]):
        return ops, None
    if type(ops[0]).__name__ == "DecodeImage" and not ops[0].to_np:
        return ops, None
    return ops[:-1], ops[-1]


class DeviceNormalize:
    """``NormalizeImage`` for a ``uint8`` batch ``[N, 3, H, W]`` (a paddle tensor or numpy
    array) -> float32 (float16 with ``output_fp16``) ``[N, 3 or 4, H, W]`` on the batch's device."""

    def __init__(self, op):
        self.op = op
        self.scale = float(op.scale)
        self.mean = np.asarray(op.mean, np.float32).reshape(1, 3, 1, 1)
        self.std = np.asarray(op.std, np.float32).reshape(1, 3, 1, 1)
        self._consts = {}

    def _on(self, place):
        key = str(place)
        if key not in self._consts:
            self._consts[key] = (paddle.to_tensor(self.mean, place=place),
                                 paddle.to_tensor(self.std, place=place))
        return self._consts[key]

    def __call__(self, images):
        if isinstance(images, np.ndarray):
            images = paddle.to_tensor(images)
        mean, std = self._on(images.place)
        out = (images.astype("float32") * self.scale - mean) / std
        if self.op.channel_num == 4:
            out = paddle.concat([out, paddle.zeros_like(out[:, :1])], axis=1)
        return out.astype("float16") if self.op.output_fp16 else out

    def __repr__(self):
        return f"DeviceNormalize(scale={self.scale:g}, mean={self.mean.ravel().tolist()}, std={self.std.ravel().tolist()})"
