"""``tools/infer.py``: predict with a training config and its weights (dynamic graph).

The config's ``Infer`` section::

    Infer:
      infer_imgs: docs/images/demo.jpg     # a file, or a folder (walked, sorted)
      batch_size: 10
      transforms: [DecodeImage, ResizeImage, CropImage, NormalizeImage, ToCHWImage]
      PostProcess: {name: Topk, topk: 5, class_id_map_file: ppcls/utils/imagenet1k_label_list.txt}

Weights: ``Global.pretrained_model`` (or ``Arch.pretrained``). As PaddleClas's
``tools/infer.py``, each batch is printed as one list of result dicts, softmax scores rounded
to 5 decimals, ``label_names`` empty without a ``class_id_map_file``::

    [{'class_ids': [...], 'scores': [...], 'file_name': '...', 'label_names': [...]}, ...]

Unreadable images are named on stderr, one line each, and skipped; the exit code is then 1.
"""

import numpy as np

from ppcls.inference.export import build_eval_model
from ppcls.inference.images import ImageBatches, list_images
from ppcls.inference.postprocess import build_postprocess
from ppcls.utils.errors import ConfigError

DEFAULT_TRANSFORMS = [{"DecodeImage": {"to_rgb": True, "channel_first": False}},
                      {"ResizeImage": {"resize_short": 256}},
                      {"CropImage": {"size": 224}},
                      {"NormalizeImage": {"scale": 1.0 / 255.0, "mean": [0.485, 0.456, 0.406],
                                          "std": [0.229, 0.224, 0.225], "order": ""}},
                      {"ToCHWImage": None}]


def set_device(cfg):
    from ppcls.utils.global_config import select_device

    select_device((cfg.get("Global") or {}).get("device"), fallback=True)


def predict(cfg, emit=print):
    """Run ``cfg``'s model over ``Infer.infer_imgs``; ``emit`` each batch's list of result dicts.

    Returns ``(results, exit_code)``: the result dicts in file order, and 0 when every image was
    predicted, 1 when some could not be read.
    """
    import paddle

    from ppcls.data.preprocess import create_operators, transform

    infer = cfg.get("Infer")
    if not isinstance(infer, dict):
        raise ConfigError("the config has no Infer section (infer_imgs, batch_size, transforms, "
                          "PostProcess)")
    if "infer_imgs" not in infer:
        raise ConfigError("Infer.infer_imgs is missing: an image file or a folder of images")
    paths = list_images(infer["infer_imgs"], key="Infer.infer_imgs")
    op_list = infer.get("transforms") or DEFAULT_TRANSFORMS
    ops = create_operators(op_list, where="Infer.transforms")
    if not any(isinstance(op, dict) and "DecodeImage" in op for op in op_list):
        ops = create_operators([{"DecodeImage": None}]) + ops  # the list starts from a decoded image
    postprocess = build_postprocess(infer.get("PostProcess"), key="Infer.PostProcess")
    set_device(cfg)
    model = build_eval_model(cfg)

    batches = ImageBatches(paths, lambda path: transform(path, ops),
                           batch_size=infer.get("batch_size", 1))
    results = []
    with paddle.no_grad():
        for names, batch in batches:
            logits = model(paddle.to_tensor(batch.astype(np.float32)))
            if isinstance(logits, dict):
                logits = logits["logits"]
            scores = paddle.nn.functional.softmax(logits, axis=-1).numpy()
            batch_results = postprocess(scores, names)
            emit(batch_results)
            results.extend(batch_results)
    return results, batches.exit_code()
