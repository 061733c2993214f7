"""Exports are written whole and verified: a new export replaces every file of an older one,
inference.yml records SHA-256 hashes that predict_cls checks, the label map follows the export,
and INT8 exports (deploy/slim/quant_post_static.py) run with the same command line.

A small MobileNeXt (x0.35, 10 classes, 32 px) with seeded random weights keeps this fast.
"""

import hashlib
import os
import shutil

import numpy as np
import paddle
import pytest
import yaml
from PIL import Image

from conftest import ROOT
from ppcls.arch import build_model
from ppcls.inference.deploy import predict_cls
from ppcls.inference.export import export_model
from ppcls.utils import logger
from ppcls.utils.config import get_config
from ppcls.utils.errors import ConfigError

FROM_EXPORT = os.path.join(ROOT, "deploy", "configs", "inference_cls_from_export.yaml")
DEFAULT_DEPLOY = os.path.join(ROOT, "deploy", "configs", "inference_cls.yaml")
IMAGENET_LABELS = os.path.join(ROOT, "ppcls", "utils", "imagenet1k_label_list.txt")
SHAPE = [3, 32, 32]
TRANSFORMS = [{"ResizeImage": {"size": 32}},
              {"NormalizeImage": {"scale": "1.0/255.0", "mean": [0.5, 0.5, 0.5],
                                  "std": [0.5, 0.5, 0.5], "order": ""}},
              {"ToCHWImage": None}]


def weights(folder, seed):
    """Seeded He-normal weights: a random network whose outputs differ from image to image
    (the default initialisation makes this deep, narrow net's logits ~1e-10)."""
    paddle.seed(seed)
    state = build_model({"name": "MobileNeXt_x0_35", "class_num": 10}).state_dict()
    rng = np.random.default_rng(seed)
    for name, value in state.items():
        if value.ndim in (2, 4):
            fan_in = int(np.prod(value.shape[1:])) if value.ndim == 4 else value.shape[0]
            gain = 2.0 if value.ndim == 4 else 1.0
            state[name] = paddle.to_tensor(rng.normal(0, np.sqrt(gain / fan_in), value.shape)
                                           .astype("float32"))
    path = str(folder / f"w{seed}.pdparams")
    paddle.save(state, path)
    return path


def config(out_dir, weight_file, labels=None, **global_overrides):
    cfg = {"Global": {"save_inference_dir": str(out_dir), "image_shape": SHAPE,
                      "pretrained_model": weight_file, **global_overrides},
           "Arch": {"name": "MobileNeXt_x0_35", "class_num": 10},
           "Infer": {"transforms": TRANSFORMS,
                     "PostProcess": {"name": "Topk", "topk": 3, "class_id_map_file": labels}}}
    return cfg


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """12 images (random colour blocks), a train list for calibration, a 10-name label file."""
    root = tmp_path_factory.mktemp("data")
    rng = np.random.default_rng(0)
    (root / "img").mkdir()
    lines = []
    for i in range(12):
        array = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
        Image.fromarray(array).resize((40, 40), Image.NEAREST).save(root / "img" / f"{i:02d}.png")
        lines.append(f"img/{i:02d}.png {i % 10}")
    (root / "train_list.txt").write_text("\n".join(lines) + "\n")
    (root / "labels.txt").write_text("".join(f"{i} digit_{i}\n" for i in range(10)))
    return root


@pytest.fixture(scope="module")
def two_models(data, tmp_path_factory):
    folder = tmp_path_factory.mktemp("weights")
    return weights(folder, 1), weights(folder, 2)


def deploy(model_dir, images, path=FROM_EXPORT, *overrides):
    cfg = get_config(path, [f"Global.inference_model_dir={model_dir}", f"Global.infer_imgs={images}",
                            "Global.cpu_num_threads=1"] + list(overrides))
    cwd = os.getcwd()
    os.chdir(os.path.join(ROOT, "deploy"))
    try:
        return predict_cls(cfg, emit=lambda line: None)
    finally:
        os.chdir(cwd)


def scores(results):
    return [(r["class_ids"], r["scores"]) for r in results]


