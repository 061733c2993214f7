from ppcls.utils.registry import Registry

MODELS = Registry("model")
