"""``python -m ppcls predict|train|eval|export|infer|config|models ...``: see ppcls.api.commands."""

from ppcls.api.commands import console

if __name__ == "__main__":
    console()