def test_a_new_export_replaces_every_file_of_the_old_one(data, two_models, tmp_path):
    out = tmp_path / "model"
    a, b = two_models
    images = data / "img"
    export_model(config(out, a, export_onnx=True))
    assert (out / "inference.onnx").is_file()
    answers_a, _ = deploy(out, images)
    export_model(config(out, b, export_onnx=False))
    # the stale inference.onnx of model A is gone: the folder is B's export, whole
    assert sorted(os.listdir(out)) == ["inference.json", "inference.pdiparams", "inference.yml"]
    auto, code = deploy(out, images)
    paddle_b, _ = deploy(out, images, FROM_EXPORT, "Global.use_onnx=False")
    assert code == 0 and scores(auto) == scores(paddle_b)
    assert scores(auto) != scores(answers_a)
    # no temporary folders are left beside the export
    assert os.listdir(tmp_path) == ["model"]


def test_export_refuses_to_replace_a_folder_that_is_not_an_export(two_models, tmp_path):
    out = tmp_path / "output"
    out.mkdir()
    (out / "latest.pdparams").write_bytes(b"a checkpoint")
    with pytest.raises(ConfigError, match=r"holds files that are not part of an export \(latest.pdparams\)"):
        export_model(config(out, two_models[0], export_onnx=False))
    assert os.listdir(out) == ["latest.pdparams"]


def test_inference_yml_hashes_are_checked(data, two_models, tmp_path, capsys):
    out = tmp_path / "model"
    export_model(config(out, two_models[0], labels=str(data / "labels.txt")))
    record = yaml.safe_load((out / "inference.yml").read_text())
    assert set(record["Files"]) == {"inference.json", "inference.pdiparams", "inference.onnx", "labels.txt"}
    for name, digest in record["Files"].items():
        assert digest == "sha256:" + hashlib.sha256((out / name).read_bytes()).hexdigest()
    images = data / "img"

    # a recorded file that changed is refused with one line naming it
    changed = tmp_path / "changed"
    shutil.copytree(out, changed)
    with open(changed / "inference.onnx", "r+b") as f:
        f.seek(-64, os.SEEK_END)
        f.write(b"\0" * 64)
    with pytest.raises(ConfigError, match=r"inference.onnx does not match the hash recorded in .*inference.yml"):
        deploy(changed, images)
    (changed / "labels.txt").write_text("".join(f"{i} other_{i}\n" for i in range(10)))
    with pytest.raises(ConfigError, match=r"labels.txt does not match the hash recorded"):
        deploy(changed, images, FROM_EXPORT, "Global.use_onnx=False")

    # a file added after the export (another model's inference.onnx) is ignored by use_onnx: auto
    plain = tmp_path / "plain"
    export_model(config(plain, two_models[1], export_onnx=False))
    reference, _ = deploy(plain, images, FROM_EXPORT, "Global.use_onnx=False")
    shutil.copy(out / "inference.onnx", plain / "inference.onnx")
    logger.init_logger()
    results, code = deploy(plain, images)
    log = capsys.readouterr().out
    assert code == 0 and scores(results) == scores(reference)
    assert "inference.onnx is not part of the export recorded in inference.yml" in log
    assert "predicting with paddle_inference on cpu, fp32" in log
    # use_onnx: True asks for it by name: used, with a warning
    forced, _ = deploy(plain, images, FROM_EXPORT, "Global.use_onnx=True")
    log = capsys.readouterr().out
    logger.init_logger()
    assert "trying onnxruntime because Global.use_onnx=True asks for it" in log
    assert scores(forced) != scores(reference)


