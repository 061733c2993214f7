"""User-facing errors: bad configs, bad data, bad checkpoints.

Tools catch ``UserError`` and print its message as one line, with no traceback
(see ``ppcls.utils.cli``). Anything else is a bug and keeps its traceback.
"""


class UserError(Exception):
    """An error in what the user gave us (file, key or value); the message says which."""


class ConfigError(UserError):
    pass


class DataError(UserError):
    pass


class CheckpointError(UserError):
    pass
