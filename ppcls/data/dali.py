"""``Global.use_dali: True``: the training images through an NVIDIA DALI pipeline, as
PaddleClas's ``use_dali`` does, when ``nvidia-dali`` (e.g. ``nvidia-dali-cuda120``) is installed.

The recipe's ``DataLoader.Train.dataset.transform_ops`` become one DALI graph:

| op | DALI |
| --- | --- |
| ``DecodeImage`` + ``RandCropImage`` | ``decoders.image_random_crop`` (the crop's ``scale`` and ``ratio``; on a GPU the ``mixed`` nvJPEG decoder, which decodes only the crop) then ``resize`` to ``size`` with the op's interpolation (``random``: bilinear or bicubic per image), antialiased for ``backend: pil`` |
| ``RandFlipImage`` | a coin flip per image, mirrored in ``crop_mirror_normalize`` (``flip_code`` 0 / -1: ``flip``) |
| ``ColorJitter`` | ``brightness_contrast`` (contrast about the image's mean grey, as PIL, on the CPU; about mid-grey on a GPU, see ``_jitter``) and ``saturation`` / ``hue``, factors drawn from the op's ranges, skipped per image with ``1 - prob``; in that fixed order, not a random one |
| ``NormalizeImage`` | ``crop_mirror_normalize`` to float32 (float16 with ``output_fp16``) [C, H, W], ``channel_num: 4`` padding a zero channel |
| ``ToCHWImage`` | (the output is [C, H, W] already) |

The batches come out normalised on the pipeline's device: a GPU's (``device_id`` of the card)
or, with ``Global.device: cpu``, DALI's CPU-only mode (``device_id=None``), which is what the
tests run. Each rank reads its own shard of the list (``shard_id`` / ``num_shards``), shuffled
with ``Global.seed`` + rank when the sampler shuffles. The label of a batch comes from the list
file through the sample's index, so ``indices`` are the list's line indices as with the built-in
loader.

A list DALI cannot run (another op, ``batch_transform_ops`` such as Mixup, a sampler other than
PaddleClas's batch samplers, no ``NormalizeImage``) and a machine without DALI get one warning
naming the reason and the built-in loader. ``Global.use_dali`` applies to ``DataLoader.Train``
only: evaluation keeps the built-in loader (PaddleClas's eval pipeline is a resize and a centre
crop, which the built-in reader does at full speed).
"""

import numpy as np

from ppcls.utils import logger

SAMPLERS = ("DistributedBatchSampler", "BatchSampler")
_STEPS = ("RandFlipImage", "ColorJitter", "NormalizeImage", "ToCHWImage")


def available():
    try:
        import nvidia.dali  # noqa: F401
    except ImportError:
        return False
    return True


def unsupported(ops, section):
    """Why DALI cannot run this ``DataLoader.Train`` section (its built ``ops``), or None."""
    names = [type(op).__name__ for op in ops]
    dataset = section.get("dataset") or {}
    if dataset.get("batch_transform_ops"):
        return "batch_transform_ops (Mixup, Cutmix) have no DALI counterpart here"
    sampler = (section.get("sampler") or {}).get("name")
    if sampler not in SAMPLERS:
        return f"the sampler {sampler} has no DALI counterpart here (only {', '.join(SAMPLERS)})"
    if names[:2] != ["DecodeImage", "RandCropImage"]:
        return "transform_ops must start with DecodeImage then RandCropImage for DALI"
    for name in names[2:]:
        if name not in _STEPS:
            return f"the op {name} has no DALI counterpart here"
    if names.count("NormalizeImage") != 1 or len(set(names)) != len(names):
        return "DALI needs exactly one NormalizeImage and each op at most once"
    return None


def build_pipeline(files, ops, batch_size, shuffle, seed, shard_id=0, num_shards=1, device_id=None,
                   num_threads=4):
    """The DALI pipeline for the built ``ops`` (see ``unsupported``) over the image ``files``:
    outputs (images [N, C, H, W] normalised, the files' indices [N, 1])."""
    from nvidia.dali import fn, pipeline_def, types

    decode, crop = ops[0], ops[1]
    later = {type(op).__name__: op for op in ops[2:]}
    gpu = device_id is not None

    @pipeline_def(batch_size=batch_size, num_threads=num_threads, device_id=device_id, seed=seed)
    def pipeline():
        data, index = fn.readers.file(files=list(files), labels=list(range(len(files))), random_shuffle=shuffle,
                                      shard_id=shard_id, num_shards=num_shards, stick_to_shard=True,
                                      name="Reader", seed=seed)
        images = fn.decoders.image_random_crop(
            data, device="mixed" if gpu else "cpu", output_type=types.RGB if decode.to_rgb else types.BGR,
            random_area=list(crop.scale), random_aspect_ratio=list(crop.ratio), num_attempts=10)
        images = fn.resize(images, resize_x=crop.size[0], resize_y=crop.size[1],
                           interp_type=_interpolation(crop.resizer.interpolation),
                           antialias=crop.resizer.backend == "pil")
        mirror = 0
        flip = later.get("RandFlipImage")
        if flip is not None:
            coin = fn.random.coin_flip(probability=0.5)
            if flip.flip_code == 1:
                mirror = coin  # horizontal: in crop_mirror_normalize below
            else:
                images = fn.flip(images, horizontal=coin if flip.flip_code == -1 else 0, vertical=coin)
        if "ColorJitter" in later:
            images = _jitter(images, later["ColorJitter"], decode.to_rgb, gpu)
        norm = later["NormalizeImage"]
        images = fn.crop_mirror_normalize(
            images, dtype=types.FLOAT16 if norm.output_fp16 else types.FLOAT, output_layout="CHW",
            mean=[float(m) / norm.scale for m in norm.mean.ravel()],
            std=[float(s) / norm.scale for s in norm.std.ravel()], mirror=mirror,
            pad_output=norm.channel_num == 4)
        return images, index

    return pipeline()


