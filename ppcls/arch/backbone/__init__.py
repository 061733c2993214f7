from ppcls.arch.backbone import mobilenext  # noqa: F401
