"""The output folder of a training run (``Global.output_dir/<Arch.name>``): one training at a
time, and a fresh run never destroys an earlier one.

- **Lock.** A training holds ``<Global.output_dir>/.<Arch.name>.lock`` (a small JSON file:
  pid, host, start time, command, under ``fcntl.flock``) from start to exit; the path is the
  folder's real path, so a run folder reached through a symlink has the one lock. A second training into the same folder
  is refused with one line naming the holder. A lock left by a process that no longer runs on
  this host (killed with SIGKILL, power loss) is taken over, with a log line saying so; a lock
  from another host is never taken over (delete it by hand once that run is gone).
- **Earlier run moved aside.** A fresh run (no ``Global.checkpoints``) into a folder that holds
  an earlier run's files renames that folder to ``<Arch.name>.<YYYYmmdd-HHMMSS>`` first, with
  one log line, so its checkpoints, ``best_model`` and ``train.log`` stay as they were. A
  resumed run continues in place.
- Multi-card: only rank 0 locks and moves; the other ranks do not touch the folder before the
  collective start (``init_parallel_env``), which rank 0 joins only after it is done.

Evaluation does not lock (it only writes ``eval.log``).
"""

import atexit
import fcntl
import json
import math
import os
import socket
import sys
import time

from ppcls.utils.errors import OutputError, write_error as io_error


def _lock_path(output_dir):
    """``<parent>/.<name>.lock`` of the folder ``output_dir`` really is (symlinks resolved: a run
    folder reached through a link has the same lock as through its own path)."""
    parent, name = os.path.split(os.path.realpath(os.path.abspath(output_dir)))
    return os.path.join(parent, f".{name}.lock")


def _started(pid):
    """When process ``pid`` started (seconds since the epoch), or None if unknown (Linux only)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            ticks = int(f.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/stat") as f:
            boot = next(int(line.split()[1]) for line in f if line.startswith("btime"))
        return boot + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return None


def process_alive(pid, since=None):
    """Whether ``pid`` runs and is the process that wrote the lock at ``since`` (a process
    started well after that is another one that reuses the number)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        pass
    started = _started(pid)
    return not (since and started and started > since + 5)


def _record(data):
    """The lock record in ``data`` (bytes) as ``{pid: int, host: str, start: float, ...}``, or
    None when it is not one (empty, half written, not JSON, JSON of another shape)."""
    try:
        holder = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None
    if not isinstance(holder, dict):
        return None
    pid, host, start = holder.get("pid"), holder.get("host"), holder.get("start", 0)
    if not (isinstance(pid, int) and not isinstance(pid, bool) and isinstance(host, str)
            and isinstance(start, (int, float)) and not isinstance(start, bool)
            and math.isfinite(start)):
        return None
    return holder


def _describe(holder):
    try:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(holder.get("start", 0)))
    except (OverflowError, OSError, ValueError):
        when = "?"
    return f"pid {holder.get('pid')} on {holder.get('host')} since {when}"


_HELD = {}  # lock path -> [fd, holders]: the locks this process holds (an Engine may be rebuilt)


