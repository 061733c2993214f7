"""Output folders are protected and write failures are one line (issue 12, items 3, 4, 6, 10):

- a second training into a folder in use is refused, naming the holder; the first goes on;
- a fresh run moves an earlier run aside instead of overwriting its best_model and train.log;
  a stale lock of a dead process is taken over;
- a full disk during a save: one line naming the file, the previous checkpoint intact, no
  temporary files left, the resume works once space is freed; a resume on a full disk gives
  one warning for the log file instead of a traceback per log line, and leaves no config
  temp file;
- a read-only output folder: one line in train and eval;
- SIGTERM: one line, exit 143, nothing partial.

Disk full and read-only are simulated by a wrapper script (``fs_fault.py``, written to the
test's tmp folder) that patches ``open``/``os.open``/``os.mkdir`` in the training process for
paths under one folder, then runs the tool unchanged.
"""

import glob
import hashlib
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from helpers import (EVAL, QUICKSTART, ROOT, TRAIN, command, env, load_params, paused,
                               run, run_ok, tiny_data, tiny_overrides)  # noqa: F401

ARCH = "MobileNeXt_x0_35"

FAULT_SCRIPT = r'''
import builtins, errno, os, runpy, sys

KIND, PREFIX, TRIGGER = os.environ["PPCLS_FS_FAULT"].split("|")
PREFIX = os.path.abspath(PREFIX)
CODE = {"enospc": errno.ENOSPC, "erofs": errno.EROFS}[KIND]


def _under(path):
    try:
        return os.path.abspath(os.fspath(path)).startswith(PREFIX)
    except TypeError:
        return False


def _active(path):
    return _under(path) and (not TRIGGER or os.path.exists(TRIGGER))


def _fail(path):
    raise OSError(CODE, os.strerror(CODE), os.fspath(path))


class _Full:
    """A file on a full disk: opening works, writing does not."""

    def __init__(self, f, path):
        self._f, self._path = f, path

    def write(self, data):
        if _active(self._path):  # (the disk may fill up after the file was opened)
            _fail(self._path)
        return self._f.write(data)

    def __getattr__(self, name):
        return getattr(self._f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._f.close()

    def __iter__(self):
        return iter(self._f)


_open, _os_open, _fdopen, _mkdir = builtins.open, os.open, os.fdopen, os.mkdir


def fault_open(file, mode="r", *args, **kwargs):
    writing = any(c in mode for c in "wax+")
    if writing and KIND == "erofs" and _active(file):
        _fail(file)
    if writing and _under(file):
        return _Full(_open(file, mode, *args, **kwargs), file)
    return _open(file, mode, *args, **kwargs)


_written_fds = {}  # fd -> path of files os.open'ed for writing under PREFIX (for os.fdopen)


def fault_os_open(path, flags, *args, **kwargs):
    writing = flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT)
    if KIND == "erofs" and writing and _active(path):
        _fail(path)
    fd = _os_open(path, flags, *args, **kwargs)
    if writing and _under(path):
        _written_fds[fd] = path
    return fd


def fault_fdopen(fd, *args, **kwargs):  # the log file: os.open(O_NOFOLLOW), then os.fdopen
    f = _fdopen(fd, *args, **kwargs)
    path = _written_fds.pop(fd, None)
    return _Full(f, path) if path is not None else f


def fault_mkdir(path, *args, **kwargs):
    if KIND == "erofs" and _active(path):
        _fail(path)
    return _mkdir(path, *args, **kwargs)


builtins.open, os.open, os.fdopen, os.mkdir = fault_open, fault_os_open, fault_fdopen, fault_mkdir
tool = sys.argv[1]
sys.argv = sys.argv[1:]
sys.path.insert(0, os.path.dirname(tool))
runpy.run_path(tool, run_name="__main__")
'''


def _fault_cmd(tmp_path, tool, overrides):
    script = tmp_path / "fs_fault.py"
    script.write_text(FAULT_SCRIPT)
    return [sys.executable, str(script)] + command(tool, QUICKSTART, overrides)[1:]


