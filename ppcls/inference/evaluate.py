"""Accuracy of an exported model on a labelled list file (``relative/path label`` per line, the
``DataLoader.Eval`` list of training): what the deployed model scores, measured the way
``deploy/python/predict_cls.py`` runs it (the export's ``inference.yml`` preprocessing, the
same back-end choice), so it is comparable with ``tools/eval.py``'s ``top1`` of the checkpoint.

    python tools/eval_export.py --model_dir inference/MobileNeXt_x1_0_digits \
        --list dataset/digits/val_list.txt --root dataset/digits

An image that cannot be read is an error naming it (an accuracy over a silently shorter list
would not be the list's accuracy).
"""

import numpy as np

from ppcls.inference.artifacts import read_inference_yml
from ppcls.inference.predictor import create_predictor
from ppcls.utils.errors import ConfigError, DataError


def evaluate_export(model_dir, list_file, image_root, batch_size=32, options=None, topk=5):
    """Top-1 and top-k accuracy of the export in ``model_dir`` on ``list_file``.

    ``options``: deployment ``Global`` keys (``use_onnx``, ``cpu_num_threads``, ``use_gpu``, ...).
    Returns ``{"top1", "top<k>", "correct", "images", "backend", "device", "precision"}``.
    """
    from ppcls.data.dataset import read_list_file
    from ppcls.data.preprocess import create_operators, decode_image, transform
    from ppcls.inference.deploy import _sections, check_input_shape

    record = read_inference_yml(model_dir)
    if record is None:
        raise ConfigError(f"{model_dir} has no inference.yml (its preprocessing); export the model "
                          "with tools/export_model.py")
    op_list, _, _ = _sections({}, record, model_dir)
    ops = create_operators(op_list, where=f"{model_dir}/inference.yml PreProcess.transform_ops")
    paths, labels, _ = read_list_file(list_file, image_root)
    labels = np.asarray(labels, dtype=np.int64)
    if not len(paths):
        raise DataError(f"{list_file} lists no images")
    g = dict(options or {}, inference_model_dir=model_dir)
    predictor = create_predictor(g, record)
    ranks = []
    for start in range(0, len(paths), int(batch_size)):
        arrays = []
        for path in paths[start:start + int(batch_size)]:
            try:
                arrays.append(transform(decode_image(path), ops))
            except Exception as err:  # decode/transform errors of one image
                raise DataError(f"{path}: cannot be read ({' '.join(str(err).split())})") from None
        batch = np.stack(arrays).astype(np.float32)
        if start == 0:
            check_input_shape(batch.shape[1:], record, model_dir)
        scores = np.asarray(predictor.run(batch))
        if scores.ndim != 2:
            raise ConfigError(f"{model_dir}: expected [batch, classes] scores, got {list(scores.shape)}")
        truth = labels[start:start + len(arrays)]
        if truth.max() >= scores.shape[1]:
            raise DataError(f"{list_file}: label {int(truth.max())} but the model has "
                            f"{scores.shape[1]} classes")
        # rank of the true class: how many classes score strictly higher
        ranks.append((scores > scores[np.arange(len(truth)), truth][:, None]).sum(axis=1))
    ranks = np.concatenate(ranks)
    k = min(int(topk), scores.shape[1])
    described = predictor.describe()
    return {"top1": float((ranks == 0).mean()), f"top{k}": float((ranks < k).mean()),
            "correct": int((ranks == 0).sum()), "images": int(len(ranks)),
            "backend": described["backend"], "device": described["device"],
            "precision": described["precision"]}


__all__ = ["evaluate_export"]
