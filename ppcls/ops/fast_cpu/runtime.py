"""Process-wide state of the fast CPU path: whether its operators loaded, and its threads.

Loading happens once per process. Where it cannot work (no compiler, a failed build, the
switch turned off by ``PPCLS_FAST_CPU=0``), callers get ``False`` and Paddle's own kernels
are used; a missing compiler or a failed build is reported by exactly one warning per
process.
"""

import os
import warnings

ENV_SWITCH = "PPCLS_FAST_CPU"  # "0" turns the fast CPU path off everywhere

_state = {"loaded": None, "error": None, "threads": None, "malloc_kept": False}


class FastCPUWarning(UserWarning):
    """The fast CPU path is unavailable; Paddle's own (slower) kernels are used instead."""


def disabled_by_env():
    from ppcls.utils.native_build import switched_off

    return switched_off(ENV_SWITCH)


def load():
    """Build/load the operators once; True when they are usable."""
    if _state["loaded"] is None:
        from ppcls.ops.fast_cpu.build import BuildError, load_library

        try:
            load_library()
            _state["loaded"] = True
        except BuildError as err:
            _state["loaded"] = False
            _state["error"] = str(err)
            warnings.warn(
                f"fast CPU training path unavailable, using Paddle's own kernels (slower): {err}. "
                f"Set {ENV_SWITCH}=0 or Global.fast_cpu=False to silence this.",
                FastCPUWarning, stacklevel=3)
    return _state["loaded"]


def run_op(name, *args):
    """Run the registered custom operator ``name`` on ``args`` plus the thread count; return
    its outputs (a list). The one place that calls Paddle's private custom-op entry point,
    so a Paddle upgrade that renames it is a one-line change here."""
    from paddle import _C_ops

    return _C_ops._run_custom_op(name, *args, threads())


def last_error():
    return _state["error"]


def default_threads():
    """The CPUs this process may run on. (Not OMP_NUM_THREADS: importing Paddle sets it to 1.)"""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def set_threads(n=None):
    """Threads for the fast operators and for Paddle's own CPU math (GEMM in the 1x1 convs)."""
    n = int(n) if n else default_threads()
    _state["threads"] = max(1, n)
    from paddle.base import core

    if hasattr(core, "set_num_threads"):
        core.set_num_threads(_state["threads"])
    return _state["threads"]


def threads():
    if _state["threads"] is None:
        return set_threads()
    return _state["threads"]


def keep_freed_memory():
    """Let glibc keep freed memory for reuse instead of returning it to the OS.

    Paddle's CPU allocator takes every tensor from ``malloc``; glibc serves large blocks
    with fresh ``mmap``s and unmaps them on ``free``, so each training step touches all its
    activation memory for the first time again, and a page fault per 4 KiB page costs more
    than the arithmetic (on this project's 2-core VM, writing fresh memory runs at ~0.8 GB/s,
    reused memory at ~38 GB/s). ``mallopt(M_MMAP_MAX, 0)`` and an unbounded
    ``M_TRIM_THRESHOLD`` keep those blocks in the heap, so step 2 onward reuses them: the
    process keeps its peak memory. No effect on numbers. Returns whether it was applied
    (glibc only; once per process).
    """
    if _state["malloc_kept"]:
        return True
    import ctypes
    import platform

    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    m_trim_threshold, m_mmap_max = -1, -4  # <malloc.h>
    ok = libc.mallopt(m_mmap_max, 0) == 1 and libc.mallopt(m_trim_threshold, 2**31 - 1) == 1
    _state["malloc_kept"] = ok
    return ok
