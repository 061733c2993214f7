"""Data: the list-file ImageNet dataset, the PaddleClas transform ops, samplers and the loader.

Entry point: ``build_dataloader(config, mode, device="cpu", seed=None)``; see ``loader``.
The names below are imported on first use, so ``ppcls.data.preprocess`` (decoding and the
transform ops, used by deployment) and ``ppcls.data.digits`` do not pull in ``paddle.io``.
"""

import importlib

_LAZY = {
    "build_dataloader": "loader", "build_sampler": "loader", "ImageDataLoader": "loader",
    "ImageNetDataset": "dataset", "MultiScaleDataset": "dataset", "DATASETS": "dataset", "ImageFolder": "imagefolder",
    "DistributedBatchSampler": "sampler", "BatchSampler": "sampler", "RASampler": "sampler",
    "MultiScaleSampler": "sampler", "SAMPLERS": "sampler",
}

__all__ = sorted(_LAZY)


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
