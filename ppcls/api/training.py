"""Fine-tuning from Python: ``folder_loader`` (our loader over an ImageFolder-style folder) and
``export`` (an in-memory model -> an export ``Predictor`` and predict_cls run).

``folder_loader(root, image_size, batch_size, train=True)`` is ``build_dataloader`` over
``DataLoader.<Train|Eval>.dataset: {name: ImageFolder, image_root: root}`` with the recipe's
steps at ``image_size``: random crop + flip (train) or resize + centre crop (eval), then
ImageNet normalisation. It yields ``(images, labels, indices)`` like the training loop's loader;
the class list is written to ``<root>/label_list.txt`` (see ``ppcls.data.imagefolder``).
"""

import os
import tempfile

from ppcls.utils.errors import ConfigError

NORMALIZE = {"NormalizeImage": {"scale": 1.0 / 255.0, "mean": [0.485, 0.456, 0.406],
                                "std": [0.229, 0.224, 0.225], "order": ""}}


def _size(image_size, where):
    if not isinstance(image_size, int) or isinstance(image_size, bool) or image_size < 1:
        raise ConfigError(f"{where}: image_size expects a positive integer, got {image_size!r}")
    return image_size


def folder_transforms(image_size, train):
    """The transform ops of :func:`folder_loader` (``DecodeImage`` first)."""
    from ppcls.inference.export import deploy_transforms

    decode = {"DecodeImage": {"to_rgb": True, "channel_first": False}}
    if train:
        return [decode, {"RandCropImage": {"size": image_size}}, {"RandFlipImage": {"flip_code": 1}},
                NORMALIZE]
    # eval: exactly the preprocessing an export at this size records
    return [decode] + deploy_transforms({"Global": {"image_shape": [3, image_size, image_size]}})


def folder_loader(root, image_size=224, batch_size=32, train=True, class_num=None,
                  label_list_path=None, num_workers=0, seed=None, device="cpu"):
    """A loader over the ImageFolder ``root`` (one sub-folder per class); see the module docstring.

    ``class_num``: bounds the number of classes (default: the folder's); ``label_list_path``:
    where the class list is read or written (default ``<root>/label_list.txt``).
    """
    from ppcls.data import build_dataloader

    _size(image_size, "folder_loader")
    mode = "Train" if train else "Eval"
    dataset = {"name": "ImageFolder", "image_root": os.fspath(root),
               "transform_ops": folder_transforms(image_size, train)}
    if label_list_path is not None:
        dataset["label_list_path"] = os.fspath(label_list_path)
    config = {"Global": {"seed": seed},
              "DataLoader": {mode: {"dataset": dataset,
                                    "sampler": {"name": "DistributedBatchSampler",
                                                "batch_size": batch_size, "drop_last": False,
                                                "shuffle": bool(train)},
                                    "loader": {"num_workers": num_workers}}}}
    if class_num is not None:
        config["Arch"] = {"class_num": class_num}
    return build_dataloader(config, mode, device=device, seed=seed)


def export(model, save_dir, image_size=None, label_list=None):
    """Export the ppcls ``model`` (from ``create_model``, trained or not) to ``save_dir`` as
    ``tools/export_model.py`` does (inference.json/.pdiparams, inference.onnx when paddle2onnx
    is installed, inference.yml); ``image_size`` defaults to ``model.meta['input_size']``;
    ``label_list``: a label file (``0 cat`` per line) whose names the predictions carry.
    Returns ``save_dir``."""
    from ppcls.api.predictor import export_config
    from ppcls.inference.export import export_model
    from ppcls.utils.weights import save_state_dict, state_dict_numpy

    meta = getattr(model, "meta", None)
    if not isinstance(meta, dict) or "arch" not in meta:
        raise ConfigError("export: expected a model made by ppcls.create_model (it carries meta)")
    arch = dict(meta["arch"])
    size = _size(image_size or meta["input_size"][-1], "export")
    with tempfile.TemporaryDirectory(prefix="ppcls_export_") as tmp:
        weights = save_state_dict(state_dict_numpy(model), os.path.join(tmp, "weights.pdparams"))
        cfg = export_config(arch.pop("name"), weights, class_num=arch.pop("class_num"),
                            image_size=size if size != meta["input_size"][-1] else None,
                            label_list=os.fspath(label_list) if label_list else None,
                            arch_keys=arch)
        cfg["Global"]["save_inference_dir"] = os.fspath(save_dir)
        export_model(cfg)
    return os.fspath(save_dir)


__all__ = ["export", "folder_loader", "folder_transforms"]
