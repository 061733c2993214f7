"""Native code compiled once per machine and kept in a cache: what the fast CPU kernels
(``ppcls.ops.fast_cpu``) and the training reader's JPEG helper (``ppcls.data.preprocess.native``)
share.

``cached_library(root, key, relpath, compile_into, hint)`` returns the path of a library built
into ``root/key`` - ``key`` names everything that changes the binary (source text, flags,
compiler, CPU) - compiling it first when it is missing:

- one build at a time per cache (a lock file): processes started together (ranks, loader
  workers, test workers) wait for the first one's build instead of compiling side by side;
- the build goes to a private temporary folder renamed into place when complete, so nobody ever
  loads half a build;
- the build records the library's SHA-256 beside it and every load checks it first: a truncated
  or damaged library is refused (and removed, for the next run to rebuild) instead of crashing
  the process inside the dynamic loader, where nothing can catch it.

Every failure is a ``BuildError`` whose message says what to do.
"""

import os
import platform
import shutil
import tempfile

from ppcls.utils.hashing import file_sha256


class BuildError(RuntimeError):
    """Native code could not be compiled or loaded (the message says why)."""


def cache_dir(env_var, name):
    """``$env_var`` if set, else ``$XDG_CACHE_HOME/ppcls/<name>``, else ``~/.cache/ppcls/<name>``."""
    root = os.environ.get(env_var)
    if not root:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        root = os.path.join(base, "ppcls", name)
    return root


def switched_off(env_var):
    """Whether the environment variable ``env_var`` turns a native path off (0, false, off, no)."""
    return os.environ.get(env_var, "1").strip().lower() in ("0", "false", "off", "no")


def cpu_flags():
    """The CPU's instruction-set flags (part of a cache key for code built with -march=native)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _hash_path(lib):
    return lib + ".sha256"


def _compile(final_dir, relpath, compile_into):
    """``compile_into(folder)`` in a temporary sibling of ``final_dir``, then renamed into place."""
    parent = os.path.dirname(final_dir)
    os.makedirs(parent, exist_ok=True)
    work = tempfile.mkdtemp(prefix=os.path.basename(final_dir) + ".build-", dir=parent)
    try:
        compile_into(work)
        built = os.path.join(work, relpath)
        if not os.path.isfile(built):
            raise BuildError(f"the build wrote no {relpath}")
        with open(_hash_path(built), "w", encoding="ascii") as f:
            f.write(file_sha256(built) + "\n")
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    try:
        os.rename(work, final_dir)
    except OSError:
        shutil.rmtree(work, ignore_errors=True)  # another process finished first: use its build
        if not os.path.isfile(os.path.join(final_dir, relpath)):
            raise BuildError(f"could not move the build into {final_dir}") from None


def _build_once(root, final_dir, lib, relpath, compile_into):
    """Compile into ``final_dir`` unless another process already did (one build per cache)."""
    os.makedirs(root, exist_ok=True)
    with open(os.path.join(root, ".build.lock"), "w") as lock:
        try:
            import fcntl

            fcntl.flock(lock, fcntl.LOCK_EX)
        except (ImportError, OSError):
            pass  # no flock here: concurrent builds are still safe, only slower
        if not os.path.isfile(lib):
            _compile(final_dir, relpath, compile_into)


def _verify(lib, final_dir):
    """Refuse a cached library whose bytes differ from what its build wrote (and remove it)."""
    try:
        with open(_hash_path(lib), encoding="ascii") as f:
            recorded = f.read().strip()
        actual = file_sha256(lib)
    except (OSError, UnicodeDecodeError) as err:
        raise BuildError(f"cannot check the cached build {final_dir}: "
                         f"{getattr(err, 'strerror', None) or err}") from None
    if actual != recorded:
        shutil.rmtree(final_dir, ignore_errors=True)
        raise BuildError(f"the cached library {lib} is corrupt (its SHA-256 differs from the one "
                         "recorded when it was built); removed it, the next run rebuilds it")


def cached_library(root, key, relpath, compile_into, hint):
    """The path of the checked library ``root/key/relpath``, built by ``compile_into(folder)``
    (which writes ``folder/relpath`` or raises ``BuildError``) when missing. ``hint``: the
    environment variable that moves the cache, named when the cache cannot be written."""
    final_dir = os.path.join(root, key)
    lib = os.path.join(final_dir, relpath)
    try:
        if not os.path.isfile(lib):
            _build_once(root, final_dir, lib, relpath, compile_into)
    except OSError as err:  # read-only cache, a file where the folder should be, disk full
        where = f" ({err.filename})" if err.filename else ""
        raise BuildError(f"cannot use the build cache {root}: {err.strerror or err}{where} "
                         f"(set {hint} to a writable folder)") from None
    _verify(lib, final_dir)
    return lib


__all__ = ["BuildError", "cache_dir", "cached_library", "cpu_flags", "switched_off"]
