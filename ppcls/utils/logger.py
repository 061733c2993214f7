"""The ``ppcls`` logger: ``[YYYY/MM/DD HH:MM:SS] ppcls INFO: message`` on stdout and in a log file.

Only rank 0 writes (in a multi-card run the other ranks log warnings and errors only),
so a launch with N processes prints each line once.
"""

import logging
import os
import sys

_LOGGER = logging.getLogger("ppcls")
_FORMAT = logging.Formatter("[%(asctime)s] %(name)s %(levelname)s: %(message)s", "%Y/%m/%d %H:%M:%S")


def rank():
    return int(os.environ.get("PADDLE_TRAINER_ID", os.environ.get("PADDLE_RANK_IN_NODE", 0)))


def init_logger(log_file=None, level=logging.INFO):
    """(Re)configure the logger; ``log_file`` (rank 0 only) gets the same lines as stdout."""
    for handler in list(_LOGGER.handlers):
        _LOGGER.removeHandler(handler)
        handler.close()
    _LOGGER.propagate = False
    is_main = rank() == 0
    _LOGGER.setLevel(level if is_main else logging.WARNING)
    stream = logging.StreamHandler(sys.stdout)
    stream.setFormatter(_FORMAT)
    _LOGGER.addHandler(stream)
    if log_file and is_main:
        if os.path.islink(log_file):
            from ppcls.utils.errors import OutputError

            raise OutputError(f"{log_file} is a symbolic link (to {os.readlink(log_file)}); the log "
                              "is written only to a real file in the output folder: remove the link")
        try:
            os.makedirs(os.path.dirname(os.path.abspath(log_file)), exist_ok=True)
            handler = _LogFile(log_file)
        except OSError as err:
            from ppcls.utils.errors import write_error

            raise write_error(err, log_file, "opening the log file") from None
        handler.setFormatter(_FORMAT)
        _LOGGER.addHandler(handler)
    return _LOGGER


class _LogFile(logging.FileHandler):
    """The log file; when a write fails (disk full, file system gone read-only), one line on
    stderr says so and the log goes on on stdout only, instead of a traceback per line."""

    def __init__(self, path):
        super().__init__(path, mode="a", encoding="utf-8")

    def _open(self):
        # O_NOFOLLOW: a symlink put in place of the log (to a file outside the run) is refused
        # (ELOOP), not appended to
        fd = os.open(self.baseFilename, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        return os.fdopen(fd, "a", encoding=self.encoding, errors=self.errors)

    def handleError(self, record):
        err = sys.exc_info()[1]
        _LOGGER.removeHandler(self)
        try:
            self.close()
        except OSError:
            pass
        reason = getattr(err, "strerror", None) or err
        print(f"Warning: cannot write the log file {self.baseFilename} ({reason}); logging to "
              "stdout only from now on", file=sys.stderr, flush=True)


def _ensure():
    if not _LOGGER.handlers:
        init_logger()


def info(msg, *args):
    _ensure()
    _LOGGER.info(msg, *args)


def warning(msg, *args):
    _ensure()
    _LOGGER.warning(msg, *args)


def error(msg, *args):
    _ensure()
    _LOGGER.error(msg, *args)
