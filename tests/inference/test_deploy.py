"""Predict and deploy: tools/infer.py, deploy/python/predict_cls.py (Paddle Inference with and
without oneDNN, ONNX Runtime) agree; bad images are named and skipped; benchmark report.

Weights: the official PyTorch MobileNeXt's (../shared/fixtures); images: the two photographs
scikit-learn ships (china.jpg, flower.jpg) and variants of them.
"""

import ast
import io
import os
import re
import shutil
import struct
import subprocess
import sys
import zlib

import numpy as np
import paddle
import pytest
import sklearn
from PIL import Image

from conftest import ROOT
from ppcls.inference.deploy import predict_cls
from ppcls.utils import logger
from ppcls.utils.config import get_config
from ppcls.utils.errors import ConfigError
from test_infer_export import official_weights  # noqa: F401  (fixture: official weights as .pdparams)

RECIPE = os.path.join(ROOT, "ppcls", "configs", "ImageNet", "MobileNeXt", "MobileNeXt_100.yaml")
DEPLOY = os.path.join(ROOT, "deploy")
DEPLOY_CFG = os.path.join(DEPLOY, "configs", "inference_cls.yaml")
INFER = os.path.join(ROOT, "tools", "infer.py")
EXPORT = os.path.join(ROOT, "tools", "export_model.py")
PREDICT = os.path.join(DEPLOY, "python", "predict_cls.py")
PHOTOS = os.path.join(os.path.dirname(sklearn.__file__), "datasets", "images")
# The README's deployment command: PIL bicubic resizing, as the recipe's Infer transforms.
DEPLOY_OVERRIDES = ["Global.cpu_num_threads=1",
                    "PreProcess.transform_ops.0.ResizeImage.interpolation=bicubic",
                    "PreProcess.transform_ops.0.ResizeImage.backend=pil",
                    "PostProcess.Topk.class_id_map_file=../ppcls/utils/imagenet1k_label_list.txt"]


def run(args, cwd=ROOT):
    return subprocess.run([sys.executable] + args, cwd=cwd, capture_output=True, text=True,
                          timeout=300)


def error_lines(stderr):
    return [line for line in stderr.splitlines() if line.startswith("Error:")]


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """The two photographs, a crop and a mirrored copy of each: 6 JPEGs / PNGs."""
    folder = tmp_path_factory.mktemp("images")
    for name in ("china.jpg", "flower.jpg"):
        shutil.copy(os.path.join(PHOTOS, name), folder / name)
        img = Image.open(os.path.join(PHOTOS, name)).convert("RGB")
        img.crop((100, 50, 420, 370)).save(folder / f"crop_{name[:-4]}.png")
        img.transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(folder / f"mirror_{name}", quality=90)
    return str(folder)


@pytest.fixture(scope="module")
def exported(official_weights, tmp_path_factory):
    """tools/export_model.py of the recipe with the official weights, plus inference.onnx."""
    out = str(tmp_path_factory.mktemp("export") / "class_MobileNeXt_100_ImageNet_infer")
    proc = run([EXPORT, "-c", RECIPE, "-o", f"Global.pretrained_model={official_weights}",
                "-o", f"Global.save_inference_dir={out}", "-o", "Global.export_onnx=True"])
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert {"inference.json", "inference.pdiparams", "inference.yml",
            "inference.onnx"} <= set(os.listdir(out))
    return out


def infer_results(stdout):
    """tools/infer.py prints one list of result dicts per batch, as PaddleClas."""
    return [r for line in stdout.splitlines() if line.startswith("[{'class_ids'")
            for r in ast.literal_eval(line)]


def deploy_config(model_dir, image_dir, *overrides):
    return get_config(DEPLOY_CFG, DEPLOY_OVERRIDES + [f"Global.inference_model_dir={model_dir}",
                                                      f"Global.infer_imgs={image_dir}"]
                      + list(overrides))


def in_deploy_dir(fn, *args, **kwargs):
    cwd = os.getcwd()
    os.chdir(DEPLOY)  # paths in inference_cls.yaml are relative to deploy/, as in PaddleClas
    try:
        return fn(*args, **kwargs)
    finally:
        os.chdir(cwd)


