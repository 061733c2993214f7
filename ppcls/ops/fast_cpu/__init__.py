"""The fast CPU training path: own C++ kernels for MobileNeXt's slow spots on CPU.

Paddle's CPU kernels spend most of a MobileNeXt training step in the depthwise 3x3
convolutions (one thread, a generic grouped loop), in the 1x1 convolutions (per-sample GEMM
on a math library that runs far below this CPU's peak) and in batch norm + ReLU6. This
package compiles (once, cached) a depthwise 3x3 convolution, a 1x1 convolution on oneDNN's
sgemm and a fused training batch norm + ReLU6, multi-threaded, with their gradients, and
switches a model's layers onto them. Enabling it also uses all available cores for Paddle's
own CPU math and keeps freed memory in the process for reuse (see ``runtime``):

    from ppcls.ops import fast_cpu
    fast_cpu.enable(model)          # -> number of layers switched (0: not available)
    fast_cpu.disable(model)         # back to Paddle's kernels

The switch changes no parameter, name or number: gradients equal Paddle's to float
rounding (tests/ops/test_fast_cpu.py). It is on by default for CPU training
(``Global.fast_cpu: True``); ``Global.fast_cpu: False`` or the environment variable
``PPCLS_FAST_CPU=0`` turn it off. Without a C++ compiler, or if the build fails, there is
one warning and Paddle's kernels are used. GPU tensors always use Paddle's kernels.
"""

from ppcls.ops.fast_cpu import runtime
from ppcls.ops.fast_cpu.layers import (FastBatchNorm, FastDepthwiseConv3x3, FastPointwiseConv, FusedReLU6,
                                        convert, revert)
from ppcls.ops.fast_cpu.runtime import ENV_SWITCH, FastCPUWarning, set_threads
from ppcls.utils.global_config import section_value


def wanted(global_config=None, device="cpu"):
    """Whether the fast path should be on for this config and device."""
    global_config = global_config or {}
    if runtime.disabled_by_env() or not section_value(global_config, "fast_cpu"):
        return False
    return str(global_config.get("device", device) or device).lower().startswith("cpu")


def enable(model, threads=None):
    """Switch ``model`` onto the fast CPU layers; return how many layers were switched.

    Returns 0 (after one warning per process) when the operators cannot be built, and 0
    silently when ``PPCLS_FAST_CPU=0``. ``threads`` (default: the CPUs available) is used by
    the fast operators and by Paddle's own CPU math.
    """
    if runtime.disabled_by_env() or not runtime.load():
        return 0
    set_threads(threads)
    runtime.keep_freed_memory()
    return convert(model)


def disable(model):
    """Switch every fast layer of ``model`` back to Paddle's kernels; return how many."""
    return revert(model)


def setup(model, global_config=None, device="cpu", amp=False, world_size=1):
    """What the engine calls after building the model: ``enable`` when ``wanted``.

    Off under AMP (the kernels are float32; AMP keeps Paddle's own) and under
    ``Global.to_static`` (one log line: the graph uses Paddle's kernels). Threads:
    ``Global.cpu_num_threads``, else the available CPUs shared among ``world_size``
    processes. Logs one line saying what it did; returns the number of layers switched.
    """
    from ppcls.utils import logger

    global_config = global_config or {}
    if amp or not wanted(global_config, device):
        return 0
    if global_config.get("to_static"):
        # The kernels are dygraph-only custom ops; paddle.jit.to_static cannot trace them.
        logger.info("Global.fast_cpu is off under Global.to_static: the graph uses Paddle's kernels")
        return 0
    threads = global_config.get("cpu_num_threads") or max(1, runtime.default_threads() // max(1, world_size))
    count = enable(model, threads)
    if count:
        logger.info(f"Global.fast_cpu: {count} layers on the fast CPU kernels, {runtime.threads()} "
                    f"threads (Global.fast_cpu=False or {ENV_SWITCH}=0 turns this off)")
    return count


__all__ = ["ENV_SWITCH", "FastBatchNorm", "FastCPUWarning", "FastDepthwiseConv3x3", "FastPointwiseConv",
           "FusedReLU6",
           "disable", "enable", "set_threads", "setup", "wanted"]
