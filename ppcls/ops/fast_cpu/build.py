"""Compile (once) and load the fast CPU operators in ``csrc/``.

The library is built with ``paddle.utils.cpp_extension.load`` into a cache directory keyed
by everything that changes the binary: the source text, the compiler flags, the Paddle
version, the Python ABI and the CPU's instruction-set flags (the code is built with
``-march=native``). Later processes find the finished library there and only register its
operators (milliseconds). A lock file makes concurrent first runs (two ranks, two test
workers) wait for one build, and builds go to a private temporary directory renamed into
place when complete, so nobody ever loads half a build. The build records the library's
SHA-256 beside it, and every load checks it first: a truncated or damaged library is
refused (and removed) instead of crashing the process in the dynamic loader.

Cache root: ``$PPCLS_FAST_CPU_CACHE``, else ``$XDG_CACHE_HOME/ppcls/fast_cpu``, else
``~/.cache/ppcls/fast_cpu``.
"""

import hashlib
import os
import platform
import shutil
import subprocess
import sys
import tempfile

from ppcls.utils.hashing import file_sha256

SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "csrc", "fast_cpu_ops.cc")
LIB_NAME = "ppcls_fast_cpu_ops"
CXX_FLAGS = ["-O3", "-march=native", "-fopenmp"]
# The OpenMP runtime Paddle and its MKL already use (one thread pool), and the oneDNN
# library Paddle ships (its sgemm is the pointwise convolution).
LD_FLAGS = ["-l:libiomp5.so", "-l:libdnnl.so.3"]
# Bumped when the cache layout changes (2: a SHA-256 of the library is stored beside it).
CACHE_FORMAT = 2
OP_NAMES = ("fast_dwconv3x3", "fast_bn_act_train", "fast_conv1x1")


class BuildError(RuntimeError):
    """The operators could not be compiled or loaded (the message says why)."""


def cache_root():
    root = os.environ.get("PPCLS_FAST_CPU_CACHE")
    if not root:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        root = os.path.join(base, "ppcls", "fast_cpu")
    return root


def _cpu_flags():
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def build_key():
    import paddle

    h = hashlib.sha256()
    with open(SOURCE, "rb") as f:
        h.update(f.read())
    for part in (CXX_FLAGS, LD_FLAGS, [CACHE_FORMAT, paddle.__version__, sys.version, platform.machine(),
                                       _cpu_flags(), os.environ.get("CXX", "")]):
        h.update(repr(part).encode())
    return h.hexdigest()[:16]


def find_compiler():
    """The C++ compiler a build would use, or None (honours $CXX like setuptools does)."""
    cxx = (os.environ.get("CXX") or "c++").split()
    return shutil.which(cxx[0]) if cxx else None


def _library_path(directory):
    return os.path.join(directory, LIB_NAME, LIB_NAME + ".so")


# Run in a child process: the build's chatter goes to a log, and the parent registers the
# finished library exactly once, whether it was just built or found in the cache.
_BUILD_SCRIPT = """
import sys
from paddle.utils.cpp_extension import load
src, out, cxx, ld = sys.argv[1], sys.argv[2], sys.argv[3].split(), sys.argv[4].split()
load(name=%r, sources=[src], extra_cxx_cflags=cxx, extra_ldflags=ld, build_directory=out,
     verbose=False)
""" % LIB_NAME


def _compile(final_dir):
    """Build into a temporary sibling of ``final_dir``, then rename it into place."""
    if find_compiler() is None:
        raise BuildError("no C++ compiler found (install g++, or set CXX)")
    parent = os.path.dirname(final_dir)
    os.makedirs(parent, exist_ok=True)
    work = tempfile.mkdtemp(prefix=os.path.basename(final_dir) + ".build-", dir=parent)
    log_path = os.path.join(work, "build.log")
    with open(log_path, "wb") as log:
        proc = subprocess.run(
            [sys.executable, "-c", _BUILD_SCRIPT, SOURCE, work, " ".join(CXX_FLAGS),
             " ".join(LD_FLAGS)], stdout=log, stderr=subprocess.STDOUT, check=False)
    if proc.returncode != 0 or not os.path.isfile(_library_path(work)):
        with open(log_path, encoding="utf-8", errors="replace") as f:
            errors = [ln.strip() for ln in f if "error" in ln.lower()]
        shutil.rmtree(work, ignore_errors=True)
        detail = errors[0][:300] if errors else f"exit code {proc.returncode}"
        raise BuildError(f"compiling {SOURCE} failed: {detail}")
    try:
        with open(_hash_path(_library_path(work)), "w", encoding="ascii") as f:
            f.write(file_sha256(_library_path(work)) + "\n")
    except OSError:
        shutil.rmtree(work, ignore_errors=True)
        raise
    try:
        os.rename(work, final_dir)
    except OSError:
        shutil.rmtree(work, ignore_errors=True)  # another process finished first: use its build
        if not os.path.isfile(_library_path(final_dir)):
            raise BuildError(f"could not move the build into {final_dir}") from None


def _hash_path(lib):
    return lib + ".sha256"


def _verify(lib, final_dir):
    """Refuse a cached library whose bytes differ from what the build wrote.

    A truncated or overwritten shared library can crash the process (SIGBUS) inside the
    dynamic loader, where nothing can catch it; the SHA-256 recorded at build time is
    checked first. A corrupt build is removed so that the next run compiles it again.
    """
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


def _build_once(root, final_dir, lib):
    """Compile into ``final_dir`` unless another process already did (one build per cache)."""
    os.makedirs(root, exist_ok=True)
    # One build at a time per cache: processes started together (ranks, test workers)
    # wait for the first one's build instead of compiling the same thing side by side.
    with open(os.path.join(root, ".build.lock"), "w") as lock:
        try:
            import fcntl

            fcntl.flock(lock, fcntl.LOCK_EX)
        except (ImportError, OSError):
            pass  # no flock here: concurrent builds are still safe, only slower
        if not os.path.isfile(lib):
            _compile(final_dir)


def load_library():
    """Compile if needed, check the library's recorded hash, register the operators, return
    the library path.

    Raises ``BuildError`` (naming the cache) when there is no compiler, the build fails, the
    cache cannot be written or the cached library is corrupt.
    """
    from paddle.utils.cpp_extension import load_op_meta_info_and_register_op

    if not os.path.isfile(SOURCE):
        raise BuildError(f"{SOURCE} is missing from this installation")
    root = cache_root()
    final_dir = os.path.join(root, build_key())
    lib = _library_path(final_dir)
    try:
        if not os.path.isfile(lib):
            _build_once(root, final_dir, lib)
    except OSError as err:  # read-only cache, a file where the folder should be, disk full
        where = f" ({err.filename})" if err.filename else ""
        raise BuildError(f"cannot use the build cache {root}: {err.strerror or err}{where} "
                         "(set PPCLS_FAST_CPU_CACHE to a writable folder)") from None
    _verify(lib, final_dir)
    try:
        names = load_op_meta_info_and_register_op(lib)
    except Exception as err:  # noqa: BLE001
        raise BuildError(f"loading {lib} failed: {err}") from None
    missing = set(OP_NAMES) - set(names)
    if missing:
        raise BuildError(f"{lib} does not define {sorted(missing)}")
    return lib


if __name__ == "__main__":
    # ``python -m ppcls.ops.fast_cpu.build``: compile now (e.g. once at the start of a CI job).
    import time

    start = time.time()
    path = load_library()
    print(f"fast CPU operators ready: {path} ({time.time() - start:.1f} s)")
