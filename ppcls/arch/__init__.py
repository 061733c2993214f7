"""Model registry and ``build_model``: the ``Arch`` section of a config -> a ``paddle.nn.Layer``."""

import copy

from ppcls.arch.registry import MODELS
from ppcls.utils.errors import ConfigError
from ppcls.utils.registry import build
from ppcls.arch import backbone  # noqa: F401  (registers the backbones)


def build_model(config):
    """Build the network an ``Arch`` section names.

    ``config`` is either the whole config (with an ``Arch`` key) or the ``Arch`` section
    itself: ``name``, ``class_num``, ``pretrained`` (False, True or a path) and any other key,
    passed to the constructor as a keyword argument.
    """
    arch = copy.deepcopy(dict(config.get("Arch", config)))
    if "name" not in arch:
        raise ConfigError("Arch.name is missing; registered models: " + ", ".join(MODELS.names()))
    return build(arch, MODELS, "Arch")


__all__ = ["MODELS", "build_model"]
