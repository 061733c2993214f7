"""Prediction, export and deployment: everything between a trained model and a served one.

- :mod:`ppcls.inference.images`: which files a prediction reads (sorted walk of a folder), and
  reading them one by one so that a bad file is reported and skipped, not fatal.
- :mod:`ppcls.inference.postprocess`: ``Topk`` (the PaddleClas result dict) and class-id maps.
- :mod:`ppcls.inference.export`: ``export_model`` (``paddle.jit.save`` + ``inference.yml``)
  and ``export_onnx`` (paddle2onnx).
- :mod:`ppcls.inference.predictor`: the one place that configures Paddle Inference
  (``paddle_config``) and the ONNX Runtime session; ``create_predictor``.
- :mod:`ppcls.inference.benchmark`: per-stage timing report (``auto_log`` when installed).
- :mod:`ppcls.inference.dygraph`: ``tools/infer.py`` (a training config and its weights).
- :mod:`ppcls.inference.deploy`: ``deploy/python/predict_cls.py`` (an exported model).
- :mod:`ppcls.inference.mobile`: the phone formats of an export (``Global.export_format``:
  LiteRT, ORT format, the legacy program); :mod:`ppcls.inference.mobile_backends`: their
  back-ends ``litert`` and ``ort_format``, registered here on import of the package.
"""

from ppcls.inference import mobile_backends as _mobile_backends  # noqa: E402,F401  (registers them)
