"""Batch samplers by PaddleClas name.

``DistributedBatchSampler`` is ``paddle.io.DistributedBatchSampler`` (each rank its own shard,
padded to equal length; shuffle order seeded by the epoch; rank and world size from the
``paddle.distributed.launch`` environment unless given) whose batches are lists of
``SampleKey(index, epoch)`` keys instead of bare indices, so the dataset knows the epoch of every sample
it makes, in whichever worker process. Call ``set_epoch(epoch)`` before each epoch (a resumed
run then sees the same order and augmentation as an uninterrupted one); without it the epoch
counts up by one per pass.

The other PaddleClas samplers, with PaddleClas's keys and meaning:

- ``BatchSampler`` (``batch_size``, ``shuffle``, ``drop_last``): ``paddle.io.BatchSampler``
  over the whole data set, as PaddleClas builds it: no split between cards (every card sees
  every sample; a warning says so on more than one card). The shuffle order is the one
  ``DistributedBatchSampler`` has on one card (seeded by the epoch).
- ``RASampler`` (``num_repeats``, default 3; ``batch_size``, ``shuffle``, ``drop_last``,
  ``num_replicas``, ``rank``): repeated augmentation (DeiT). Each sample index is repeated
  ``num_repeats`` times in a row, the list is padded to a multiple of the card count and dealt
  to the cards in turn (so the copies of one image land on different cards), and each card uses
  the first ``len(dataset) // 256 * 256 / cards`` of its share per epoch (an epoch as long as an
  ordinary one, rounded down to a multiple of 256). Every copy of an image gets its own
  augmentation: the key carries the copy number, which the dataset adds to its seed.
- ``MultiScaleSampler`` (``scales``, ``first_bs``, ``divided_factor`` (32), ``is_training``
  (True), ``shuffle`` (True), ``seed``; ``num_replicas``, ``rank`` default to the launch
  environment): batches at several resolutions with batch sizes that keep
  ``width * height * batch_size`` near that of the first scale; see the class.
"""

import math

import numpy as np
import paddle

from ppcls.utils import logger
from ppcls.utils.errors import ConfigError
from ppcls.utils.registry import Registry

from .dataset import SampleKey

SAMPLERS = Registry("sampler", listing="known")


def _batched(keys, batch_size, drop_last):
    """``keys`` in lists of ``batch_size`` (the last one shorter unless ``drop_last``)."""
    batch = []
    for key in keys:
        batch.append(key)
        if len(batch) == batch_size:
            yield batch
            batch = []
    if batch and not drop_last:
        yield batch


@SAMPLERS.register
class DistributedBatchSampler(paddle.io.DistributedBatchSampler):
    def __iter__(self):
        epoch = self.epoch
        for batch in super().__iter__():
            self.epoch = epoch + 1
            yield [SampleKey(int(i), epoch) for i in batch]
        self.epoch = epoch + 1


@SAMPLERS.register
class BatchSampler(paddle.io.BatchSampler):
    """``paddle.io.BatchSampler`` over the whole data set (no split between cards), yielding
    ``(index, epoch)`` keys; see the module docstring."""

    def __init__(self, dataset, batch_size=1, shuffle=False, drop_last=False):
        super().__init__(dataset=dataset, shuffle=False, batch_size=batch_size, drop_last=drop_last)
        self.dataset = dataset
        self.shuffle = bool(shuffle)
        self.epoch = 0
        self.nranks, self.local_rank = 1, 0
        world = paddle.distributed.get_world_size()
        if world > 1:
            logger.warning(f"BatchSampler gives each of the {world} cards the whole data set (as in "
                           "PaddleClas); DistributedBatchSampler splits it between them")

    def set_epoch(self, epoch):
        self.epoch = int(epoch)

    def __iter__(self):
        epoch = self.epoch
        order = np.arange(len(self.dataset)).tolist()
        if self.shuffle:
            np.random.RandomState(epoch).shuffle(order)  # DistributedBatchSampler's order on one card
        yield from _batched((SampleKey(int(i), epoch) for i in order), self.batch_size, self.drop_last)
        self.epoch = epoch + 1


