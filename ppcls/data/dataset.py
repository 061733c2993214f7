"""Datasets by PaddleClas name. ``ImageNetDataset``: a list file of ``relative/path label`` lines
under an image root, the ImageNet layout PaddleClas uses.

The whole list file is checked when the dataset is built, before any training step: a line
that is not ``path label``, a label that is not an integer in [0, class_num), or an image file
that does not exist is a ``DataError`` naming the list file and the line (and how many other
lines are bad). Images are decoded lazily; one that cannot be decoded is a ``DataError`` naming
the image and its line (inside the loader it travels to the main process as a ``BadSample``,
where it is raised, or, with ``skip_bad_images``, dropped and counted).

Layout: as in PaddleClas, ``transform_ops`` leave an image ``[H, W, C]`` and the dataset makes it
``[C, H, W]`` (so upstream Train/Eval lists have no ``ToCHWImage``). A list that already turns
the image channel-first (a ``ToCHWImage`` op, or ``DecodeImage`` with ``channel_first: True``)
is used as it is: the dataset does not transpose a second time. The decision is made once per
list from its ops (each op says whether it leaves the image channel-first), not per image from
its shape, so a 3x3 image or a 3-channel-wide one cannot be mistaken.

Indexing: ``dataset[i]`` or ``dataset[SampleKey(i, epoch)]`` (what ``ppcls.data.sampler`` yields;
a plain ``(i, epoch)`` tuple works too). The random ops of ``transform_ops`` draw from a
generator seeded with (seed, epoch, i), so a sample's augmentation does not depend on which
worker process makes it, nor on what came before. A key may also carry ``repeat`` (the copy
number under ``RASampler``, added to the seed so each copy is augmented differently) and
``size`` (the (width, height) ``MultiScaleSampler`` chose, which ``MultiScaleDataset`` crops to).

``relabel: True`` (as in PaddleClas): the labels present in the list file, whatever integers
they are, are mapped in increasing order to 0..K-1 (``dataset.label_map``: original -> new);
K must not exceed ``class_num``.
"""

import collections
import copy
import os
import re

import numpy as np
import paddle

from ppcls.utils.errors import ConfigError, DataError
from ppcls.utils.registry import Registry

from .preprocess import ImageDecodeError, create_operators, transform
from .preprocess.fastread import fuse_reader_ops
from .preprocess.ops import ToCHWImage

DATASETS = Registry("dataset", listing="known")


class BadSample:
    """Stands in for a sample that could not be made, inside the loader (``ppcls.data.loader``),
    which raises it (or, for bad data with ``skip_bad_images``, skips it) in the main process.
    ``bug``: the cause was not bad data but an unexpected exception (its traceback is kept)."""

    __slots__ = ("message", "bug")

    def __init__(self, message, bug=False):
        self.message = message
        self.bug = bug


class SampleKey(collections.namedtuple("SampleKey", "index epoch repeat size", defaults=(0, None))):
    """What a sampler yields for one sample: its ``index``, the ``epoch``, the copy number
    ``repeat`` (``RASampler``) and the (width, height) ``size`` (``MultiScaleSampler``)."""

    __slots__ = ()


def split_key(key, epoch):
    """``dataset[key]``'s key -> ``SampleKey``; a bare index gets ``epoch``."""
    if isinstance(key, SampleKey):
        return key
    if isinstance(key, tuple):
        return SampleKey(*key)
    return SampleKey(int(key), epoch)


def sample_rng(seed, epoch, index, repeat=0):
    """The generator for the random transforms of sample ``index`` in ``epoch`` (copy
    ``repeat`` of it under repeated augmentation; copy 0 is the plain sample)."""
    entropy = [int(seed) % 2**64, int(epoch) % 2**64, int(index)]
    return np.random.default_rng(entropy + [int(repeat)] if repeat else entropy)


def _list_lines(list_path, image_root):
    """The lines of the list file (UTF-8, a leading BOM dropped), once both paths are checked."""
    if not os.path.isfile(list_path):
        raise DataError(f"list file not found: {list_path}")
    if not os.path.isdir(image_root):
        raise DataError(f"image_root is not a folder: {image_root} (list file {list_path})")
    try:
        with open(list_path, encoding="utf-8-sig") as f:  # -sig: a leading BOM is dropped
            return f.read().splitlines()
    except UnicodeDecodeError as err:
        raise DataError(f"{list_path}: not a UTF-8 text file ({err.reason} at byte {err.start})") from None
    except OSError as err:
        raise DataError(f"{list_path}: cannot read the list file ({err.strerror or err})") from None