def assert_same_predictions(got, expected, tol=1e-4):
    assert [r["file_name"] for r in got] == [r["file_name"] for r in expected]
    for a, b in zip(got, expected):
        assert a["class_ids"] == b["class_ids"], a["file_name"]
        assert np.abs(np.array(a["scores"]) - np.array(b["scores"])).max() <= tol, a["file_name"]
        assert a["label_names"] == b["label_names"]


def test_infer_and_all_deploy_backends_agree(official_weights, images, exported):
    proc = run([INFER, "-c", RECIPE, "-o", f"Infer.infer_imgs={images}",
                "-o", f"Global.pretrained_model={official_weights}", "-o", "Infer.batch_size=4"])
    assert proc.returncode == 0, proc.stderr[-2000:]
    reference = infer_results(proc.stdout)
    files = sorted(os.listdir(images))
    assert [os.path.basename(r["file_name"]) for r in reference] == files
    for r in reference:
        assert len(r["class_ids"]) == 5 and r["scores"] == sorted(r["scores"], reverse=True)
        assert all(round(s, 5) == s for s in r["scores"])
    labels = dict(line.rstrip("\n").split(" ", 1) for line in
                  open(os.path.join(ROOT, "ppcls", "utils", "imagenet1k_label_list.txt")))
    assert reference[0]["label_names"] == [labels[str(i)] for i in reference[0]["class_ids"]]

    runs = {
        "paddle, oneDNN on": ["Global.use_onnx=False", "Global.enable_mkldnn=True", "Global.batch_size=3"],
        "paddle, oneDNN off": ["Global.use_onnx=False", "Global.enable_mkldnn=False", "Global.batch_size=1"],
        "onnxruntime": ["Global.use_onnx=True", "Global.batch_size=2"],
    }
    for name, overrides in runs.items():
        lines = []
        results, code = in_deploy_dir(predict_cls, deploy_config(exported, images, *overrides),
                                      emit=lines.append)
        assert code == 0, name
        assert_same_predictions(results, reference)
        assert len(lines) == len(files)

    # the command line, from deploy/, prints PaddleClas's line per image (scores at 2 decimals)
    proc = run([PREDICT, "-c", "configs/inference_cls.yaml"]
               + [arg for o in DEPLOY_OVERRIDES + [f"Global.inference_model_dir={exported}",
                                                    f"Global.infer_imgs={images}"] for arg in ("-o", o)],
               cwd=DEPLOY)
    assert proc.returncode == 0, proc.stderr[-2000:]
    printed = [line for line in proc.stdout.splitlines() if "\tclass id(s): " in line]
    pattern = re.compile(r"^(.+):\tclass id\(s\): (\[.*\]), score\(s\): (\[.*\]), label_name\(s\): (\[.*\])$")
    assert len(printed) == len(reference)
    for line, r in zip(printed, reference):
        file_name, ids, scores, names = pattern.match(line).groups()
        assert file_name == os.path.basename(r["file_name"])  # PaddleClas prints the base name
        assert ast.literal_eval(ids) == r["class_ids"]
        assert ast.literal_eval(names) == r["label_names"]
        scores = ast.literal_eval(scores)
        assert all(round(s, 2) == s for s in scores)
        assert np.abs(np.array(scores) - np.array(r["scores"])).max() <= 0.005 + 1e-4


def test_inference_yml_alone_is_enough(exported, images):
    """An export carries its preprocessing and labels: Global alone deploys it."""
    full = in_deploy_dir(predict_cls, deploy_config(exported, images, "Global.enable_mkldnn=False"),
                         emit=lambda line: None)[0]
    cfg = get_config(os.path.join(DEPLOY, "configs", "inference_cls_from_export.yaml"),
                     [f"Global.inference_model_dir={exported}", f"Global.infer_imgs={images}",
                      "Global.enable_mkldnn=False", "Global.cpu_num_threads=1"])
    assert set(cfg) == {"Global"}
    alone, code = predict_cls(cfg, emit=lambda line: None)
    assert code == 0
    assert_same_predictions(alone, full, tol=1e-6)


