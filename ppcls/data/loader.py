"""``build_dataloader(config, mode)``: the ``DataLoader.<mode>`` section -> a ``paddle.io.DataLoader``.

Batches are ``(images float32 [N, 3, H, W], labels int64 [N], indices)`` (the images are
normalised on the batch's device when the dataset hands on uint8 images: ``Global.device_normalize``,
see ``ppcls.data.device_normalize``): ``indices`` (numpy
int64 [N]) are the dataset indices of the samples the batch holds (rank shards are padded by
repeating samples; with them a multi-card eval counts each sample once, also when an image was
skipped). The loader is an ``ImageDataLoader`` (a ``paddle.io.DataLoader``) that adds:

- ``loader.batch_sampler.set_epoch(epoch)``: call before each epoch (see ``ppcls.data.sampler``).
- An image that cannot be decoded stops the iteration with a one-line ``DataError`` naming the
  image and its list-file line, also when it happened in a worker process. With
  ``Global.skip_bad_images: True`` it is dropped from its batch instead (a batch can then be
  smaller; a batch with no good image is left out), a warning line names it, and it is counted:
  ``loader.num_skipped`` (total since the loader was built), ``loader.skipped_images`` (their
  messages), ``loader.epoch_skipped`` (during the last pass); a pass that skipped any ends with
  a warning giving the count. The counts are this rank's.
- ``DataLoader.Train.dataset.batch_transform_ops`` (PaddleClas's MixupOperator, CutmixOperator,
  OpSampler; see ``ppcls.data.preprocess.batch_ops``): applied to each batch in the main
  process, drawing from ``batch_rng(seed, epoch, batch index)``, so the mix is the same whatever
  ``num_workers``. A batch then carries soft targets ``float32 [N, class_num]`` instead of
  class ids; ``loader.batch_ops`` is the (possibly empty) list of ops.
- Per-worker seeding of Python's and numpy's global generators (for ops that use them); the
  ops here draw from a per-sample generator instead (see ``ppcls.data.dataset``).
"""

import functools
import gc
import inspect
import os
import random
import signal
import threading
import time
import traceback

import numpy as np
import paddle

from ppcls.utils import logger
from ppcls.utils.errors import LOADER_STALLS, ConfigError, DataError

from ppcls.utils.global_config import global_value, selected_gpu
from ppcls.utils.registry import accepted_keys, build

from .dataset import DATASETS, BadSample, MultiScaleDataset
from . import imagefolder  # noqa: F401  (registers dataset ImageFolder)
from .preprocess.batch_ops import apply_batch_operators, batch_rng, create_batch_operators
from .sampler import SAMPLERS, MultiScaleSampler

MODES = ("Train", "Eval")
# Tags of the messages a batch carries from the worker to the main process.
_SKIPPABLE, _DATA_ERROR, _BUG, _EMPTY = "S", "D", "B", "E"

_SAMPLER_TYPES = {"batch_size": int, "drop_last": bool, "shuffle": bool}
_LOADER_KEYS = {"num_workers": int, "use_shared_memory": bool}


def collate_batch(items):
    """Stack the samples ``(image, label, index)`` of one batch; returns
    ``[images, labels, indices, messages]``.

    Nothing here raises (paddle's single-process loader would hang): a sample that could not be
    made (``BadSample``) or a batch that cannot be stacked becomes a tagged message, and the
    main process raises or skips (``ImageDataLoader.__iter__``).
    """
    good = [item for item in items if not isinstance(item, BadSample)]
    messages = [(_BUG if item.bug else _SKIPPABLE) + item.message
                for item in items if isinstance(item, BadSample)]
    placeholder = [np.zeros((1,), np.float32), np.zeros((1,), np.int64), np.zeros((1,), np.int64)]
    if not good:
        return placeholder + [messages + [_EMPTY]]
    try:
        images = np.stack([item[0] for item in good])
    except ValueError:
        shapes = sorted({tuple(np.shape(item[0])) for item in good})
        return placeholder + [messages + [
            _DATA_ERROR + f"the images of one batch have different shapes {shapes}: transform_ops must "
            "give every image the same size (end with CropImage or RandCropImage)"]]
    labels = np.asarray([item[1] for item in good], dtype=np.int64)
    indices = np.asarray([item[2] for item in good], dtype=np.int64)
    return [images, labels, indices, messages]


