"""Cross-card reductions of the engine (no-ops on one card), and the running sums behind the
training log line (:class:`RunningSums`: read and reduced only on the lines printed).

The distributed sampler pads each rank's shard with repeated samples so that all ranks get
equal shares; eval results are therefore counted per sample index (which every batch carries),
each sample once.
"""

import numpy as np
import paddle
import paddle.distributed as dist


def world():
    """``(world_size, rank)`` of this process."""
    size = dist.get_world_size()
    return size, (dist.get_rank() if size > 1 else 0)


def global_weighted_mean(total, count):
    """``sum(total) / sum(count)`` over the ranks (one all-reduce of two numbers): the mean over
    all ranks' samples when each rank passes the sum and the number of its samples."""
    t = paddle.to_tensor([total, count], dtype="float64")
    if dist.get_world_size() > 1:
        dist.all_reduce(t)
    arr = t.numpy()
    return float(arr[0]) / max(float(arr[1]), 1.0)


def sync_statistics(model):
    """Give every rank rank 0's BN running statistics (each rank updated its own from its
    shard), so all ranks evaluate, and rank 0 saves, the same model."""
    for tensor in list(model.buffers()) + [p for p in model.parameters() if p.stop_gradient]:
        dist.broadcast(tensor, src=0)


def reduce_losses(meters):
    """``{name: AverageMeter}`` of this rank -> ``{name: mean over all ranks' samples}``."""
    names = sorted(meters)
    if not names:
        return {}
    t = paddle.to_tensor([[meters[k].sum, meters[k].count] for k in names], dtype="float64")
    dist.all_reduce(t)
    arr = t.numpy()
    return {k: arr[i, 0] / max(arr[i, 1], 1) for i, k in enumerate(names)}


def reduce_hits(all_idx, all_hits, names):
    """Gather every rank's (sample index, hits) and average each metric over the distinct
    samples."""
    idx = np.concatenate(all_idx) if all_idx else np.zeros((0,), "int64")
    hits = np.concatenate(all_hits) if all_hits else np.zeros((0, len(names)), "float32")
    local = np.concatenate([idx[:, None].astype("float64"), hits.astype("float64")], axis=1)
    count = paddle.to_tensor([local.shape[0]], dtype="int64")
    counts = []
    dist.all_gather(counts, count)
    longest = max(int(c.numpy()[0]) for c in counts)
    padded = np.full((longest, local.shape[1]), np.nan)
    padded[: local.shape[0]] = local
    gathered = []
    dist.all_gather(gathered, paddle.to_tensor(padded))
    per_sample = {}
    for tensor, c in zip(gathered, counts):
        rows = tensor.numpy()[: int(c.numpy()[0])]
        for row in rows:
            per_sample.setdefault(int(row[0]), row[1:])
    if not per_sample:
        return {k: 0.0 for k in names}
    table = np.stack(list(per_sample.values()))
    return {k: float(table[:, j].mean()) for j, k in enumerate(names)}


class RunningSums:
    """Per-name weighted sums kept as device tensors, so a training step needs no device sync;
    read (one sync, and for ``loss`` one all-reduce) only on the iterations that log.

    ``loss`` is the mean over all ranks' samples of this epoch so far (as before: the step's
    loss averaged over the ranks, averaged over the steps); every other value is this rank's
    running mean over the epoch's samples."""

    def __init__(self):
        self.sums, self.count = {}, 0

    def add(self, values, n, count=True):
        """Add ``n`` samples' mean ``values`` (``{name: tensor}``); ``count``: once a batch."""
        for name, value in values.items():
            v = value.detach().astype("float64").mean() * n
            self.sums[name] = v if name not in self.sums else self.sums[name] + v
        self.count += n if count else 0
        return self

    def means(self, world_size):
        """``{name: float}``: one device-to-host copy; the ``loss`` entry reduced over ranks."""
        if not self.sums or not self.count:
            return {}
        names = list(self.sums)
        sums = paddle.stack([self.sums[k].reshape([]) for k in names]).numpy().astype("float64")
        out = {k: float(sums[i]) / self.count for i, k in enumerate(names)}
        if "loss" in out and world_size > 1:
            out["loss"] = global_weighted_mean(float(sums[names.index("loss")]),
                                            self.count)
        return out


LOSS_LOG_NOTE = ("[Train] in the iteration lines, loss is the mean over all ranks' samples of "
                 "the epoch so far, the other losses and metrics this rank's mean over the same "
                 "samples; they are computed (one device sync, one all-reduce) only on the lines "
                 "printed, every Global.print_batch_step iterations, and a non-finite loss is "
                 "caught there")
