"""ppcls: MobileNeXt on PaddlePaddle with the PaddleClas user surface.

The Python API (imported on first use, so ``import ppcls`` stays cheap for the tools)::

    import ppcls
    ppcls.list_models()                                    # ['MobileNeXt_x0_35', ...]
    model = ppcls.create_model("MobileNeXt_x1_0", pretrained=True, class_num=10)
    model.meta["top1"], model.transforms()(image)          # facts, eval preprocessing
    for results in ppcls.Predictor(model_name="MobileNeXt_x1_0").predict("img.jpg"):
        print(results)                                     # PaddleClas result dicts

``python -m ppcls predict|train|eval|export|infer|config ...`` is the command line.
"""

import importlib
import warnings

# Importing paddle warns on every run that ccache is missing (it only matters when compiling
# C++ extensions); keep the tools' stderr for messages that concern the user.
warnings.filterwarnings("ignore", message="No ccache found", category=UserWarning)

__version__ = "0.1.0"

_API = {"create_model": "models", "list_models": "models", "model_meta": "models",
        "Predictor": "predictor", "folder_loader": "training", "export": "training"}

__all__ = sorted(_API)


def __getattr__(name):
    if name in _API:
        return getattr(importlib.import_module(f"ppcls.api.{_API[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