def seed_worker(base_seed, rank, worker_id):
    """``worker_init_fn``: seed Python's and numpy's global generators from (seed, rank, worker);
    OpenCV (when installed) runs one thread per worker."""
    state = np.random.SeedSequence([base_seed, rank, worker_id]).generate_state(1)[0]
    random.seed(int(state))
    np.random.seed(int(state))
    from .preprocess.ops import _import_cv2

    cv2 = _import_cv2()
    if cv2 is not None:  # the workers are the parallelism: one OpenCV thread each
        cv2.setNumThreads(1)


def _shutdown(batches, timeout=10):
    """Stop a paddle DataLoader iterator's worker processes / reader thread (idempotent)."""
    stop = getattr(batches, "_try_shutdown_all", None)
    if stop is None:
        return
    try:
        if "timeout" in inspect.signature(stop).parameters:
            stop(timeout=timeout)
        else:
            stop()
    except SystemError:
        # Paddle's SIGCHLD handler raises "(Fatal) DataLoader process ... exited" inside the join
        # when a worker is already dead: the caller is reporting that death (or stopping early);
        # a second report here would be a traceback printed as an "ignored" generator exception
        pass


# Seconds the main process waits for a batch from the workers before it stops them with a
# clear error instead of hanging (the first batch of a pass included).
WORKER_TIMEOUT_ENV = "PPCLS_LOADER_TIMEOUT"
WORKER_TIMEOUT = 600


def wait_limit():
    """Seconds to wait for one batch from the worker processes (``None``: no limit): the
    ``PPCLS_LOADER_TIMEOUT`` environment variable, default 600, ``0`` for no limit."""
    text = os.environ.get(WORKER_TIMEOUT_ENV, "").strip()
    if not text:
        return float(WORKER_TIMEOUT)
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0:
        raise ConfigError(f"{WORKER_TIMEOUT_ENV} expects a number of seconds >= 0 (0: no limit), "
                          f"got {text!r}")
    return value or None


def _start_workers(start, num_workers):
    """``start()`` (paddle's iterator, which forks the workers) with the garbage collected and
    the heap frozen first: a forked worker then never runs the collector over the parent's
    objects (whose finalizers can wait forever on a lock some other parent thread held at
    fork time; seen as a worker stuck in a futex when the parent held much garbage)."""
    if num_workers <= 0:
        return start()
    gc.collect()
    gc.freeze()
    try:
        return start()
    finally:
        gc.unfreeze()


class _Watchdog(threading.Thread):
    """Stops the workers when the main process has waited longer than ``PPCLS_LOADER_TIMEOUT``
    seconds (default 600) for one batch; the main process then raises a ``DataError``."""

    def __init__(self, batches, dataset=None):
        super().__init__(daemon=True, name="ppcls-loader-watchdog")
        self.batches, self.dataset = batches, dataset
        self.timeout = wait_limit()
        self.since = None
        self.fired = None  # the pids stopped
        self._stop_event = threading.Event()
        self.start()

    def waiting(self):
        self.since = time.monotonic()

    def done(self):
        self.since = None

    def stop(self):
        self._stop_event.set()

    def run(self):
        while not self._stop_event.wait(min(1.0, self.timeout / 4)):
            since = self.since
            if since is not None and time.monotonic() - since > self.timeout:
                workers = [w for w in getattr(self.batches, "_workers", []) if w.is_alive()]
                self.fired = [w.pid for w in workers]
                LOADER_STALLS.append(_stall_message(self, self.dataset))  # the CLI reports it
                for w in workers:
                    try:
                        os.kill(w.pid, signal.SIGKILL)
                    except OSError:
                        pass
                return


def _stall_message(watchdog, dataset):
    source = getattr(dataset, "cls_label_path", "the data")
    return (f"the DataLoader workers (pids {', '.join(map(str, watchdog.fired))}) gave no batch "
            f"of {source} for {watchdog.timeout:g} s and were stopped (stuck?); retry, or set "
            f"DataLoader.*.loader.num_workers=0 ({WORKER_TIMEOUT_ENV} sets the wait)")


def _worker_error(batches, watchdog, err, dataset):
    """The one line for a loader whose worker process died or stopped answering."""
    source = getattr(dataset, "cls_label_path", "the data")
    if watchdog is not None and watchdog.fired is not None:
        return DataError(_stall_message(watchdog, dataset))
    dead = [w for w in getattr(batches, "_workers", []) if w.exitcode not in (None, 0)]
    if not dead and "queue is killed" not in str(err) and "DataLoader" not in str(err):
        return err
    how = ", ".join(f"pid {w.pid} " + (f"killed by signal {-w.exitcode}" if w.exitcode < 0
                                       else f"exit code {w.exitcode}") for w in dead)
    return DataError(f"a DataLoader worker process died while reading {source}"
                     f"{' (' + how + ')' if how else ''}; out of memory? lower "
                     "DataLoader.*.loader.num_workers or the batch size")


