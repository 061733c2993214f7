"""The Python API behind ``ppcls.create_model``, ``ppcls.Predictor`` and ``python -m ppcls``:
thin over the model registry, the weight download and cache, the export and the back-ends.

- :mod:`ppcls.api.models`: ``create_model``, ``list_models``, model facts and eval transforms;
- :mod:`ppcls.api.predictor`: ``Predictor`` (an export, made once and cached for a model name);
- :mod:`ppcls.api.training`: ``folder_loader`` (an ImageFolder loader) and ``export``;
- :mod:`ppcls.api.commands`: ``python -m ppcls`` and the ``ppcls`` console script.
"""