def read_list_file(list_path, image_root, delimiter=None, class_num=None, class_num_key="class_num",
                   any_label=False):
    """Parse and check a ``path label`` list file; returns (image paths, labels, line numbers).
    ``any_label``: accept any integer label (``relabel`` maps them afterwards)."""
    lines = _list_lines(list_path, image_root)
    images, labels, line_nos = [], [], []
    first_problem, n_problems = None, 0
    listings = {}  # folder -> set of its entries: one listdir per folder, not one stat per image
    expected = "expected '<relative/path> <label>'" + (
        f" separated by {delimiter!r}" if delimiter not in (None, " ") else "")
    for n, raw in enumerate(lines, 1):
        line = raw.strip()
        if not line:
            continue
        parts = line.rsplit(None if delimiter in (None, " ") else delimiter, 1)
        problem = None
        if len(parts) != 2 or not parts[0].strip() or not parts[1].strip():
            problem = f"{expected}, got {line!r}"
        else:
            rel, label_text = parts[0].strip(), parts[1].strip()
            # digits only: int() alone reads "1_0" as 10 and accepts non-ASCII digits
            label = int(label_text) if re.fullmatch(r"[+-]?[0-9]+", label_text) else None
            if label is None:
                problem = f"label {label_text!r} is not an integer ({expected})"
            if label is not None and not any_label and (
                    label < 0 or (class_num is not None and label >= class_num)):
                bound = f"[0, {class_num})" if class_num is not None else "[0, ...)"
                problem = f"label {label} is outside {bound} ({class_num_key} is {class_num})"
            if problem is None:
                path = os.path.join(image_root, rel)
                folder, base = os.path.split(path)
                if folder not in listings:
                    try:
                        listings[folder] = set(os.listdir(folder or "."))
                    except OSError:
                        listings[folder] = set()
                if base not in listings[folder]:
                    problem = f"image file not found: {path}"
        if problem is not None:
            n_problems += 1
            if first_problem is None:
                first_problem = f"{list_path} line {n}: {problem}"
            continue
        images.append(path)
        labels.append(label)
        line_nos.append(n)
    if first_problem is not None:
        more = f" (and {n_problems - 1} more bad line{'s' if n_problems > 2 else ''} in this file)" \
            if n_problems > 1 else ""
        raise DataError(first_problem + more)
    if not images:
        raise DataError(f"{list_path}: the list file has no samples")
    return images, labels, line_nos


def chw_step(ops):
    """The [H, W, C] -> [C, H, W] step the dataset adds after ``ops``, or None when the ops
    already leave the image channel-first, or there are no ops. An op that fixes the layout of
    its output says so with ``chw_output`` (``ToCHWImage``: True; ``DecodeImage``: True only
    with ``channel_first``); ops without it keep the layout they get. The last one decides."""
    if not ops:
        return None
    chw = False
    for op in ops:
        layout = getattr(op, "chw_output", None)
        if layout is not None:
            chw = bool(layout)
    return None if chw else ToCHWImage()


