"""The output folder of a training run (``Global.output_dir/<Arch.name>``): one training at a
time, and a fresh run never destroys an earlier one.

- **Lock.** A training holds ``<Global.output_dir>/.<Arch.name>.lock`` (a small JSON file:
  pid, host, start time, command) from start to exit. A second training into the same folder
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
import json
import os
import socket
import sys
import time

from ppcls.utils.errors import OutputError, write_error as io_error


def _lock_path(output_dir):
    parent, name = os.path.split(os.path.normpath(os.path.abspath(output_dir)))
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


def _alive(pid, since=None):
    """Whether ``pid`` runs and is the process that wrote the lock at ``since`` (a process
    started well after that is another one that reuses the number)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    started = _started(pid)
    return not (since and started and started > since + 5)


def _describe(holder):
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(holder.get("start", 0)))
    return f"pid {holder.get('pid')} on {holder.get('host')} since {when}"


class RunLock:
    """The lock of one output folder; :meth:`acquire` or raise ``OutputError``."""

    def __init__(self, output_dir):
        self.output_dir = output_dir
        self.path = _lock_path(output_dir)
        self.held = False
        self.notes = []  # log lines for when the logger is set up

    def _write(self):
        record = {"pid": os.getpid(), "host": socket.gethostname(), "start": time.time(),
                  "command": " ".join(sys.argv)}
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            os.write(fd, json.dumps(record).encode())
        finally:
            os.close(fd)

    def _holder(self):
        try:
            with open(self.path, encoding="utf-8") as f:
                return json.load(f)
        except (OSError, ValueError):
            return None

    def acquire(self):
        parent = os.path.dirname(self.path)
        try:
            os.makedirs(parent, exist_ok=True)
        except OSError as err:
            raise io_error(err, parent, "creating the output folder") from None
        for _ in range(3):
            try:
                self._write()
                break
            except FileExistsError:
                holder = self._holder()
                if holder is None:  # unreadable, or half written by a starting run: wait a bit
                    time.sleep(0.5)
                    holder = self._holder()
                if holder is None:
                    self.notes.append(f"{self.path} was unreadable; taking it over")
                elif holder.get("host") == socket.gethostname() and holder.get("pid") == os.getpid():
                    pass  # an earlier Engine of this very process
                elif holder.get("host") == socket.gethostname() and not _alive(int(holder.get("pid", 0)),
                                                                            holder.get("start")):
                    self.notes.append(f"took over the stale lock {self.path} of a run that no "
                                      f"longer runs ({_describe(holder)})")
                else:
                    where = "" if holder.get("host") == socket.gethostname() else \
                        " (on another host: delete the lock file once that run is gone)"
                    raise OutputError(
                        f"{self.output_dir} is in use by another training ({_describe(holder)}, "
                        f"lock file {self.path}){where}; wait for it to finish or set another "
                        "Global.output_dir") from None
                try:
                    os.remove(self.path)
                except FileNotFoundError:
                    pass
            except OSError as err:
                raise io_error(err, self.path, "locking the output folder") from None
        else:
            raise OutputError(f"could not lock {self.output_dir} ({self.path} keeps coming back)")
        self.held = True
        atexit.register(self.release)
        return self

    def release(self):
        if not self.held:
            return
        self.held = False
        holder = self._holder()
        if holder is None or holder.get("pid") == os.getpid():
            try:
                os.remove(self.path)
            except OSError:
                pass


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