class RunLock:
    """The lock of one output folder; :meth:`acquire` or raise ``OutputError``.

    Mutual exclusion is ``fcntl.flock`` on the open lock file: the kernel grants it to one
    process at a time and drops it when that process dies (even by SIGKILL), so taking over a
    stale lock is atomic. The JSON record inside (pid, host, start, command) names the holder in
    messages; a record naming a live process on this host (one that holds no flock: an older
    version, or written by hand) or a process on another host is respected as before. The file
    is removed by its holder, still locked, at release; an acquirer that locked a file which was
    removed meanwhile starts over (the inode check), so two holders never overlap.
    """

    def __init__(self, output_dir):
        self.output_dir = output_dir
        self.path = _lock_path(output_dir)
        self.held = False
        self.notes = []  # log lines for when the logger is set up

    def _record_bytes(self):
        record = {"pid": os.getpid(), "host": socket.gethostname(), "start": time.time(),
                  "command": " ".join(sys.argv)}
        return json.dumps(record).encode()

    def _holder(self):
        try:
            with open(self.path, "rb") as f:
                return _record(f.read())
        except OSError:
            return None

    def _refuse(self, holder):
        if holder is None:  # a holder that is still writing its record: read it once more
            time.sleep(0.2)
            holder = self._holder()
        who = _describe(holder) if holder else "its record is unreadable"
        where = "" if holder is None or holder.get("host") == socket.gethostname() else \
            " (on another host: delete the lock file once that run is gone)"
        return OutputError(f"{self.output_dir} is in use by another training ({who}, lock file "
                           f"{self.path}){where}; wait for it to finish or set another "
                           "Global.output_dir")

    def _try_once(self):
        """One attempt: ``True`` when locked, ``False`` to start over (the file was replaced)."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise self._refuse(None) from None
            try:
                now = os.stat(self.path)
            except FileNotFoundError:
                now = None
            mine = os.fstat(fd)
            if now is None or (now.st_ino, now.st_dev) != (mine.st_ino, mine.st_dev):
                os.close(fd)  # released (removed) between our open and our flock
                return False
            data = os.pread(fd, 1 << 16, 0)
            holder = _record(data)
            here = socket.gethostname()
            if holder is not None and holder["pid"] != os.getpid():
                if holder["host"] != here or process_alive(holder["pid"], holder.get("start")):
                    raise self._refuse(holder)
                self.notes.append(f"took over the stale lock {self.path} of a run that no "
                                  f"longer runs ({_describe(holder)})")
            elif holder is None and data.strip():
                self.notes.append(f"{self.path} held no lock record (unreadable); taking it over")
            record = self._record_bytes()
            os.ftruncate(fd, 0)
            os.pwrite(fd, record, 0)
        except BaseException:
            os.close(fd)
            raise
        _HELD[self.path] = [fd, 1]
        return True

    def acquire(self):
        parent = os.path.dirname(self.path)
        try:
            os.makedirs(parent, exist_ok=True)
        except OSError as err:
            raise io_error(err, parent, "creating the output folder") from None
        if self.path in _HELD:  # an earlier Engine of this very process
            _HELD[self.path][1] += 1
        else:
            for _ in range(20):
                try:
                    if self._try_once():
                        break
                except OSError as err:
                    raise io_error(err, self.path, "locking the output folder") from None
            else:
                raise OutputError(f"could not lock {self.output_dir} ({self.path} keeps being "
                                  "replaced)")
        self.held = True
        atexit.register(self.release)
        return self

    def release(self):
        if not self.held:
            return
        self.held = False
        entry = _HELD.get(self.path)
        if entry is None:
            return
        entry[1] -= 1
        if entry[1] > 0:
            return
        del _HELD[self.path]
        try:
            os.remove(self.path)  # still locked: nobody can take the file over half removed
        except OSError:
            pass
        finally:
            os.close(entry[0])


def _earlier_run(output_dir):
    """Whether ``output_dir`` holds files of an earlier training (anything at all)."""
    try:
        return bool(os.listdir(output_dir))
    except (FileNotFoundError, NotADirectoryError):
        return False


def move_aside(output_dir, notes):
    """Rename ``output_dir`` (an earlier run) to ``<output_dir>.<timestamp>``; returns the new name."""
    if not _earlier_run(output_dir):
        return None
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(os.path.getmtime(output_dir)))
    target, n = f"{output_dir}.{stamp}", 1
    while os.path.exists(target):
        n += 1
        target = f"{output_dir}.{stamp}-{n}"
    try:
        os.rename(output_dir, target)
    except OSError as err:
        raise io_error(err, output_dir, "moving the earlier run aside") from None
    notes.append(f"{output_dir} held an earlier run; moved it to {target} (its checkpoints and "
                 "train.log are kept there; resume it with Global.checkpoints)")
    return target


def prepare(output_dir, resume, rank):
    """Lock ``output_dir`` and, for a fresh run, move an earlier run aside (rank 0 only).

    Returns ``(lock or None, notes)``: ``notes`` are lines to log once the logger writes to
    the folder.
    """
    if rank != 0:
        return None, []
    lock = RunLock(output_dir).acquire()
    notes = list(lock.notes)
    if not resume:
        try:
            move_aside(output_dir, notes)
        except BaseException:
            lock.release()
            raise
    try:
        os.makedirs(output_dir, exist_ok=True)
    except OSError as err:
        lock.release()
        raise io_error(err, output_dir, "creating the output folder") from None
    return lock, notes


__all__ = ["OutputError", "RunLock", "io_error", "move_aside", "prepare"]