def _sha(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def _one_error_line(proc):
    errors = [line for line in proc.stderr.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr + proc.stdout, proc.stderr[-3000:]
    return errors[0]


def _wait_for(predicate, proc, what, timeout=240):
    deadline = time.time() + timeout
    while not predicate():
        assert proc.poll() is None, f"training ended before {what}:\n{proc.stdout.read()[-3000:]}"
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


# --------------------------------------------------------------------------- item 3


@pytest.fixture(scope="module")
def shared_dir(tiny_data, tmp_path_factory):
    """A 1-epoch run A into a folder, with a second training B started while A runs."""
    root, _, _ = tiny_data
    out = str(tmp_path_factory.mktemp("outputs") / "shared")
    run_dir = os.path.join(out, ARCH)
    a = subprocess.Popen(paused(command(TRAIN, QUICKSTART, tiny_overrides(root, out, epochs=1))), cwd=ROOT,
                         env=env(PPCLS_TEST_SAVE_PAUSE="before_commit@1"),
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    marker = os.path.join(run_dir, ".paused-before_commit")
    _wait_for(lambda: os.path.exists(marker), a, "the save pause")
    b = run(command(TRAIN, QUICKSTART, tiny_overrides(root, out, epochs=1, seed=8)))
    deadline = time.time() + 300
    while a.poll() is None and time.time() < deadline:  # A goes on (it pauses once a prefix)
        if os.path.exists(marker):
            os.remove(marker)
        time.sleep(0.2)
    a_out, _ = a.communicate(timeout=60)
    return root, out, a, a_out, b


def test_a_second_training_into_a_folder_in_use_is_refused_naming_the_holder(shared_dir):
    root, out, a, a_out, b = shared_dir
    assert b.returncode == 2
    line = _one_error_line(b)
    assert f"pid {a.pid}" in line and "in use by another training" in line, line
    # A was not disturbed: it finished, its log and config are its own, its checkpoint loads.
    assert a.returncode == 0, a_out[-3000:]
    run_dir = os.path.join(out, ARCH)
    with open(os.path.join(run_dir, "train.log")) as f:
        log = f.read()
    assert "seed: 8" not in log and "in use" not in log
    assert "seed: 7" in open(os.path.join(run_dir, "config.yaml")).read()
    assert load_params(os.path.join(run_dir, "latest"))[1]["pdstates"]["epoch"] == 1
    assert not glob.glob(os.path.join(out, "*.lock")) and not glob.glob(os.path.join(out, ".*.lock"))
    assert sorted(os.listdir(out)) == [ARCH]  # B moved nothing aside


def test_a_fresh_run_moves_the_earlier_run_aside_and_takes_over_a_stale_lock(shared_dir):
    root, out, a, _, _ = shared_dir
    run_dir = os.path.join(out, ARCH)
    before = {name: _sha(os.path.join(run_dir, name))
              for name in ("best_model.pdparams", "latest.pdparams", "train.log", "config.yaml")}
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    with open(os.path.join(out, f".{ARCH}.lock"), "w") as f:
        json.dump({"pid": dead.pid, "host": os.uname().nodename, "start": time.time() - 60}, f)
    proc = run_ok(command(TRAIN, QUICKSTART, tiny_overrides(root, out, epochs=1, seed=9)))
    moved = [d for d in os.listdir(out) if d.startswith(ARCH + ".")]
    assert len(moved) == 1, os.listdir(out)
    old = os.path.join(out, moved[0])
    assert {name: _sha(os.path.join(old, name)) for name in before} == before  # untouched
    assert f"pid {dead.pid}" in proc.stdout and "stale lock" in proc.stdout
    assert f"moved it to {old}" in proc.stdout
    with open(os.path.join(run_dir, "train.log")) as f:
        new_log = f.read()
    assert new_log.count("[Train][Epoch 1/1][Avg]") == 1  # the new run's log only
    assert "seed: 9" in open(os.path.join(run_dir, "config.yaml")).read()
    # A resumed run continues in place: nothing is moved.
    run_ok(command(TRAIN, QUICKSTART, tiny_overrides(
        root, out, epochs=1, checkpoints=os.path.join(run_dir, "latest"))))
    assert len([d for d in os.listdir(out) if d.startswith(ARCH + ".")]) == 1


# --------------------------------------------------------------------------- items 4 and 6


def test_disk_full_during_a_save_is_one_line_and_the_resume_works_once_space_is_freed(
        tiny_data, tmp_path):
    root, _, _ = tiny_data
    out = str(tmp_path / "out")
    run_dir = os.path.join(out, ARCH)
    latest = os.path.join(run_dir, "latest")
    # The disk fills up once the epoch-1 checkpoint is written.
    fault = f"enospc|{run_dir}|{latest}.pdstates"
    overrides = tiny_overrides(root, out, epochs=2, save_interval=0)
    proc = run(_fault_cmd(tmp_path, TRAIN, overrides), PPCLS_FS_FAULT=fault)
    assert proc.returncode == 2, proc.stderr[-3000:]
    line = _one_error_line(proc)
    assert "No space left on device" in line and f"{run_dir}/." in line and ".tmp" in line, line
    assert f"the previous checkpoint {run_dir}/" in line and "is intact; temporary files removed" in line
    assert "Logging error" not in proc.stderr
    assert proc.stderr.count(f"cannot write the log file {run_dir}/train.log") == 1
    assert not [f for f in os.listdir(run_dir) if ".tmp" in f], os.listdir(run_dir)
    assert load_params(latest)[1]["pdstates"]["epoch"] == 1

    # Resume while the disk is still full: one warning for the log, one error line, no debris.
    resume = tiny_overrides(root, out, epochs=2, save_interval=0, checkpoints=latest)
    proc = run(_fault_cmd(tmp_path, TRAIN, resume), PPCLS_FS_FAULT=fault)
    assert proc.returncode == 2
    line = _one_error_line(proc)
    assert "config.yaml" in line and "No space left on device" in line, line
    assert "Logging error" not in proc.stderr
    assert not [f for f in os.listdir(run_dir) if ".tmp" in f], os.listdir(run_dir)

    # Space freed: the resume finishes the run.
    proc = run_ok(command(TRAIN, QUICKSTART, resume))
    assert "[Train][Epoch 1/" not in proc.stdout
    assert load_params(latest)[1]["pdstates"]["epoch"] == 2


@pytest.mark.parametrize("tool", ["train", "eval"])
def test_a_read_only_output_folder_is_one_line(tiny_data, tmp_path, tool):
    root, _, _ = tiny_data
    out = tmp_path / "readonly"
    out.mkdir()
    overrides = tiny_overrides(root, str(out), epochs=1)
    if tool == "eval":
        overrides.append("Global.pretrained_model=null")
    proc = run(_fault_cmd(tmp_path, TRAIN if tool == "train" else EVAL, overrides),
               PPCLS_FS_FAULT=f"erofs|{out}|")
    assert proc.returncode == 2, proc.stderr[-3000:]
    line = _one_error_line(proc)
    assert "Read-only file system" in line and str(out) in line, line
    assert "writable Global.output_dir" in line


# --------------------------------------------------------------------------- SIGTERM


def test_sigterm_is_one_line_exit_143_and_leaves_no_partial_checkpoint(tiny_data, tmp_path):
    root, _, _ = tiny_data
    out = str(tmp_path / "term")
    run_dir = os.path.join(out, ARCH)
    proc = subprocess.Popen(paused(command(TRAIN, QUICKSTART, tiny_overrides(root, out, epochs=2))),
                            cwd=ROOT, env=env(PPCLS_TEST_SAVE_PAUSE="write@1"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # Terminated in the middle of writing the first checkpoint.
    _wait_for(lambda: os.path.exists(os.path.join(run_dir, ".paused-write")), proc, "the save")
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 143, stderr[-3000:]
    assert "Terminated (SIGTERM)" in stderr
    assert "Traceback" not in stderr and "FatalError" not in stderr and "Error:" not in stderr
    left = [f for f in os.listdir(run_dir) if f != ".paused-write"]
    assert not [f for f in left if ".tmp" in f or f.endswith((".pdparams", ".pdstates", ".commit"))], left
    assert not glob.glob(os.path.join(out, ".*.lock"))  # the lock is released


def test_the_lock_names_a_live_holder_and_ignores_a_reused_pid(tmp_path):
    from ppcls.engine.run_dir import RunLock
    from ppcls.utils.errors import OutputError

    folder = str(tmp_path / "MobileNeXt_x0_35")
    lock_file = tmp_path / ".MobileNeXt_x0_35.lock"
    host = os.uname().nodename
    # pid 1 runs since boot, before this lock was written: a live holder.
    lock_file.write_text(json.dumps({"pid": 1, "host": host, "start": time.time()}))
    with pytest.raises(OutputError, match=r"in use by another training \(pid 1 on "):
        RunLock(folder).acquire()
    # The same holder on another host is never taken over.
    lock_file.write_text(json.dumps({"pid": 1, "host": "elsewhere", "start": time.time()}))
    with pytest.raises(OutputError, match="on another host: delete the lock file"):
        RunLock(folder).acquire()
    # A live process that started long after the lock was written only reuses the number.
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        lock_file.write_text(json.dumps({"pid": other.pid, "host": host,
                                         "start": time.time() - 3600}))
        lock = RunLock(folder).acquire()
        assert any("stale lock" in note for note in lock.notes)
        assert json.loads(lock_file.read_text())["pid"] == os.getpid()
        lock.release()
        assert not lock_file.exists()
    finally:
        other.kill()
        other.wait()
