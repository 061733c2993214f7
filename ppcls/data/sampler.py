"""Batch samplers by PaddleClas name.

``DistributedBatchSampler`` is ``paddle.io.DistributedBatchSampler`` (each rank its own shard,
padded to equal length; shuffle order seeded by the epoch; rank and world size from the
``paddle.distributed.launch`` environment unless given) whose batches are lists of
``(index, epoch)`` keys instead of bare indices, so the dataset knows the epoch of every sample
it makes, in whichever worker process. Call ``set_epoch(epoch)`` before each epoch (a resumed
run then sees the same order and augmentation as an uninterrupted one); without it the epoch
counts up by one per pass.
"""

import paddle

from ppcls.utils.registry import Registry

SAMPLERS = Registry("sampler", listing="known")


@SAMPLERS.register
class DistributedBatchSampler(paddle.io.DistributedBatchSampler):
    def __iter__(self):
        epoch = self.epoch
        for batch in super().__iter__():
            self.epoch = epoch + 1
            yield [(int(i), epoch) for i in batch]
        self.epoch = epoch + 1


def batch_indices(batch_keys):
    """The sample indices of one batch of keys."""
    return [key[0] if isinstance(key, tuple) else int(key) for key in batch_keys]
