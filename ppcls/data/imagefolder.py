"""``dataset.name: ImageFolder``: a folder with one sub-folder per class, no list file.

::

    DataLoader:
      Train:
        dataset:
          name: ImageFolder
          image_root: ./dataset/my_photos/train/     # train/cat/1.jpg, train/dog/7.png, ...
          transform_ops: [...]                       # as ImageNetDataset's

The classes are the sub-folders of ``image_root`` in sorted order (class id 0 is the first);
each one's images are every file with an image suffix under it (recursively, sorted). The
class list is written as a PaddleClas label file (``0 cat`` per line, what
``Infer.PostProcess.class_id_map_file`` and predict_cls read) to ``label_list_path``, by
default ``<image_root>/label_list.txt``.

When ``label_list_path`` already exists, its class ids are used and every sub-folder must be
named in it: point the Eval section at the Train section's file so that a validation folder
missing a class still gets the training ids. A sub-folder the file does not name is an error
(delete the file to rebuild it from the folders).

Everything else (the checks, decoding, the ops, the seeded augmentation, bad-image handling)
is ``ImageNetDataset``'s: the folder walk produces the list it would read from a file.
"""

import os
import tempfile

from ppcls.utils.errors import ConfigError, DataError

from .dataset import DATASETS, ImageNetDataset

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm",
                  ".pbm", ".gif")
LABEL_LIST = "label_list.txt"


def find_classes(image_root):
    """The sorted sub-folder names of ``image_root`` (hidden ones left out)."""
    if not os.path.isdir(image_root):
        raise DataError(f"ImageFolder: image_root is not a folder: {image_root}")
    classes = sorted(entry.name for entry in os.scandir(image_root)
                     if entry.is_dir() and not entry.name.startswith("."))
    if not classes:
        raise DataError(f"ImageFolder: {image_root} has no sub-folders; expected one sub-folder "
                        "of images per class (e.g. train/cat/1.jpg, train/dog/2.jpg)")
    return classes


def read_label_list(path):
    """``{class name: id}`` from a PaddleClas label file (``0 cat`` per line)."""
    from ppcls.inference.postprocess import load_class_id_map

    id_to_name = load_class_id_map(path, key="ImageFolder label_list_path")
    return {name: class_id for class_id, name in id_to_name.items()}


def write_label_list(path, classes):
    """Write ``0 <first class>`` ... to ``path`` atomically (temp file, then rename)."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", dir=folder)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.writelines(f"{i} {name}\n" for i, name in enumerate(classes))
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def class_ids(image_root, label_list_path):
    """``{class name: id}`` for ``image_root``: from ``label_list_path`` when it exists (every
    sub-folder must be in it), else the sorted sub-folders, written there."""
    classes = find_classes(image_root)
    if os.path.isfile(label_list_path):
        ids = read_label_list(label_list_path)
        unknown = [c for c in classes if c not in ids]
        if unknown:
            raise DataError(f"ImageFolder: {image_root} has class folder(s) {', '.join(unknown)} "
                            f"that the label list {label_list_path} does not name; delete that "
                            "file to rebuild it from the sub-folders, or name another "
                            "label_list_path")
        return ids
    ids = {name: i for i, name in enumerate(classes)}
    try:
        write_label_list(label_list_path, classes)
    except OSError as err:
        raise DataError(f"ImageFolder: cannot write the label list {label_list_path} "
                        f"({err.strerror or err}); set label_list_path to a writable file") from None
    return ids


def walk_images(image_root, classes):
    """``[(relative path, class name)]``: the image files under each class folder, sorted."""
    samples = []
    for name in classes:
        for root, dirs, files in os.walk(os.path.join(image_root, name)):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            for file in sorted(files):
                if file.lower().endswith(IMAGE_SUFFIXES) and not file.startswith("."):
                    samples.append((os.path.relpath(os.path.join(root, file), image_root), name))
    return samples


@DATASETS.register
class ImageFolder(ImageNetDataset):
    """Config keys: ``image_root`` (one sub-folder per class), ``transform_ops``,
    ``label_list_path`` (default ``<image_root>/label_list.txt``); see the module docstring."""

    def __init__(self, image_root, transform_ops=None, label_list_path=None, *, class_num=None,
                 class_num_key="Arch.class_num", seed=0, where="dataset"):
        if not isinstance(image_root, str) or not image_root:
            raise ConfigError(f"config key '{where}.image_root' expects a folder, got {image_root!r}")
        self.label_list_path = label_list_path or os.path.join(image_root, LABEL_LIST)
        ids = class_ids(image_root, self.label_list_path)
        self.class_names = [name for name, _ in sorted(ids.items(), key=lambda kv: kv[1])]
        if class_num is not None and len(ids) > class_num:
            raise DataError(f"ImageFolder: {image_root} has {len(ids)} classes (label list "
                            f"{self.label_list_path}), but {class_num_key} is {class_num}")
        samples = walk_images(image_root, sorted(set(find_classes(image_root))))
        if not samples:
            raise DataError(f"ImageFolder: no image files under the class folders of {image_root}")
        bad = [rel for rel, _ in samples if "\n" in rel or "\r" in rel or "\t" in rel]
        if bad:
            raise DataError(f"ImageFolder: {os.path.join(image_root, bad[0])}: a file name with a "
                            "tab or line break cannot be listed")
        # The list ImageNetDataset reads (tab-separated: names may hold spaces), in a temp file.
        fd, listing = tempfile.mkstemp(prefix="ppcls_imagefolder_", suffix=".txt")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.writelines(f"{rel}\t{ids[name]}\n" for rel, name in samples)
            super().__init__(image_root, listing, transform_ops, delimiter="\t",
                             class_num=class_num, class_num_key=class_num_key, seed=seed,
                             where=where)
        finally:
            os.remove(listing)
        self.cls_label_path = image_root  # what messages and the loader's log line name
        self.samples = samples

    def describe(self, index):
        return f"{self.images[index]} (class folder {self.samples[index][1]} of ImageFolder " \
               f"{self.image_root})"
