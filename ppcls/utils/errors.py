"""User-facing errors: bad configs, bad data, bad checkpoints.

Tools catch ``UserError`` and print its message as one line, with no traceback
(see ``ppcls.utils.cli``). Anything else is a bug and keeps its traceback.
"""


class UserError(Exception):
    """An error in what the user gave us (file, key or value); the message says which."""


class ConfigError(UserError):
    pass


# The message of each DataLoader watchdog stop in this process: ppcls.data.loader appends,
# ppcls.utils.cli reports the last one instead of Paddle's "worker died" error.
LOADER_STALLS = []


class DataError(UserError):
    pass


class CheckpointError(UserError):
    pass


class OutputError(UserError):
    """An output cannot be written (folder held by another run, read-only, disk full)."""


def write_error(err, path, what):
    """An ``OSError`` while writing ``path`` -> one ``OutputError`` line naming the path and
    what was being written (``what``: "saving checkpoint ...")."""
    import errno

    reason = err.strerror or str(err)
    hint = ""
    if err.errno in (errno.ENOSPC, errno.EDQUOT):
        hint = "; free some space"
    elif err.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        hint = "; choose a writable Global.output_dir"
    return OutputError(f"cannot write {path} ({reason}) while {what}{hint}")