class LoaderSamples(paddle.io.Dataset):
    """A dataset as the loader's workers read it: ``(image, label, index)``, and a sample that
    cannot be made as a ``BadSample`` instead of an exception (paddle's single-process
    DataLoader hangs when a dataset raises in its reader thread). Attributes are the wrapped
    dataset's (``loader.dataset.labels``, ``loader.dataset.ops = ...``)."""

    def __init__(self, dataset):
        object.__setattr__(self, "_dataset", dataset)

    def __getattr__(self, name):
        if name == "_dataset":
            raise AttributeError(name)
        return getattr(self._dataset, name)

    def __setattr__(self, name, value):
        setattr(self._dataset, name, value)

    def __len__(self):
        return len(self._dataset)

    def __getitem__(self, key):
        index = int(key[0] if isinstance(key, tuple) else key)
        try:
            image, label = self._dataset[key][:2]
        except DataError as err:
            return BadSample(str(err))
        except Exception as err:  # a bug, not bad data: keep the traceback, name the sample
            trace = "".join(traceback.format_exception(type(err), err, err.__traceback__))
            describe = getattr(self._dataset, "describe", lambda i: f"sample {i}")
            return BadSample(f"{type(err).__name__} while making {describe(index)}:\n{trace}",
                             bug=True)
        return image, label, index


class ImageDataLoader(paddle.io.DataLoader):
    """A ``paddle.io.DataLoader`` yielding ``(images, labels, indices)``; see the module docstring.
    ``skip_bad_images``: drop undecodable images instead of raising (``Global.skip_bad_images``);
    ``batch_ops`` (Mixup, Cutmix...) run on each batch with generators from ``batch_seed``, this
    process's ``rank`` and the epoch; ``nranks``: the number of processes sharing the data."""

    def __init__(self, dataset, batch_sampler, skip_bad_images=False, batch_ops=(), batch_seed=0,
                 rank=0, nranks=1, **kwargs):
        super().__init__(LoaderSamples(dataset), batch_sampler=batch_sampler,
                         collate_fn=collate_batch, return_list=True, **kwargs)
        self.skip_bad_images = bool(skip_bad_images)
        self.skipped_images = []
        self.epoch_skipped = 0
        self.batch_ops, self.batch_seed, self.rank, self.nranks = list(batch_ops), batch_seed, rank, nranks
        self._passes = 0

    @property
    def normalize(self):
        """The dataset's deferred ``NormalizeImage`` (``ppcls.data.device_normalize``), run here
        on each uint8 batch on its device; None when the dataset normalises its images."""
        return getattr(self.dataset, "normalize", None)

    @property
    def num_skipped(self):
        return len(self.skipped_images)

    def __iter__(self):
        self.epoch_skipped = 0
        skip = self.skip_bad_images
        # the epoch the sampler is about to give its keys (set_epoch); else the pass count
        epoch = getattr(self.batch_sampler, "epoch", self._passes)
        self._passes += 1
        batches = _start_workers(lambda: super(ImageDataLoader, self).__iter__(), self.num_workers)
        watchdog = (_Watchdog(batches, self.dataset)
                    if self.num_workers > 0 and wait_limit() is not None else None)
        try:
            yield from self._checked(batches, skip, watchdog, epoch)
        finally:
            # An error raised here, or a consumer that stops early, leaves paddle's iterator
            # with live workers; shut them down now (bounded) instead of at garbage collection,
            # where the join can hang.
            if watchdog is not None:
                watchdog.stop()
            _shutdown(batches)

    def _checked(self, batches, skip, watchdog, epoch):
        batch_index = -1
        while True:
            try:
                if watchdog is not None:
                    watchdog.waiting()
                images, labels, indices, messages = next(batches)
            except StopIteration:
                break
            except SystemError as err:  # paddle: "Blocking queue is killed" when a worker died
                raise _worker_error(batches, watchdog, err, self.dataset) from None
            finally:
                if watchdog is not None:
                    watchdog.done()
            batch_index += 1
            empty = False
            for tagged in messages:
                tag, message = tagged[0], tagged[1:]
                if tag == _EMPTY:
                    empty = True
                elif tag == _BUG:
                    raise RuntimeError(message)
                elif tag == _DATA_ERROR or not skip:
                    raise DataError(message)
                else:
                    self.skipped_images.append(message)
                    self.epoch_skipped += 1
                    logger.warning(f"skipped unreadable image (Global.skip_bad_images): {message}")
            if not empty:
                normalize = self.normalize
                if normalize is not None and images.dtype == paddle.uint8:
                    images = normalize(images)
                if self.batch_ops:
                    # batch i of this pass over all ranks: this rank's n-th batch is n * nranks + rank
                    rng = batch_rng(self.batch_seed, epoch, batch_index * self.nranks + self.rank)
                    images, labels = mix_batch(images, labels, self.batch_ops, rng)
                yield images, labels, indices.numpy()
        if self.epoch_skipped:
            logger.warning(f"skipped {self.epoch_skipped} unreadable image(s) in this pass over "
                           f"{getattr(self.dataset, 'cls_label_path', 'the data')} "
                           f"({self.num_skipped} since the start)")


