"""The one SHA-256 of a file that checkpoints, exports, the TensorRT and export caches and the
fast-kernel build all record and check."""

import hashlib


def file_sha256(path):
    """The SHA-256 hex digest of the file at ``path``, read in 1 MB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


__all__ = ["file_sha256"]
