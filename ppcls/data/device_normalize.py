"""Normalise on the device: uint8 batches from the workers, ``NormalizeImage`` on the batch.

When a dataset's ``transform_ops`` end with ``NormalizeImage`` and every op before it leaves a
``uint8`` image, the dataset stops before that op (``split_normalize``) and hands on ``uint8``
``[3, H, W]`` images: a quarter of float32's bytes through the worker queues, shared memory and
the host-to-device copy. The loader then applies the op to the whole batch where the batch
lives (the GPU when training on one), right before the model sees it (``DeviceNormalize``):
``(x * scale - mean) / std`` in float32 (a lookup in the op's table of its own float32 results,
so exactly the numbers the op gives in a worker), a zero fourth channel with ``channel_num: 4``,
float16 with ``output_fp16``. On CPU the batch goes through the same table with numpy/OpenCV
(Paddle's CPU gather is ~20x slower). ``Global.device_normalize: False`` keeps the op in the
workers (float32 batches); uint8 batches are faster on CPU too (docs/benchmarks.md).
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
    array) -> float32 (float16 with ``output_fp16``) ``[N, 3 or 4, H, W]`` on the batch's device.

    One lookup in the op's own 256 x 3 table (``NormalizeImage.table``: its float32 arithmetic for
    every value), so the batch holds exactly the numbers the op gives in a worker."""

    def __init__(self, op):
        self.op = op
        self.table = op.table()  # [256, 3], float32 or float16
        self._consts = {}

    def _on(self, place):
        key = str(place)
        if key not in self._consts:
            # channel c at c * 256 + value; float16 tables gather as float32 (exact both ways)
            flat = np.ascontiguousarray(self.table.T.reshape(-1), dtype=np.float32)
            offsets = (np.arange(3, dtype=np.int32) * 256).reshape(1, 3, 1, 1)
            self._consts[key] = (paddle.to_tensor(flat, place=place), paddle.to_tensor(offsets, place=place))
        return self._consts[key]

    def __call__(self, images):
        if isinstance(images, np.ndarray):
            images = paddle.to_tensor(images)
        if images.place.is_cpu_place():  # Paddle's CPU gather is ~20x slower than a numpy lookup
            return paddle.to_tensor(self.lookup(images.numpy()), place=images.place)
        return self.gather(images)

    def gather(self, images):
        """The op on a uint8 paddle batch, as one gather on its device (the GPU path)."""
        flat, offsets = self._on(images.place)
        index = images.astype("int32") + offsets
        out = paddle.gather(flat, index.flatten()).reshape(images.shape)
        if self.table.dtype == np.float16:
            out = out.astype("float16")
        if self.op.channel_num == 4:
            out = paddle.concat([out, paddle.zeros_like(out[:, :1])], axis=1)
        return out

    def lookup(self, batch):
        """The op on a numpy uint8 batch [N, 3, H, W], per channel plane (OpenCV's LUT when
        installed)."""
        from .preprocess.ops import _import_cv2

        cv2 = _import_cv2()
        n, _, h, w = batch.shape
        out = np.empty((n, 4 if self.op.channel_num == 4 else 3, h, w), self.table.dtype)
        for c in range(3):
            plane = np.ascontiguousarray(batch[:, c]).reshape(n * h, w)
            if cv2 is not None and self.table.dtype == np.float32:
                out[:, c] = cv2.LUT(plane, self.table[:, c].reshape(1, 256)).reshape(n, h, w)
            else:
                out[:, c] = self.table[:, c][plane].reshape(n, h, w)
        if self.op.channel_num == 4:
            out[:, 3] = 0
        return out

    def __repr__(self):
        return (f"DeviceNormalize(scale={self.op.scale:g}, mean={self.op.mean.ravel().tolist()}, "
                f"std={self.op.std.ravel().tolist()})")
