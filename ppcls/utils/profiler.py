"""``-p/--profiler_options`` of the tools: PaddleClas's option string, run on ``paddle.profiler``.

The string is PaddleClas's (and TIPC's ``--profiler_options:`` line), ``key=value`` pairs
separated by ``;``::

    batch_range=[10,20];state=GPU;tracer_option=Default;profile_path=model.profile

- ``batch_range=[a,b]``: profile training iterations a..b-1 (counted over the whole run);
- ``state``: ``CPU``, ``GPU`` or ``All`` (GPU is only recorded on a CUDA build);
- ``profile_path``: where the trace goes (a Chrome trace in the folder ``<profile_path>.d``
  beside it, written by ``paddle.profiler.export_chrome_tracing``);
- ``exit_on_finished`` (default True, as PaddleClas): stop the process once the range is done;
- ``sorted_key``, ``tracer_option``, ``timer_only``: accepted; ``paddle.profiler`` has no
  equivalent switch for the first two, ``timer_only=True`` records only step timings.

``configure(text)`` is called once by a tool; the engine calls :func:`step` after every
training iteration (a no-op without options).
"""

import os
import sys

from ppcls.utils.errors import ConfigError

KEYS = {"batch_range", "state", "sorted_key", "tracer_option", "profile_path",
        "exit_on_finished", "timer_only"}
_STATE = {"options": None, "profiler": None, "step": 0, "done": False}


def parse(text):
    """The option string -> a dict with every key filled in; one ``ConfigError`` if malformed."""
    opts = {"batch_range": [10, 20], "state": "All", "sorted_key": "total",
            "tracer_option": "Default", "profile_path": "/tmp/profile",
            "exit_on_finished": True, "timer_only": False}
    for item in str(text).replace(" ", "").split(";"):
        if not item:
            continue
        key, sep, value = item.partition("=")
        if not sep or key not in KEYS:
            raise ConfigError(f"--profiler_options: {item!r} is not key=value with a key of "
                              f"{', '.join(sorted(KEYS))}")
        if key == "batch_range":
            try:
                lo, hi = (int(v) for v in value.strip("[]").split(","))
            except ValueError:
                raise ConfigError(f"--profiler_options: batch_range expects [start,end], "
                                  f"got {value!r}") from None
            if not 0 <= lo < hi:
                raise ConfigError(f"--profiler_options: batch_range needs 0 <= start < end, "
                                  f"got {value!r}")
            opts[key] = [lo, hi]
        elif key in ("exit_on_finished", "timer_only"):
            opts[key] = value.lower() in ("1", "true", "yes")
        elif key == "state":
            if value.upper() not in ("CPU", "GPU", "ALL"):
                raise ConfigError(f"--profiler_options: state expects CPU, GPU or All, got {value!r}")
            opts[key] = value
        else:
            opts[key] = value
    return opts


def configure(text):
    """Set the options for this process (``None`` or ``""``: no profiling)."""
    _STATE.update(options=parse(text) if text else None, profiler=None, step=0, done=False)
    return _STATE["options"]


def _start(opts):
    import paddle
    import paddle.profiler as pp

    targets = [pp.ProfilerTarget.CPU]
    if opts["state"].upper() in ("GPU", "ALL") and paddle.is_compiled_with_cuda():
        targets.append(pp.ProfilerTarget.GPU)
    lo, hi = opts["batch_range"]
    trace_dir = opts["profile_path"] + ".d"
    prof = pp.Profiler(targets=targets, scheduler=(lo, hi), timer_only=opts["timer_only"],
                       on_trace_ready=pp.export_chrome_tracing(trace_dir))
    prof.start()
    return prof


def step():
    """One training iteration done: advance the profiler; after the range, summary (and exit)."""
    opts = _STATE["options"]
    if opts is None or _STATE["done"]:
        return
    if _STATE["profiler"] is None:
        _STATE["profiler"] = _start(opts)
    _STATE["step"] += 1
    _STATE["profiler"].step()
    if _STATE["step"] >= opts["batch_range"][1]:
        from ppcls.utils import logger

        prof = _STATE["profiler"]
        prof.stop()
        _STATE["done"] = True
        if not opts["timer_only"]:
            prof.summary()
        logger.info(f"[Profiler] iterations {opts['batch_range'][0]}..{opts['batch_range'][1] - 1} "
                    f"profiled; trace in {os.path.abspath(opts['profile_path'] + '.d')}")
        if opts["exit_on_finished"]:
            sys.exit(0)


__all__ = ["parse", "configure", "step"]