def write_bad_images(folder, good_jpeg):
    """A good JPEG, modes that must be converted (each with its RGB twin ref_*.png), bad files."""
    folder.mkdir()
    shutil.copy(good_jpeg, folder / "good.jpg")
    rgb = Image.open(good_jpeg).convert("RGB").crop((0, 0, 400, 300))
    gray = rgb.convert("L")
    gray.save(folder / "gray.png")
    gray.convert("RGB").save(folder / "ref_gray.png")
    Image.fromarray(np.asarray(gray).astype(np.uint16) * 257).save(folder / "gray16.png")  # I;16
    palette = rgb.convert("P", palette=Image.Palette.ADAPTIVE, colors=64)
    palette.save(folder / "palette.png")
    palette.convert("RGB").save(folder / "ref_palette.png")
    cmyk = rgb.convert("CMYK")
    cmyk.save(folder / "cmyk.tif")
    cmyk.convert("RGB").save(folder / "ref_cmyk.png")
    rgba = rgb.convert("RGBA")
    rgba.putalpha(Image.linear_gradient("L").resize(rgb.size))
    rgba.save(folder / "rgba.png")
    white = Image.new("RGBA", rgb.size, (255, 255, 255, 255))
    Image.alpha_composite(white, rgba).convert("RGB").save(folder / "ref_rgba.png")

    (folder / "not_an_image.jpg").write_text("a text file with an image suffix\n")
    (folder / "empty.png").write_bytes(b"")
    data = open(good_jpeg, "rb").read()
    (folder / "truncated.jpg").write_bytes(data[: len(data) // 3])
    # too large: a 1x1 PNG whose header claims 60000 x 60000 pixels (3.6e9, a decompression bomb)
    buf = io.BytesIO()
    Image.new("L", (1, 1)).save(buf, "PNG")
    png = bytearray(buf.getvalue())
    header = bytearray(png[16:29])
    header[0:8] = struct.pack(">II", 60000, 60000)
    png[16:29] = header
    png[29:33] = struct.pack(">I", zlib.crc32(b"IHDR" + bytes(header)))
    (folder / "too_large.png").write_bytes(bytes(png))
    (folder / "notes.txt").write_text("not an image suffix: never read\n")
    return {"not_an_image.jpg": "not an image", "empty.png": "empty file",
            "truncated.jpg": "truncated", "too_large.png": "too large"}


def check_bad_image_run(proc, folder, bad, results):
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout
    errors = error_lines(proc.stderr)
    # one line per bad file, naming it and the reason, in the folder's sorted order; then a summary
    assert len(errors) == len(bad) + 1
    for line, (name, reason) in zip(errors, sorted(bad.items())):
        assert line.startswith(f"Error: {folder / name}: {reason}"), line
    n_images = len(os.listdir(folder)) - 1  # all but notes.txt
    assert errors[-1].startswith(f"Error: {len(bad)} of {n_images} images could not be read")
    predicted = [os.path.basename(r["file_name"]) for r in results]
    assert predicted == sorted(set(os.listdir(folder)) - set(bad) - {"notes.txt"})
    by_name = {os.path.basename(r["file_name"]): r for r in results}
    # converted modes are predicted as their RGB twins (16-bit gray as 8-bit gray)
    for name, twin in [("gray.png", "ref_gray.png"), ("gray16.png", "ref_gray.png"),
                       ("palette.png", "ref_palette.png"), ("cmyk.tif", "ref_cmyk.png"),
                       ("rgba.png", "ref_rgba.png")]:
        assert by_name[name]["class_ids"] == by_name[twin]["class_ids"], name
        assert by_name[name]["scores"] == by_name[twin]["scores"], name


def parse_deploy_lines(stdout):
    results = []
    for line in stdout.splitlines():
        match = re.match(r"^(.+):\tclass id\(s\): (\[.*\]), score\(s\): (\[.*\]), label_name", line)
        if match:
            results.append({"file_name": match.group(1), "class_ids": ast.literal_eval(match.group(2)),
                            "scores": ast.literal_eval(match.group(3))})
    return results


def test_bad_images_are_named_and_skipped(official_weights, exported, tmp_path):
    folder = tmp_path / "mixed"
    bad = write_bad_images(folder, os.path.join(PHOTOS, "china.jpg"))

    proc = run([INFER, "-c", RECIPE, "-o", f"Infer.infer_imgs={folder}",
                "-o", f"Global.pretrained_model={official_weights}", "-o", "Infer.batch_size=4"])
    check_bad_image_run(proc, folder, bad, infer_results(proc.stdout))

    proc = run([PREDICT, "-c", "configs/inference_cls.yaml", "-o", "Global.batch_size=3"]
               + [arg for o in DEPLOY_OVERRIDES + [f"Global.inference_model_dir={exported}",
                                                    f"Global.infer_imgs={folder}"] for arg in ("-o", o)],
               cwd=DEPLOY)
    check_bad_image_run(proc, folder, bad, parse_deploy_lines(proc.stdout))


def test_benchmark_report(exported, images, capsys):
    logger.init_logger()  # log to the captured stdout
    results, code = in_deploy_dir(predict_cls, deploy_config(
        exported, images, "Global.benchmark=True", "Global.batch_size=2", "Global.warmup_iters=1"),
        emit=lambda line: None)
    out = capsys.readouterr().out
    logger.init_logger()
    assert code == 0 and len(results) == 6
    stats = {}
    for stage in ("preprocess", "inference", "postprocess"):
        match = re.search(rf"{stage} time per batch \(ms\): mean ([\d.]+), p50 ([\d.]+), p90 ([\d.]+)", out)
        assert match, out
        mean, p50, p90 = map(float, match.groups())
        assert 0 < p50 <= p90 and mean > 0
        stats[stage] = mean
    assert "data_num: 6, batches: 3" in out
    match = re.search(r"throughput: ([\d.]+) images/s", out)
    # images per second = images / the summed stage times (3 batches of 2)
    assert float(match.group(1)) == pytest.approx(6 / (3 * sum(stats.values()) / 1000.0), rel=0.01)
    assert re.search(r"preprocess_time\(ms\): [\d.]+, inference_time\(ms\): [\d.]+, "
                     r"postprocess_time\(ms\): [\d.]+", out)


@pytest.mark.skipif(paddle.device.is_compiled_with_cuda(), reason="checks the CPU-only build")
def test_gpu_options_on_a_cpu_build_warn_and_run_on_cpu(exported, images, capsys):
    logger.init_logger()
    cpu = in_deploy_dir(predict_cls, deploy_config(exported, images, "Global.use_onnx=False"),
                        emit=lambda line: None)[0]
    gpu, code = in_deploy_dir(predict_cls, deploy_config(
        exported, images, "Global.use_gpu=True", "Global.use_tensorrt=True", "Global.use_fp16=True"),
        emit=lambda line: None)
    out = capsys.readouterr().out
    logger.init_logger()
    assert code == 0
    assert_same_predictions(gpu, cpu, tol=1e-6)
    assert "Global.use_gpu=True, but this PaddlePaddle build has no CUDA" in out
    assert "running on CPU" in out
    assert "Global.use_tensorrt=True needs a GPU" in out
    assert "Global.use_fp16=True needs a GPU" in out and "running in FP32" in out
    # the log states what ran, not what was asked for
    assert "predicting with paddle_inference on cpu, fp32" in out


def test_deploy_config_errors_are_clear(exported, images, tmp_path):
    with pytest.raises(ConfigError, match="Global.inference_model_dir: no such folder: /nonexistent"):
        predict_cls(deploy_config("/nonexistent", images), emit=print)
    empty = tmp_path / "empty_model"
    empty.mkdir()
    with pytest.raises(ConfigError, match="holds no exported model .*found nothing"):
        in_deploy_dir(predict_cls, deploy_config(str(empty), images), emit=print)
    no_onnx = tmp_path / "no_onnx"
    shutil.copytree(exported, no_onnx, ignore=shutil.ignore_patterns("*.onnx"))
    with pytest.raises(ConfigError, match="inference.onnx does not exist; convert the export first"):
        in_deploy_dir(predict_cls, deploy_config(str(no_onnx), images, "Global.use_onnx=True"), emit=print)
    with pytest.raises(ConfigError, match="Global.infer_imgs: no such file or folder: /nonexistent.jpg"):
        in_deploy_dir(predict_cls, deploy_config(exported, "/nonexistent.jpg"), emit=print)
