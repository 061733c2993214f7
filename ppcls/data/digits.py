"""The quickstart data set: scikit-learn's handwritten digits as an ImageNet-layout folder.

``load_digits`` ships 1,797 real 8x8 scans (16 gray levels) of the digits 0-9 inside the
scikit-learn package, so nothing is downloaded. ``prepare_digits`` splits them (stratified by
class, fixed by ``seed``), upscales each scan to ``size`` x ``size`` with PIL's bicubic filter
(dark ink on white, as a scan looks), and writes RGB JPEGs (quality 95, no chroma subsampling)
plus PaddleClas list files:

layout ``imagenet`` (default)::

    train/3/00012.jpg ...   val/0/00000.jpg ...        (file name = index in load_digits)
    train_list.txt  ("train/3/00012.jpg 3")   val_list.txt   label_list.txt ("0 zero")

layout ``ilsvrc`` (names like ILSVRC-2012, for ``dataset/ILSVRC2012/``)::

    train/n00000003/n00000003_00012.JPEG ...   val/ILSVRC2012_val_00000001.JPEG ...
    train_list.txt  val_list.txt  label_list.txt

The folder is built beside its final place and renamed into it when complete, with a manifest
(``.quickstart_digits.json``) written last; running again over a complete folder with the same
settings does nothing, a folder with other settings is replaced only with ``force``, and a
folder this tool did not make is never touched.
"""

import json
import os
import shutil
import tempfile

import numpy as np
from PIL import Image

from ppcls.utils.errors import ConfigError, DataError

CLASS_NAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
MANIFEST = ".quickstart_digits.json"
LAYOUTS = ("imagenet", "ilsvrc")
NUM_IMAGES = 1797  # load_digits: 1,797 scans, 10 classes


def _load_digits():
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise DataError("scikit-learn is needed for the quickstart data set: "
                        "pip install scikit-learn") from None
    digits = load_digits()
    return digits.images, digits.target.astype(np.int64)


def split_indices(labels, val_fraction, seed):
    """A stratified train/val split of ``range(len(labels))``, each part sorted."""
    from sklearn.model_selection import train_test_split

    train, val = train_test_split(np.arange(len(labels)), test_size=val_fraction,
                                  stratify=labels, random_state=seed)
    return np.sort(train), np.sort(val)


def render(scan, size):
    """One 8x8 scan (values 0..16, 16 = ink) -> an RGB PIL image ``size`` x ``size``."""
    gray = np.rint(255.0 - np.asarray(scan, dtype=np.float64) * (255.0 / 16.0)).astype(np.uint8)
    img = Image.fromarray(gray, "L")
    if size != gray.shape[0]:
        img = img.resize((size, size), Image.Resampling.BICUBIC)
    return img.convert("RGB")


def _relpath(split, index, label, position, layout):
    if layout == "imagenet":
        return f"{split}/{label}/{index:05d}.jpg"
    if split == "train":
        return f"train/n{label:08d}/n{label:08d}_{index:05d}.JPEG"
    return f"val/ILSVRC2012_val_{position + 1:08d}.JPEG"


def _settings(size, val_fraction, seed, layout):
    return {"source": "sklearn.datasets.load_digits", "size": size, "val_fraction": val_fraction,
            "seed": seed, "layout": layout}


