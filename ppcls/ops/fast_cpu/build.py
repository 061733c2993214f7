"""Compile (once) and load the fast CPU operators in ``csrc/``.

The library is built with ``paddle.utils.cpp_extension.load`` into a cache directory keyed
by everything that changes the binary: the source text, the compiler flags, the Paddle
version, the Python ABI and the CPU's instruction-set flags (the code is built with
``-march=native``). Later processes find the finished library there and only register its
operators (milliseconds). The cache (one build at a time, renamed into place when complete,
its SHA-256 checked at every load) is ``ppcls.utils.native_build``'s.

Cache root: ``$PPCLS_FAST_CPU_CACHE``, else ``$XDG_CACHE_HOME/ppcls/fast_cpu``, else
``~/.cache/ppcls/fast_cpu``.
"""

import hashlib
import os
import platform
import shutil
import subprocess
import sys

from ppcls.utils.native_build import BuildError, cache_dir, cached_library, cpu_flags

SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "csrc", "fast_cpu_ops.cc")
LIB_NAME = "ppcls_fast_cpu_ops"
CXX_FLAGS = ["-O3", "-march=native", "-fopenmp"]
# The OpenMP runtime Paddle and its MKL already use (one thread pool), and the oneDNN
# library Paddle ships (its sgemm is the pointwise convolution).
LD_FLAGS = ["-l:libiomp5.so", "-l:libdnnl.so.3"]
# Bumped when the cache layout changes (2: a SHA-256 of the library is stored beside it).
CACHE_FORMAT = 2
OP_NAMES = ("fast_dwconv3x3", "fast_bn_act_train", "fast_conv1x1")


def cache_root():
    return cache_dir("PPCLS_FAST_CPU_CACHE", "fast_cpu")


def build_key():
    import paddle

    h = hashlib.sha256()
    with open(SOURCE, "rb") as f:
        h.update(f.read())
    for part in (CXX_FLAGS, LD_FLAGS, [CACHE_FORMAT, paddle.__version__, sys.version, platform.machine(),
                                       cpu_flags(), os.environ.get("CXX", "")]):
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


def _compile_into(work):
    """Paddle's extension builder, in a child process, into ``work``."""
    if find_compiler() is None:
        raise BuildError("no C++ compiler found (install g++, or set CXX)")
    log_path = os.path.join(work, "build.log")
    with open(log_path, "wb") as log:
        proc = subprocess.run(
            [sys.executable, "-c", _BUILD_SCRIPT, SOURCE, work, " ".join(CXX_FLAGS),
             " ".join(LD_FLAGS)], stdout=log, stderr=subprocess.STDOUT, check=False)
    if proc.returncode != 0 or not os.path.isfile(_library_path(work)):
        with open(log_path, encoding="utf-8", errors="replace") as f:
            errors = [ln.strip() for ln in f if "error" in ln.lower()]
        detail = errors[0][:300] if errors else f"exit code {proc.returncode}"
        raise BuildError(f"compiling {SOURCE} failed: {detail}")


def load_library():
    """Compile if needed, check the library's recorded hash, register the operators, return
    the library path.

    Raises ``BuildError`` (naming the cache) when there is no compiler, the build fails, the
    cache cannot be written or the cached library is corrupt.
    """
    from paddle.utils.cpp_extension import load_op_meta_info_and_register_op

    if not os.path.isfile(SOURCE):
        raise BuildError(f"{SOURCE} is missing from this installation")
    lib = cached_library(cache_root(), build_key(), _library_path(""), _compile_into, "PPCLS_FAST_CPU_CACHE")
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