def test_label_map_follows_the_export_and_must_match_the_model(data, two_models, tmp_path):
    out = tmp_path / "model"
    export_model(config(out, two_models[0], labels=str(data / "labels.txt"), export_onnx=False))
    images = data / "img"
    # the default deploy config names no label file: the export's 10 names are used (its
    # preprocessing sized for this 32 px export: another size is refused, see test_attack22.py)
    at_32 = ("PreProcess.transform_ops.0.ResizeImage.resize_short=36",
             "PreProcess.transform_ops.1.CropImage.size=32")
    results, code = deploy(out, images, DEFAULT_DEPLOY, *at_32)
    assert code == 0
    for r in results:
        assert r["label_names"] == [f"digit_{i}" for i in r["class_ids"]]
    # a label file the user names wins, but its class count must be the model's
    with pytest.raises(ConfigError, match=r"imagenet1k_label_list.txt names 1000 classes, but the "
                                          r"model outputs 10 scores per image"):
        deploy(out, images, DEFAULT_DEPLOY, *at_32,
               f"PostProcess.Topk.class_id_map_file={IMAGENET_LABELS}")


def test_int8_export_runs_with_the_same_command_line(data, two_models, tmp_path, capsys):
    """deploy/slim/quant_post_static.py: an INT8 inference.onnx, calibrated on the train list."""
    from importlib import util

    spec = util.spec_from_file_location("quant_post_static",
                                        os.path.join(ROOT, "deploy", "slim", "quant_post_static.py"))
    tool = util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    cfg = config(tmp_path / "int8", two_models[0], labels=str(data / "labels.txt"))
    cfg["DataLoader"] = {"Train": {"dataset": {"name": "ImageNetDataset", "image_root": str(data),
                                               "cls_label_path": str(data / "train_list.txt")}}}
    cfg_file = tmp_path / "cfg.yaml"
    cfg_file.write_text(yaml.safe_dump(cfg))
    assert tool.main(["-c", str(cfg_file), "-o", "Quant.calib_images=8", "-o", "Quant.batch_size=4"]) == 0
    out = tmp_path / "int8"
    assert sorted(os.listdir(out)) == ["inference.onnx", "inference.yml", "labels.txt"]
    record = yaml.safe_load((out / "inference.yml").read_text())
    assert record["Global"]["precision"] == "int8"
    assert record["Quant"]["calib_images"] == 8 and record["Quant"]["method"] == "minmax"
    # integer kernels, per-channel weight scales (a vector per convolution)
    import onnx

    graph = onnx.load(str(out / "inference.onnx")).graph
    assert sum(node.op_type == "QuantizeLinear" for node in graph.node) > 10
    inits = {i.name: i for i in graph.initializer}
    channel_scales = [n for n in graph.node if n.op_type == "DequantizeLinear"
                      and n.input[1] in inits and len(inits[n.input[1]].dims) == 1
                      and inits[n.input[1]].dims[0] > 1]
    assert channel_scales

    fp32_dir = tmp_path / "fp32"
    export_model(config(fp32_dir, two_models[0], labels=str(data / "labels.txt")))
    images = data / "img"
    logger.init_logger()
    int8, code = deploy(out, images, FROM_EXPORT, "Global.batch_size=4")
    log = capsys.readouterr().out
    logger.init_logger()
    fp32, _ = deploy(fp32_dir, images)
    assert code == 0 and len(int8) == 12
    assert "predicting with onnxruntime on cpu, int8" in log
    assert int8[0]["label_names"][0].startswith("digit_")
    # the INT8 network computes nearly what the fp32 one does (all 10 probabilities, 12 images)
    from ppcls.data.preprocess import create_operators, decode_image, transform
    from ppcls.inference.predictor import OnnxPredictor

    ops = create_operators(TRANSFORMS)
    x = np.stack([transform(decode_image(str(p)), ops) for p in sorted(images.iterdir())])
    p32 = OnnxPredictor(str(fp32_dir)).run(x.astype("float32"))
    p8 = OnnxPredictor(str(out)).run(x.astype("float32"))
    corr = np.corrcoef(p32.ravel(), p8.ravel())[0, 1]
    assert corr > 0.8, (corr, np.abs(p32 - p8).max())  # 0.91 measured; a broken model gives ~0
    with pytest.raises(ConfigError, match="holds no exported model"):
        deploy(out, images, FROM_EXPORT, "Global.use_onnx=False")
    with pytest.raises(ConfigError, match="Quant.method: expected one of minmax, percentile, entropy"):
        tool.main(["-c", str(cfg_file), "-o", "Quant.method=kl"])