def _read_manifest(out):
    try:
        with open(os.path.join(out, MANIFEST), encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _complete(out, manifest):
    """Whether every image named in the list files of ``out`` is there."""
    for name in ("train_list.txt", "val_list.txt", "label_list.txt"):
        if not os.path.isfile(os.path.join(out, name)):
            return False
    count = 0
    for name in ("train_list.txt", "val_list.txt"):
        with open(os.path.join(out, name), encoding="utf-8") as f:
            for line in f:
                if line.strip():
                    count += 1
                    if not os.path.isfile(os.path.join(out, line.rsplit(None, 1)[0])):
                        return False
    return count == manifest.get("train", -1) + manifest.get("val", -1)


def _write_text(path, lines):
    with open(path, "w", encoding="utf-8") as f:
        f.write("".join(f"{line}\n" for line in lines))


def _existing(out, settings, size, force):
    """The summary when ``out`` is already complete with these settings, else None; one
    ``DataError`` when ``out`` is something else (not ours, or other settings without force)."""
    if not os.path.exists(out):
        return None
    if not os.path.isdir(out):
        raise DataError(f"{out} exists and is not a folder")
    manifest = _read_manifest(out)
    if manifest is None:
        if os.listdir(out):
            raise DataError(f"{out} exists and was not made by this tool (no {MANIFEST}); "
                            "remove it or choose another --out")
        return None
    same = {k: manifest.get(k) for k in settings} == settings
    if same and _complete(out, manifest):
        return (f"{out} is already complete ({manifest['train']} train + {manifest['val']} "
                f"val images, {size}x{size}); nothing to do")
    if not same and not force:
        old = ", ".join(f"{k} {manifest.get(k)}" for k in settings if manifest.get(k) != settings[k])
        raise DataError(f"{out} was made with other settings ({old}); pass --force to "
                        "rebuild it or choose another --out")
    return None


def _write_split(tmp, split, indices, images, labels, size, layout, bar):
    """Write one split's images under ``tmp``; returns its list-file lines."""
    lines = []
    for position, index in enumerate(indices):
        label = int(labels[index])
        rel = _relpath(split, int(index), label, position, layout)
        path = os.path.join(tmp, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        render(images[index], size).save(path, "JPEG", quality=95, subsampling=0)
        lines.append(f"{rel} {label}")
        if bar is not None:
            bar.update(1)
    return lines


def prepare_digits(out, size=32, val_fraction=0.2, seed=0, layout="imagenet", force=False,
                   progress=True):
    """Build the folder ``out`` (see the module docstring); returns a one-line summary."""
    if not isinstance(size, int) or size < 8:
        raise ConfigError(f"--size expects an integer >= 8 (the scans are 8x8), got {size!r}")
    if not 0 < val_fraction < 1:
        raise ConfigError(f"--val_fraction expects a number between 0 and 1, got {val_fraction!r}")
    if layout not in LAYOUTS:
        raise ConfigError(f"--layout expects one of {', '.join(LAYOUTS)}, got {layout!r}")
    out = os.path.normpath(out)
    settings = _settings(size, val_fraction, seed, layout)

    done = _existing(out, settings, size, force)
    if done:
        return done
    images, labels = _load_digits()
    train, val = split_indices(labels, val_fraction, seed)
    parent = os.path.dirname(os.path.abspath(out))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(out)}.tmp-", dir=parent)
    try:
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=len(train) + len(val), desc=f"writing {os.path.basename(out)}",
                       unit="img")
        lists = {split: _write_split(tmp, split, indices, images, labels, size, layout, bar)
                 for split, indices in (("train", train), ("val", val))}
        if bar is not None:
            bar.close()
        _write_text(os.path.join(tmp, "train_list.txt"), lists["train"])
        _write_text(os.path.join(tmp, "val_list.txt"), lists["val"])
        _write_text(os.path.join(tmp, "label_list.txt"),
                    [f"{i} {name}" for i, name in enumerate(CLASS_NAMES)])
        manifest = dict(settings, train=len(train), val=len(val), classes=len(CLASS_NAMES))
        _write_text(os.path.join(tmp, MANIFEST), [json.dumps(manifest, indent=1)])
        os.chmod(tmp, 0o755)
        if os.path.exists(out):
            old = tempfile.mkdtemp(prefix=f".{os.path.basename(out)}.old-", dir=parent)
            os.rename(out, os.path.join(old, "data"))
            os.rename(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return (f"wrote {len(train)} train + {len(val)} val images ({len(CLASS_NAMES)} classes, "
            f"{size}x{size}, layout {layout}) to {out}")
