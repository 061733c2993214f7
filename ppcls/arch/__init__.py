"""Model registry and ``build_model``: the ``Arch`` section of a config -> a ``paddle.nn.Layer``."""

import copy

from ppcls.arch.registry import MODELS
from ppcls.utils.errors import ConfigError
from ppcls.utils.registry import build
from ppcls.arch import backbone  # noqa: F401  (registers the backbones)

# PaddleClas Arch keys that are no constructor argument: ``infer_add_softmax`` (the export
# appends a softmax, default True; read by ppcls.inference.export) and ``use_ssld`` (upstream
# picks the SSLD-distilled file when downloading pretrained weights; accepted, no effect here).
UPSTREAM_ARCH_KEYS = ("infer_add_softmax", "use_ssld")


def build_model(config):
    """Build the network an ``Arch`` section names.

    ``config`` is either the whole config (with an ``Arch`` key) or the ``Arch`` section
    itself: ``name``, ``class_num``, ``pretrained`` (False, True or a path) and any other key,
    passed to the constructor as a keyword argument.
    """
    arch = copy.deepcopy(dict(config.get("Arch", config)))
    for key in UPSTREAM_ARCH_KEYS:  # read elsewhere (export) or naming-only upstream
        arch.pop(key, None)
    if "name" not in arch:
        raise ConfigError("Arch.name is missing; registered models: " + ", ".join(MODELS.names()))
    return build(arch, MODELS, "Arch")


__all__ = ["MODELS", "build_model"]