def _interpolation(method):
    """DALI's interpolation for the op's (``random``: bilinear or bicubic, drawn per image)."""
    from nvidia.dali import fn, types

    fixed = {"nearest": types.INTERP_NN, "bilinear": types.INTERP_LINEAR, "bicubic": types.INTERP_CUBIC,
             "area": types.INTERP_LINEAR, "lanczos": types.INTERP_LANCZOS3, "box": types.INTERP_LINEAR,
             "hamming": types.INTERP_LANCZOS3}
    if method != "random":
        return fixed[method]
    choice = fn.random.choice([int(types.INTERP_LINEAR), int(types.INTERP_CUBIC)])
    return fn.cast(choice, dtype=types.INTERP_TYPE)


def _jitter(images, op, rgb, gpu):
    """ColorJitter: the op's factor ranges, each image jittered with probability ``prob``. The
    contrast is about the image's mean grey (PIL's) on the CPU; on a GPU about mid-grey, DALI's
    default (a per-image mean computed on the GPU cannot feed an operator's argument)."""
    from nvidia.dali import fn, types

    keep = fn.random.coin_flip(probability=op.prob) if op.prob < 1 else None

    def factor(low, high, neutral):
        value = fn.random.uniform(range=[low, high])
        return value if keep is None else keep * value + (1 - keep) * neutral

    f = op.factors
    if f["brightness"] or f["contrast"]:
        center = {}
        if f["contrast"] and not gpu:
            grey = fn.color_space_conversion(images, image_type=types.RGB if rgb else types.BGR,
                                             output_type=types.GRAY)
            center = {"contrast_center": fn.reductions.mean(grey)}
        images = fn.brightness_contrast(
            images,
            brightness=factor(max(0.0, 1 - f["brightness"]), 1 + f["brightness"], 1.0) if f["brightness"] else 1.0,
            contrast=factor(max(0.0, 1 - f["contrast"]), 1 + f["contrast"], 1.0) if f["contrast"] else 1.0,
            **center)
    if f["saturation"]:
        images = fn.saturation(images, saturation=factor(max(0.0, 1 - f["saturation"]), 1 + f["saturation"], 1.0))
    if f["hue"]:
        images = fn.hue(images, hue=factor(-f["hue"], f["hue"], 0.0) * 360.0)
    return images


class DaliLoader:
    """Batches ``(images, labels, indices)`` from a DALI pipeline, like ``ImageDataLoader``'s:
    images on the pipeline's device, labels int64 [N] from the list file, indices numpy."""

    batch_ops = ()

    def __init__(self, pipeline, labels, batches, device_id):
        self.pipeline, self.labels, self.batches, self.device_id = pipeline, np.asarray(labels, np.int64), batches, device_id
        self.pipeline.build()

    def __len__(self):
        return self.batches

    def __iter__(self):
        import paddle

        if self.device_id is not None:  # on a GPU: DALI's own iterator, no copy through the host
            yield from self._gpu_batches()
            return
        for _ in range(self.batches):
            images, index = self.pipeline.run()
            indices = np.array(index.as_tensor()).reshape(-1).astype(np.int64)
            yield paddle.to_tensor(np.array(images.as_tensor())), paddle.to_tensor(self.labels[indices]), indices

    def _gpu_batches(self):  # pragma: no cover - needs a GPU
        import paddle
        from nvidia.dali.plugin.paddle import DALIGenericIterator

        if getattr(self, "_iterator", None) is None:
            self._iterator = DALIGenericIterator([self.pipeline], ["image", "index"], size=-1)
        for _, batch in zip(range(self.batches), self._iterator):
            indices = np.array(batch[0]["index"]).reshape(-1).astype(np.int64)
            images = batch[0]["image"]
            yield images, paddle.to_tensor(self.labels[indices], place=images.place), indices


def build_loader(dataset, section, seed, rank, nranks, device):
    """The DALI loader for the built ``dataset`` and its config ``section``, or None after one
    warning saying why not."""
    if not available():
        logger.warning("Global.use_dali: True, but DALI data loading is not available here (it needs "
                       "nvidia-dali installed): using the built-in loader")
        return None
    reason = unsupported(dataset.ops, section)
    if reason is not None:
        logger.warning(f"Global.use_dali: True, but {reason}: using the built-in loader")
        return None
    sampler = section.get("sampler") or {}
    batch_size = int(sampler.get("batch_size", 1))
    shard = -(-len(dataset) // nranks) if not sampler.get("drop_last", False) else len(dataset) // nranks
    batches = shard // batch_size if sampler.get("drop_last", False) else -(-shard // batch_size)
    device_id = None
    if str(device).startswith("gpu"):
        device_id = int(str(device).split(":")[1]) if ":" in str(device) else 0
    workers = int((section.get("loader") or {}).get("num_workers", 4) or 1)
    pipeline = build_pipeline(dataset.images, dataset.ops, batch_size, bool(sampler.get("shuffle", False)),
                              seed + rank, rank, nranks, device_id, max(1, workers))
    logger.info(f"Global.use_dali: the training images through a DALI pipeline on "
                f"{'GPU ' + str(device_id) if device_id is not None else 'the CPU'}, {batches} batches of "
                f"{batch_size} per card")
    return DaliLoader(pipeline, dataset.labels, max(1, batches), device_id)
