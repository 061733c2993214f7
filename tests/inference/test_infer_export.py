"""tools/export_model.py: the exported program computes what the dygraph model computes.

Weights: the official PyTorch MobileNeXt's (../shared/fixtures), so the outputs are the
published network's, not a random one's.
"""

import hashlib
import os
import subprocess
import sys

import numpy as np
import paddle
import pytest
import yaml

from conftest import ROOT
from ppcls.inference.export import build_eval_model, export_model
from ppcls.inference.predictor import PaddlePredictor
from ppcls.utils.torch_weights import torch_state_dict_to_paddle
from ppcls.utils.weights import save_state_dict

LABELS = os.path.join(ROOT, "ppcls", "utils", "imagenet1k_label_list.txt")
EXPORT = os.path.join(ROOT, "tools", "export_model.py")
INFER_TRANSFORMS = [
    {"DecodeImage": {"to_rgb": True, "channel_first": False}},
    {"ResizeImage": {"resize_short": 256, "interpolation": "bicubic", "backend": "pil"}},
    {"CropImage": {"size": 224}},
    {"NormalizeImage": {"scale": "1.0/255.0", "mean": [0.485, 0.456, 0.406],
                        "std": [0.229, 0.224, 0.225], "order": ""}},
    {"ToCHWImage": None},
]


@pytest.fixture(scope="module")
def official_weights(official_npz, tmp_path_factory):
    prefix = "state_dict/"
    state = torch_state_dict_to_paddle(
        {k[len(prefix):]: official_npz[k] for k in official_npz.files if k.startswith(prefix)})
    path = str(tmp_path_factory.mktemp("weights") / "official_w1_0.pdparams")
    save_state_dict(state, path)
    return path


def make_config(weights, out_dir, **global_overrides):
    cfg = {
        "Global": {"pretrained_model": weights, "save_inference_dir": str(out_dir),
                   "image_shape": [3, 224, 224], **global_overrides},
        "Arch": {"name": "MobileNeXt_x1_0", "class_num": 1000},
        "Infer": {"infer_imgs": "unused.jpg", "batch_size": 2, "transforms": INFER_TRANSFORMS,
                  "PostProcess": {"name": "Topk", "topk": 5, "class_id_map_file": LABELS}},
    }
    return cfg


def predict(model_dir, batch):
    predictor = PaddlePredictor(str(model_dir), enable_mkldnn=False, cpu_num_threads=1)
    return predictor.run(batch)


def test_exported_logits_equal_dygraph_and_official(official_npz, official_weights, tmp_path):
    cfg = make_config(official_weights, tmp_path / "logits", export_softmax=False, export_onnx=False)
    export_model(cfg)
    x = official_npz["input"]
    exported = predict(tmp_path / "logits", x)
    with paddle.no_grad():
        dygraph = build_eval_model(cfg)(paddle.to_tensor(x)).numpy()
    assert exported.shape == (2, 1000)
    assert np.abs(exported - dygraph).max() < 1e-5
    # and it is the published network: the official PyTorch logits (fixture README: 1e-4)
    assert np.abs(exported - official_npz["logits"]).max() < 1e-4
    # the batch dimension is free: one image alone gives the same row
    single = predict(tmp_path / "logits", x[1:])
    assert np.abs(single[0] - dygraph[1]).max() < 1e-5


def test_export_appends_softmax_and_records_deployment(official_npz, official_weights, tmp_path):
    out = tmp_path / "softmax"
    cfg = make_config(official_weights, out)
    export_model(cfg)
    # a plain export (no Global.export_onnx) also holds inference.onnx: the fastest CPU back-end
    assert sorted(os.listdir(out)) == ["imagenet1k_label_list.txt", "inference.json",
                                       "inference.onnx", "inference.pdiparams", "inference.yml"]
    x = official_npz["input"]
    probs = predict(out, x)
    with paddle.no_grad():
        dygraph = paddle.nn.functional.softmax(build_eval_model(cfg)(paddle.to_tensor(x)), -1).numpy()
    assert np.abs(probs - dygraph).max() < 1e-5
    assert np.allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(np.argsort(-probs, axis=1)[:, :5],
                                  np.argsort(-official_npz["logits"], axis=1)[:, :5])

    with open(out / "inference.yml", encoding="utf-8") as f:
        record = yaml.safe_load(f)
    assert record["Global"]["export_softmax"] is True
    assert record["Global"]["image_shape"] == [3, 224, 224]
    # the Infer transforms minus DecodeImage (deployment decodes the file itself)
    assert record["PreProcess"]["transform_ops"] == INFER_TRANSFORMS[1:]
    assert record["PostProcess"]["Topk"] == {"topk": 5, "class_id_map_file": "imagenet1k_label_list.txt"}
    # and what the folder holds, with content hashes (hashlib, not our helper)
    assert record["Global"]["precision"] == "fp32"
    assert record["Files"] == {name: "sha256:" + hashlib.sha256((out / name).read_bytes()).hexdigest()
                               for name in os.listdir(out) if name != "inference.yml"}
    with open(out / "imagenet1k_label_list.txt", "rb") as a, open(LABELS, "rb") as b:
        assert a.read() == b.read()


def test_paddle2_pdmodel_export_still_loads(tmp_path):
    """An old-IR export (inference.pdmodel, what Paddle 2.x wrote) is the loader's fallback."""
    paddle.seed(3)
    model = build_eval_model({"Arch": {"name": "MobileNeXt_x0_35", "class_num": 10}})
    x = np.random.RandomState(0).rand(2, 3, 64, 64).astype("float32")
    with paddle.no_grad():
        expected = model(paddle.to_tensor(x)).numpy()
    with paddle.pir_utils.OldIrGuard():
        static = paddle.jit.to_static(
            model, input_spec=[paddle.static.InputSpec([None, 3, 64, 64], "float32", "x")],
            full_graph=True)
        paddle.jit.save(static, str(tmp_path / "inference"))
    assert os.path.isfile(tmp_path / "inference.pdmodel")
    assert not os.path.exists(tmp_path / "inference.json")
    assert np.abs(predict(tmp_path, x) - expected).max() < 1e-5


def run(args, cwd=ROOT):
    return subprocess.run([sys.executable] + args, cwd=cwd, capture_output=True, text=True,
                          timeout=300)


def test_failed_export_is_one_line_and_keeps_the_previous_export(official_weights, tmp_path):
    out = tmp_path / "model"
    export_model(make_config(official_weights, out, export_onnx=False))
    before = {name: (out / name).read_bytes() for name in os.listdir(out)}
    cfg_path = tmp_path / "cfg.yaml"
    cfg_path.write_text(yaml.safe_dump(make_config(official_weights, out)))

    proc = run([EXPORT, "-c", str(cfg_path), "-o", f"Global.pretrained_model={tmp_path}/missing"])
    assert proc.returncode == 2, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("Error:")]
    assert errors == [f"Error: weight file not found: {tmp_path}/missing (also tried "
                      f"{tmp_path}/missing.pdparams, {tmp_path}/missing.safetensors)"]
    assert "Traceback" not in proc.stderr

    proc = run([EXPORT, "-c", str(cfg_path), "-o", "Global.image_shape=[3,224]"])
    assert proc.returncode == 2
    assert "Global.image_shape: expected [channels, height, width]" in proc.stderr
    assert "Traceback" not in proc.stderr

    assert {name: (out / name).read_bytes() for name in os.listdir(out)} == before