def build_batch_ops(ds_cfg, config, where):
    """Take ``batch_transform_ops`` out of a dataset section (``ds_cfg``, modified in place)
    and build them; ``[]`` when there are none. They need ``Arch.class_num``."""
    op_list = ds_cfg.pop("batch_transform_ops", None)
    if not op_list:
        return []
    class_num, _ = _class_num(config)
    return create_batch_operators(op_list, where=f"{where}.batch_transform_ops", class_num=class_num)


def mix_batch(images, labels, ops, rng):
    """Apply the batch ``ops`` to one batch (tensors on the loader's place) with the batch's
    generator ``rng`` (``batch_rng(seed, epoch, i)``, ``i`` counting the batches of this pass
    over all ranks, so it depends on neither the worker count nor the batch timing): returns
    the mixed images and the soft targets."""
    mixed, targets = apply_batch_operators(images.numpy(), labels.numpy(), ops, rng)
    place = images.place
    return (paddle.to_tensor(mixed, place=place), paddle.to_tensor(targets, place=place))


def _check_keys(section, allowed, where):
    for key in section:
        if key not in allowed:
            raise ConfigError(f"unknown config key '{where}.{key}'; keys under {where}: "
                              f"{', '.join(allowed)}")
    _check_types(section, allowed, where)


def _check_types(section, types, where):
    for key, value in section.items():
        kind = types.get(key)
        if kind is not None and (not isinstance(value, kind) or (kind is int and isinstance(value, bool))):
            what = {int: "an integer", bool: "true/false"}.get(kind, kind.__name__)
            raise ConfigError(f"config key '{where}.{key}' expects {what}, got {value!r}")


def _places(device):
    if device is None:
        return None
    device = str(device).lower()
    if device in ("gpu", "cuda"):
        return f"gpu:{selected_gpu()}"
    return device


def _class_num(config):
    for section in ("Arch", "Global"):
        value = (config.get(section) or {}).get("class_num")
        if value is not None:
            return value, f"{section}.class_num"
    return 1000, "the model's class_num (default, Arch.class_num not set)"


def _mode_section(config, mode):
    """``(where, section)`` of ``DataLoader.<mode>``, checked to hold dataset and sampler."""
    if mode not in MODES:
        raise ConfigError(f"data mode must be one of {', '.join(MODES)}, got {mode!r}")
    where = f"DataLoader.{mode}"
    section = (config.get("DataLoader") or {}).get(mode)
    if not isinstance(section, dict):
        raise ConfigError(f"config section '{where}' is missing (it needs dataset, sampler and loader)")
    _check_keys(section, {"dataset": dict, "sampler": dict, "loader": dict}, where)
    for part in ("dataset", "sampler"):
        if part not in section:
            raise ConfigError(f"config section '{where}.{part}' is missing")
    return where, section


def _loader_settings(ld_cfg, where, device):
    """``(num_workers, use_shared_memory)`` from ``DataLoader.<mode>.loader``."""
    ld_cfg = dict(ld_cfg or {})
    _check_keys(ld_cfg, _LOADER_KEYS, f"{where}.loader")
    num_workers = ld_cfg.get("num_workers", 0)
    if num_workers < 0:
        raise ConfigError(f"config key '{where}.loader.num_workers' expects an integer >= 0, "
                          f"got {num_workers}")
    use_shared_memory = ld_cfg.get("use_shared_memory", True)
    if use_shared_memory and num_workers > 0 and not str(_places(device) or "cpu").startswith("gpu"):
        # On CPU the batches stay in host memory anyway. Paddle's shared-memory path makes a
        # paddle tensor inside each forked worker, which can deadlock on an allocator lock
        # inherited from the parent (seen with Paddle 3.3.1: a worker stuck in
        # numpy2lodtensor -> HostMemoryStat rwlock); without it workers never touch paddle.
        use_shared_memory = False
    return num_workers, use_shared_memory