@DATASETS.register
class ImageNetDataset(paddle.io.Dataset):
    """Config keys: ``image_root``, ``cls_label_path``, ``transform_ops``, ``delimiter``
    (default: any whitespace; the path may contain spaces, the label is the last field),
    ``relabel`` (see the module docstring).
    The keyword-only arguments are set by ``build_dataloader`` from the rest of the config.

    The training reader (README, "The training reader"): ``fast_reader`` (``Global.fast_reader``)
    runs a ``DecodeImage`` + ``RandCropImage`` pair as one step: the box from the JPEG header,
    the decode at the smallest DCT scale the box allows, one crop+resize
    (``ppcls.data.preprocess.fastread``); ``device_normalize``
    (``Global.device_normalize``) leaves a final ``NormalizeImage`` to the loader, which runs it
    on the batch on the device (``ppcls.data.device_normalize``): ``dataset[i]`` is then a
    ``uint8`` ``[3, H, W]`` image and ``dataset.normalize`` the op that makes it what the model
    takes (None when the ops normalise the image themselves). ``build_dataloader`` passes both
    from ``Global`` (both default True there); built directly, the dataset normalises itself."""

    def __init__(self, image_root, cls_label_path, transform_ops=None, delimiter=None,
                 relabel=False, *, class_num=None, class_num_key="Arch.class_num", seed=0,
                 where="dataset", fast_reader=True, device_normalize=False):
        super().__init__()
        if not isinstance(relabel, bool):
            raise ConfigError(f"config key '{where}.relabel' expects true/false, got {relabel!r}")
        self.image_root = image_root
        self.cls_label_path = cls_label_path
        self.transform_ops = transform_ops
        self.where = where
        self.fast_reader = bool(fast_reader)
        self.device_normalize = bool(device_normalize)
        self.ops = create_operators(transform_ops, where=f"{where}.transform_ops")
        self.images, self.labels, self.line_nos = read_list_file(
            cls_label_path, image_root, delimiter, class_num, class_num_key, any_label=relabel)
        self.label_map = None
        if relabel:
            self.label_map = {old: new for new, old in enumerate(sorted(set(self.labels)))}
            if class_num is not None and len(self.label_map) > class_num:
                raise DataError(f"{cls_label_path}: {len(self.label_map)} different labels, "
                                f"relabelled to 0..{len(self.label_map) - 1}, but {class_num_key} "
                                f"is {class_num}")
            self.labels = [self.label_map[label] for label in self.labels]
        self.seed = seed
        self.epoch = 0

    @property
    def ops(self):
        """The transform ops as configured (setting them rebuilds the steps ``__getitem__`` runs)."""
        return self._ops

    @ops.setter
    def ops(self, ops):
        self._ops = list(ops)
        self.steps, self.normalize, self.to_chw = self.plan(self._ops)

    def plan(self, ops):
        """(the steps ``__getitem__`` runs for ``ops``, the batch ``DeviceNormalize`` or None,
        the [C, H, W] step after them or None)."""
        from .device_normalize import DeviceNormalize, split_normalize

        to_chw, normalize = chw_step(ops), None
        if self.device_normalize:
            ops, op = split_normalize(ops)
            normalize = DeviceNormalize(op) if op is not None else None
        if not self.fast_reader:
            return list(ops), normalize, to_chw
        steps, chw = fuse_reader_ops(ops, chw=to_chw is not None)
        return steps, normalize, None if chw else to_chw  # chw: the last step normalises into [C, H, W]

    def set_epoch(self, epoch):
        """The epoch used for plain integer indices (the sampler passes its own)."""
        self.epoch = int(epoch)

    def __len__(self):
        return len(self.images)

    def describe(self, index):
        return f"{self.images[index]} (line {self.line_nos[index]} of {self.cls_label_path})"

    def ops_for(self, size):
        """The steps (the fused ops) for a key's ``size`` (None: the configured ones)."""
        if size is not None:
            raise ConfigError(f"{self.where}: a sampler chose the image size {tuple(size)}, which "
                            f"{type(self).__name__} cannot apply (MultiScaleSampler needs "
                            "MultiScaleDataset)")
        return self.steps

    def __getitem__(self, key):
        index, epoch, repeat, size = split_key(key, self.epoch)
        index = int(index)
        rng = sample_rng(self.seed, epoch, index, repeat)
        steps = self.ops_for(size)
        try:
            img = transform(self.images[index], steps, rng)
            if self.to_chw is not None:
                img = self.to_chw(img)
            if self.normalize is not None and getattr(img, "dtype", None) != np.uint8:
                raise DataError(f"expected a uint8 image before NormalizeImage (normalised on the "
                                f"device), got {getattr(img, 'dtype', type(img).__name__)}; set "
                                "Global.device_normalize: False")
        except DataError as err:
            reason = f"cannot decode image: {err.reason}" if isinstance(err, ImageDecodeError) else str(err)
            raise DataError(f"{self.describe(index)}: {reason}") from None
        return img, np.int64(self.labels[index])


# The ops whose ``size`` MultiScaleDataset sets to the sampler's scale (as in PaddleClas).
SIZED_OPS = ("RandCropImage", "ResizeImage", "CropImage")


@DATASETS.register
class MultiScaleDataset(ImageNetDataset):
    """``ImageNetDataset`` whose images take the (width, height) ``MultiScaleSampler`` chose for
    their batch: every ``RandCropImage``, ``ResizeImage`` and ``CropImage`` of ``transform_ops``
    gets that ``size`` (a ``ResizeImage`` with ``resize_short`` resizes to it instead), as in
    PaddleClas; the list needs at least one of them. Unlike PaddleClas, which replaces those ops'
    parameters by ``size`` alone, their other keys (``scale``, ``interpolation``,
    ``use_log_aspect``...) are kept. Same keys as ``ImageNetDataset``; a key without a size
    uses ``transform_ops`` as written."""

    def __init__(self, image_root, cls_label_path, transform_ops=None, delimiter=None,
                 relabel=False, *, class_num=None, class_num_key="Arch.class_num", seed=0,
                 where="dataset", fast_reader=True, device_normalize=False):
        super().__init__(image_root, cls_label_path, transform_ops, delimiter, relabel,
                         class_num=class_num, class_num_key=class_num_key, seed=seed, where=where,
                         fast_reader=fast_reader, device_normalize=device_normalize)
        self.sized = [i for i, item in enumerate(transform_ops or [])
                      if isinstance(item, dict) and len(item) == 1 and next(iter(item)) in SIZED_OPS]
        if not self.sized:
            raise ConfigError(f"{self.where}.transform_ops: MultiScaleDataset needs a "
                            f"{', '.join(SIZED_OPS[:-1])} or {SIZED_OPS[-1]} op, whose size it "
                            "sets to the sampler's scale")
        self._ops_by_size = {}

    def ops_for(self, size):
        if size is None:
            return self.steps
        size = (int(size[0]), int(size[1]))
        if size not in self._ops_by_size:
            op_list = copy.deepcopy(self.transform_ops)
            for i in self.sized:
                (name, params), = op_list[i].items()
                params = dict(params or {})
                params.pop("resize_short", None)
                params["size"] = list(size)
                op_list[i] = {name: params}
            ops = create_operators(op_list, where=f"{self.where}.transform_ops")
            self._ops_by_size[size] = self.plan(ops)[0]  # same list shape: same normalize
        return self._ops_by_size[size]
