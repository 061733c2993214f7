"""Run a tool (``python tests/pause_run.py tools/train.py -c ... -o ...``) with test-only pauses
patched into the training process, so a test can kill it at a known point. Production code
has no such switch; this wrapper patches ``ppcls`` in the process, then runs the tool unchanged.

- ``PPCLS_TEST_SAVE_PAUSE=<stage>[@<n>]``: pause at ``stage`` of the n-th checkpoint save of the
  process (default the 1st): ``write`` (half-way through writing a prefix's first file),
  ``before_commit`` (every file written to its temp name) or ``after_commit`` (the commit
  record renamed and the first file in place). The process writes ``.paused-<stage>`` in the
  checkpoint's folder and waits while that file exists.
- ``PPCLS_TRACE_HOLD=<rank>:<n>`` (with ``PPCLS_TRACE_DIR``): that rank, after its n-th trace
  record, writes ``hold.rank<R>`` beside the trace and waits while the file exists.
"""

import os
import runpy
import sys
import time

from ppcls.engine import checkpoint, hooks

_SAVES = [0]


def _wait_on(marker):
    with open(marker, "w") as f:
        f.write(str(os.getpid()))
    while os.path.exists(marker):
        time.sleep(0.2)


def _pause(stage, folder):
    name, _, nth = os.environ.get("PPCLS_TEST_SAVE_PAUSE", "").partition("@")
    if name == stage and _SAVES[0] == int(nth or 1):
        _wait_on(os.path.join(folder, f".paused-{stage}"))


def _patch_saves():
    real_save, real_uncommitted = checkpoint.save_checkpoint, checkpoint._write_uncommitted
    real_write, real_replace = checkpoint._write_file, os.replace

    def save_checkpoint(*args, **kwargs):
        _SAVES[0] += 1
        return real_save(*args, **kwargs)

    def write_file(path, data):
        if not path.endswith(".pdparams.tmp"):  # a prefix's first file
            return real_write(path, data)
        with open(path, "wb") as f:
            f.write(data[: len(data) // 2])
            f.flush()
            _pause("write", os.path.dirname(path))
            f.write(data[len(data) // 2:])
            f.flush()
            os.fsync(f.fileno())

    def write_uncommitted(prefix, *args):
        real_uncommitted(prefix, *args)
        _pause("before_commit", os.path.dirname(os.path.abspath(prefix)))

    def replace(src, dst, **kwargs):
        real_replace(src, dst, **kwargs)
        dst = os.fspath(dst)
        if dst.endswith(".pdparams") and os.path.exists(dst[: -len(".pdparams")] + checkpoint.COMMIT_SUFFIX):
            _pause("after_commit", os.path.dirname(os.path.abspath(dst)))

    checkpoint.save_checkpoint, checkpoint._write_file = save_checkpoint, write_file
    checkpoint._write_uncommitted, os.replace = write_uncommitted, replace


def _patch_trace():
    rank, nth = (int(v) for v in os.environ["PPCLS_TRACE_HOLD"].split(":"))
    real_after_step = hooks.TraceHook.after_step

    def after_step(self, engine, step):
        real_after_step(self, engine, step)
        if (engine.rank, self.written) == (rank, nth):
            _wait_on(os.path.join(self.folder, f"hold.rank{engine.rank}"))

    hooks.TraceHook.after_step = after_step


if __name__ == "__main__":
    if os.environ.get("PPCLS_TEST_SAVE_PAUSE"):
        _patch_saves()
    if os.environ.get("PPCLS_TRACE_HOLD"):
        _patch_trace()
    sys.argv = sys.argv[1:]
    runpy.run_path(sys.argv[0], run_name="__main__")