def build_dataloader(config, mode, device="cpu", seed=None):
    """The loader for ``config["DataLoader"][mode]`` (mode ``Train`` or ``Eval``).

    ``config`` is the whole config: ``Arch.class_num`` bounds the labels, ``Global.seed`` is the
    seed when ``seed`` is None (neither: a fresh random seed), ``Global.skip_bad_images`` skips
    undecodable images. ``device`` ("cpu", "gpu", "gpu:1", ...) is where batches are placed.
    """
    where, section = _mode_section(config, mode)
    if seed is None:
        seed = global_value(config, "seed")
    if seed is None:
        seed = int(np.random.SeedSequence().entropy % 2**63)

    # dataset
    ds_cfg = dict(section["dataset"])
    if "name" not in ds_cfg:
        raise ConfigError(f"config key '{where}.dataset.name' is missing; known: "
                          f"{', '.join(DATASETS.names())}")
    if mode != "Train" and ds_cfg.get("batch_transform_ops"):
        raise ConfigError(f"config key '{where}.dataset.batch_transform_ops': batch transform ops "
                          "(Mixup, Cutmix) belong under DataLoader.Train only")
    batch_ops = build_batch_ops(ds_cfg, config, f"{where}.dataset")
    class_num, class_num_key = _class_num(config)
    dataset = build(ds_cfg, DATASETS, f"{where}.dataset", class_num=class_num,
                    class_num_key=class_num_key, seed=seed, where=f"{where}.dataset",
                    fast_reader=global_value(config, "fast_reader"),
                    device_normalize=global_value(config, "device_normalize"))

    sampler = build_sampler(section["sampler"], dataset, mode, where)

    num_workers, use_shared_memory = _loader_settings(section.get("loader"), where, device)
    rank = sampler.local_rank
    if mode == "Train" and global_value(config, "use_dali"):  # PaddleClas's DALI loading (ppcls.data.dali)
        from .dali import build_loader as build_dali_loader

        loader = build_dali_loader(dataset, section, seed, rank, sampler.nranks, device)
        if loader is not None:
            return loader
    loader = ImageDataLoader(
        dataset, sampler, skip_bad_images=global_value(config, "skip_bad_images"),
        batch_ops=batch_ops, batch_seed=seed, rank=rank, nranks=sampler.nranks,
        places=_places(device), num_workers=num_workers, use_shared_memory=use_shared_memory,
        worker_init_fn=functools.partial(seed_worker, seed, rank))
    batches = sampler.describe() if hasattr(sampler, "describe") else f"batches of {sampler.batch_size}"
    logger.info(f"{mode} data: {len(dataset)} images from {dataset.cls_label_path}, "
                f"{len(loader)} {batches} per card on {sampler.nranks} card(s)")
    return loader


def build_sampler(sp_cfg, dataset, mode="Train", where="DataLoader.Train"):
    """The batch sampler of ``DataLoader.<mode>.sampler`` (default ``DistributedBatchSampler``,
    shuffled for Train) over ``dataset``; see ``ppcls.data.sampler``."""
    if not isinstance(sp_cfg, dict):
        raise ConfigError(f"config section '{where}.sampler' expects a mapping such as "
                          f"{{name: DistributedBatchSampler, batch_size: 64}}, got {sp_cfg!r}")
    sp_cfg = dict(sp_cfg)
    sp_cfg.setdefault("name", "DistributedBatchSampler")
    if sp_cfg["name"] in SAMPLERS and "shuffle" in accepted_keys(SAMPLERS.get(sp_cfg["name"]))[0]:
        sp_cfg.setdefault("shuffle", mode == "Train")
    _check_types(sp_cfg, _SAMPLER_TYPES, f"{where}.sampler")
    if "batch_size" in sp_cfg or sp_cfg["name"] == "DistributedBatchSampler":
        batch_size = sp_cfg.get("batch_size")
        if batch_size is None or batch_size <= 0:
            raise ConfigError(f"config key '{where}.sampler.batch_size' expects a positive integer, "
                              f"got {batch_size!r}")
    sampler = build(sp_cfg, SAMPLERS, f"{where}.sampler", dataset=dataset)
    if isinstance(sampler, MultiScaleSampler) and not isinstance(dataset, MultiScaleDataset):
        raise ConfigError(f"{where}: MultiScaleSampler needs dataset MultiScaleDataset (the sampler "
                          f"picks each batch's image size, the dataset crops to it), got "
                          f"{type(dataset).__name__}")
    return sampler