@SAMPLERS.register
class RASampler(DistributedBatchSampler):
    """Repeated augmentation (DeiT, as PaddleClas's ``RASampler``); see the module docstring."""

    def __init__(self, dataset, batch_size, num_replicas=None, rank=None, shuffle=False,
                 drop_last=False, num_repeats=3):
        if not isinstance(num_repeats, int) or isinstance(num_repeats, bool) or num_repeats < 1:
            raise ConfigError(f"key 'num_repeats' expects a positive integer, got {num_repeats!r}")
        super().__init__(dataset, batch_size, num_replicas, rank, shuffle, drop_last)
        self.num_repeats = num_repeats
        n = len(dataset)
        self.num_samples = int(math.ceil(n * num_repeats / self.nranks))
        self.total_size = self.num_samples * self.nranks
        self.num_selected_samples = int(math.floor(n // 256 * 256 / self.nranks))
        if self.num_selected_samples < 1:
            raise ConfigError(f"RASampler uses len(dataset) // 256 * 256 / cards samples a card per "
                              f"epoch (DeiT's rule), which is 0 for {n} images on {self.nranks} "
                              "card(s): it needs at least 256 images per card")

    def keys(self, epoch):
        """This rank's sample keys of ``epoch``, in order (before batching)."""
        order = np.arange(len(self.dataset)).tolist()
        if self.shuffle:
            np.random.RandomState(epoch).shuffle(order)
        repeated = [(i, r) for i in order for r in range(self.num_repeats)]
        repeated += repeated[:self.total_size - len(repeated)]
        mine = repeated[self.local_rank:self.total_size:self.nranks][:self.num_selected_samples]
        return [SampleKey(int(i), epoch, r) for i, r in mine]

    def __iter__(self):
        epoch = self.epoch
        yield from _batched(self.keys(epoch), self.batch_size, self.drop_last)
        self.epoch = epoch + 1

    def __len__(self):
        n = self.num_selected_samples + (0 if self.drop_last else self.batch_size - 1)
        return n // self.batch_size


def _scale_list(scales):
    """``scales`` -> [(w, h), ...]: a list of sizes, or of [width, height] pairs."""
    def positive(v):
        return isinstance(v, int) and not isinstance(v, bool) and v > 0

    if isinstance(scales, (list, tuple)) and scales:
        out = []
        for s in scales:
            if positive(s):
                out.append((s, s))
            elif isinstance(s, (list, tuple)) and len(s) == 2 and all(positive(v) for v in s):
                out.append((int(s[0]), int(s[1])))
            else:
                break
        else:
            return out
    raise ConfigError(f"key 'scales' expects a list of sizes or of [width, height] pairs, "
                      f"got {scales!r}")


@SAMPLERS.register
class MultiScaleSampler(paddle.io.Sampler):
    """Batches at several resolutions (PaddleClas's ``MultiScaleSampler``, used with
    ``MultiScaleDataset``; MobileViT recipes).

    Scales (sizes or ``[width, height]``) are rounded down to multiples of ``divided_factor``
    when ``is_training``; each scale's batch size is
    ``max(1, int(w0 * h0 * first_bs / (w * h)))`` with ``(w0, h0)`` the first scale as given.
    With ``is_training: False`` there is one pair, the first scale with ``first_bs``.

    Like PaddleClas, the sequence of (width, height, batch size) of an epoch is drawn once, so
    every epoch has the same number of batches (the LR schedule counts on it) and, with
    ``N`` images on ``R`` cards, covers ``ceil(N / R)`` samples a card (the last batch is filled
    up from the start of the card's share). Each card takes every ``R``-th image of the
    epoch's order, so the cards' shares are disjoint; a step has the same resolution and batch
    size on every card. Differences from PaddleClas, which draws that sequence from Python's
    global generator and reseeds its shuffle with the same ``seed`` every epoch: here the
    sequence comes from ``seed`` (0 when null), every card gets the same one, its order is
    permuted every epoch and the image order is shuffled per (seed, epoch).

    Keys carry the size: ``SampleKey(index, epoch, size=(w, h))``.
    """

    def __init__(self, dataset, scales, first_bs, divided_factor=32, is_training=True,
                 shuffle=True, seed=None, num_replicas=None, rank=None):
        pairs = _scale_list(scales)
        for key, value in (("first_bs", first_bs), ("divided_factor", divided_factor)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"key '{key}' expects a positive integer, got {value!r}")
        for key, value in (("is_training", is_training), ("shuffle", shuffle)):
            if not isinstance(value, bool):
                raise ConfigError(f"key '{key}' expects true/false, got {value!r}")
        if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool)):
            raise ConfigError(f"key 'seed' expects an integer or null, got {seed!r}")
        self.dataset = dataset
        self.nranks = paddle.distributed.get_world_size() if num_replicas is None else int(num_replicas)
        self.local_rank = paddle.distributed.get_rank() if rank is None else int(rank)
        if not 0 <= self.local_rank < self.nranks:
            raise ConfigError(f"rank {self.local_rank} is outside [0, {self.nranks})")
        (w0, h0), base = pairs[0], first_bs
        if is_training:
            self.img_batch_pairs = []
            for w, h in pairs:
                w, h = w // divided_factor * divided_factor, h // divided_factor * divided_factor
                if w < 1 or h < 1:
                    raise ConfigError(f"key 'scales': {pairs} rounded down to multiples of "
                                      f"divided_factor {divided_factor} gives a size of 0")
                self.img_batch_pairs.append((w, h, max(1, int(w0 * h0 * base / (w * h)))))
        else:
            self.img_batch_pairs = [(w0, h0, base)]
        self.shuffle = shuffle
        self.seed = seed
        self.epoch = 0
        self.samples_per_replica = int(math.ceil(len(dataset) / self.nranks))
        rng = np.random.default_rng(0 if seed is None else seed)
        self.batch_list, covered = [], 0
        while covered < self.samples_per_replica:
            pair = self.img_batch_pairs[int(rng.integers(len(self.img_batch_pairs)))]
            self.batch_list.append(pair)
            covered += pair[2]

    def set_epoch(self, epoch):
        self.epoch = int(epoch)

    def schedule(self, epoch):
        """The (width, height, batch size) of every batch of ``epoch``, the same on every card."""
        if not self.shuffle:
            return list(self.batch_list)
        rng = np.random.default_rng([0 if self.seed is None else self.seed, epoch, 1])
        return [self.batch_list[i] for i in rng.permutation(len(self.batch_list))]

    def batches(self, epoch):
        """This card's batches of ``epoch``: lists of ``SampleKey(index, epoch, size=(w, h))``."""
        order = np.arange(len(self.dataset))
        if self.shuffle:
            order = np.random.default_rng([0 if self.seed is None else self.seed, epoch]).permutation(order)
        mine = order[self.local_rank::self.nranks].tolist()
        start, out = 0, []
        for w, h, bs in self.schedule(epoch):
            ids = mine[start:min(start + bs, self.samples_per_replica)]
            while len(ids) < bs:  # the last batch: filled up from the start of the share
                ids += mine[:bs - len(ids)]
            start += bs
            out.append([SampleKey(int(i), epoch, size=(w, h)) for i in ids])
        return out

    def __iter__(self):
        epoch = self.epoch
        yield from self.batches(epoch)
        self.epoch = epoch + 1

    def __len__(self):
        return len(self.batch_list)

    def describe(self):
        sizes = ", ".join(f"{w}x{h}:{bs}" for w, h, bs in self.img_batch_pairs)
        return f"multi-scale batches (width x height: batch size {sizes})"


def batch_indices(batch_keys):
    """The sample indices of one batch of keys."""
    return [key[0] if isinstance(key, tuple) else int(key) for key in batch_keys]
