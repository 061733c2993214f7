"""The run lock under real concurrency (issue 22, attack items 1, 2 and 9): synchronised
processes over a stale lock never hold it at overlapping times; a run folder reached through a
symlink has the same lock; lock files of the wrong shape are one line, never a traceback."""

import json
import multiprocessing
import os
import subprocess
import sys
import time

import pytest

from ppcls.engine.run_dir import RunLock  # imported before the fork: the children import nothing
from ppcls.utils.errors import OutputError

ROUNDS, PER_ROUND = 20, 4  # 80 synchronised acquisitions (34e5ea3: 2 holders in ~1 round of 5)
HOLD = 0.1


def _contender(folder, barrier, result_file):
    def put(value):
        with open(result_file, "w") as f:
            json.dump(value, f)

    try:
        barrier.wait()
        try:
            lock = RunLock(folder).acquire()
        except OutputError:
            put(None)
            return
        start = time.monotonic()  # CLOCK_MONOTONIC: one clock for every process of the machine
        time.sleep(HOLD)
        end = time.monotonic()
        lock.release()
        put([start, end, os.getpid()])
    except BaseException as err:  # noqa: B902 (reported to the test, never lost)
        put(f"{type(err).__name__}: {err}")
    finally:
        os._exit(0)


def test_80_synchronised_takeovers_of_a_stale_lock_never_overlap(tmp_path):
    """Rounds of 4 processes released at once over a stale lock, whose pid is now reused by a
    later process (judging it reads /proc: the window where 34e5ea3 deleted a competitor's
    fresh lock). Whoever holds the lock holds it alone."""
    host = os.uname().nodename
    reused = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    ctx = multiprocessing.get_context("fork")
    try:
        for round_ in range(ROUNDS):
            folder = tmp_path / f"r{round_}"
            folder.mkdir()
            pid = reused.pid
            (folder / ".run.lock").write_text(json.dumps({"pid": pid, "host": host,
                                                          "start": time.time() - 3600}))
            barrier = ctx.Barrier(PER_ROUND)
            files = [str(folder / f"result{i}.json") for i in range(PER_ROUND)]
            procs = [ctx.Process(target=_contender, args=(str(folder / "run"), barrier, f))
                     for f in files]
            for p in procs:
                p.start()
            for p in procs:
                p.join(timeout=120)
            assert all(os.path.exists(f) for f in files), "a contender did not report"
            results = [json.load(open(f)) for f in files]
            errors = [r for r in results if isinstance(r, str)]
            assert not errors, errors[:3]
            held = sorted(tuple(r) for r in results if r is not None)
            assert held, "nobody took over the stale lock"
            for (_, end, pid_a), (start, _, pid_b) in zip(held, held[1:]):
                assert start >= end, (f"round {round_}: pids {pid_a} and {pid_b} held the lock "
                                      "at the same time")
            assert not os.path.exists(folder / ".run.lock")  # released by its last holder
    finally:
        reused.kill()
        reused.wait()


def _hold_forever(folder, ready):
    try:
        RunLock(folder).acquire()
        ready.send("locked")
        time.sleep(120)
    finally:
        os._exit(0)


def test_a_symlinked_run_folder_has_the_same_lock(tmp_path):
    """sB/MobileNeXt_x1_0 -> sA/MobileNeXt_x1_0: one folder, one lock (34e5ea3: two)."""
    real = tmp_path / "sA" / "MobileNeXt_x1_0"
    real.mkdir(parents=True)
    (tmp_path / "sB").mkdir()
    (tmp_path / "sB" / "MobileNeXt_x1_0").symlink_to(real)
    ctx = multiprocessing.get_context("fork")
    ready, child_end = ctx.Pipe()
    holder = ctx.Process(target=_hold_forever, args=(str(real), child_end))
    holder.start()
    try:
        assert ready.poll(60) and ready.recv() == "locked"
        with pytest.raises(OutputError, match=f"in use by another training \\(pid {holder.pid} "):
            RunLock(str(tmp_path / "sB" / "MobileNeXt_x1_0")).acquire()
    finally:
        holder.kill()  # SIGKILL: the kernel drops its lock
        holder.join()
    lock = RunLock(str(tmp_path / "sB" / "MobileNeXt_x1_0")).acquire()
    assert lock.path == str(tmp_path / "sA" / ".MobileNeXt_x1_0.lock")
    assert any(f"pid {holder.pid}" in note for note in lock.notes), lock.notes
    lock.release()


@pytest.mark.parametrize("content", ['[1, 2]', '{"pid": "abc"}', '{"pid": 5, "host": 3}', '"x"',
                                     '{"pid": 1e999}', '{"pid": -1, "host": "%s", "start": 1}' % os.uname().nodename,
                                     '\xff\xfe', ''])
def test_a_lock_file_of_the_wrong_shape_is_taken_over_with_a_note(tmp_path, content):
    (tmp_path / ".run.lock").write_bytes(content.encode("latin1"))
    lock = RunLock(str(tmp_path / "run")).acquire()
    try:
        record = json.loads((tmp_path / ".run.lock").read_text())
        assert record["pid"] == os.getpid()
        if content.strip():
            assert any("held no lock record" in n or "stale lock" in n for n in lock.notes), lock.notes
    finally:
        lock.release()
