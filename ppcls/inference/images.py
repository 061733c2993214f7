"""Which image files a prediction reads, and reading them so that one bad file is not fatal.

``list_images`` accepts one file or a folder; a folder is walked recursively, sub-folders and
files in sorted order, keeping the files whose suffix is an image suffix (case-insensitive).
``ImageBatches`` loads the files one at a time through a caller's ``load(path)`` function: a
:class:`~ppcls.utils.errors.DataError` (not an image, empty, truncated, too large, ...) is
printed as one ``Error: <file>: <reason>`` line on stderr, the file is skipped, and the other
files are still batched and predicted; ``exit_code()`` then says whether any file failed.
"""

import os
import sys

import numpy as np

from ppcls.utils.errors import ConfigError, DataError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm",
                  ".pbm", ".gif")


def is_image_file(path):
    return path.lower().endswith(IMAGE_SUFFIXES)


def list_images(path, key="infer_imgs"):
    """The image files ``path`` names: itself if it is a file, else its images in sorted order."""
    if not isinstance(path, str) or not path:
        raise ConfigError(f"{key}: expected an image file or a folder of images, got {path!r}")
    if os.path.isfile(path):
        return [path]
    if not os.path.isdir(path):
        raise ConfigError(f"{key}: no such file or folder: {path}")
    found = []
    for root, dirs, files in os.walk(path):
        dirs.sort()
        found.extend(os.path.join(root, name) for name in sorted(files) if is_image_file(name))
    if not found:
        raise ConfigError(f"{key}: folder {path} holds no image files "
                          f"({', '.join('*' + s for s in IMAGE_SUFFIXES)})")
    return found


def naming(path, err):
    """``err`` as one line that names ``path`` (prefixing it when the message does not)."""
    text = " ".join(str(err).split()) or type(err).__name__
    return text if path in text else f"{path}: {text}"


class ImageBatches:
    """Iterate ``(paths, batch)`` over the loadable images of ``paths``; report the others.

    ``load(path)`` returns one preprocessed array (all arrays of a batch must share a shape) or
    raises ``DataError``. ``batch`` is ``np.stack`` of the loaded arrays.
    """

    def __init__(self, paths, load, batch_size=1, stream=None):
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
            raise ConfigError(f"batch_size: expected a positive integer, got {batch_size!r}")
        self.paths = list(paths)
        self.load = load
        self.batch_size = batch_size
        self.stream = stream
        self.failed = []  # (path, one-line reason)

    def _fail(self, path, err):
        reason = naming(path, err)
        self.failed.append((path, reason))
        print(f"Error: {reason}", file=self.stream or sys.stderr, flush=True)

    def _stack(self, names, arrays):
        shapes = {a.shape for a in arrays}
        if len(shapes) > 1:
            raise ConfigError(f"the images of one batch have different shapes after "
                              f"preprocessing ({', '.join(map(str, sorted(shapes)))}: "
                              f"{', '.join(names)}); add a CropImage op or use batch_size=1")
        return np.stack(arrays)

    def __iter__(self):
        names, arrays = [], []
        for path in self.paths:
            try:
                array = self.load(path)
            except DataError as err:
                self._fail(path, err)
                continue
            names.append(path)
            arrays.append(array)
            if len(arrays) == self.batch_size:
                yield names, self._stack(names, arrays)
                names, arrays = [], []
        if arrays:
            yield names, self._stack(names, arrays)

    def exit_code(self):
        """0 when every image was predicted; else 1, after one summary line on stderr."""
        if not self.failed:
            return 0
        print(f"Error: {len(self.failed)} of {len(self.paths)} images could not be read and were "
              f"skipped: {', '.join(p for p, _ in self.failed)}",
              file=self.stream or sys.stderr, flush=True)
        return 1
