"""PaddleClas data semantics: the dataset makes [C, H, W] after transform_ops (a list that
already ends in ToCHWImage is not transposed twice), and the op keys PaddleClas's files use
(DecodeImage backend/to_np, ResizeImage return_numpy, RandCropImage progress_size)."""

import glob
import io
import os

import numpy as np
import pytest
import yaml
from PIL import Image

from conftest import FIXTURES
from ppcls.data.dataset import ImageNetDataset
from ppcls.data.preprocess import create_operators, ops, transform
from ppcls.utils.errors import ConfigError

MEAN = np.array([0.485, 0.456, 0.406])
STD = np.array([0.229, 0.224, 0.225])
NORM = {"NormalizeImage": {"scale": "1.0/255.0", "mean": MEAN.tolist(), "std": STD.tolist(), "order": ""}}
# a non-square crop, so a missing or doubled transpose shows in the shape
EVAL_HWC = [{"DecodeImage": {"to_rgb": True, "channel_first": False, "backend": "pil"}},
            {"ResizeImage": {"resize_short": 36, "interpolation": "bicubic", "backend": "pil"}},
            {"CropImage": {"size": [40, 24]}}, NORM]
UPSTREAM_OPS = ("DecodeImage", "ResizeImage", "CropImage", "RandCropImage", "RandFlipImage",
                "NormalizeImage", "ToCHWImage", "ColorJitter")


def picture(h=48, w=64, seed=0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([xx * 255 // (w - 1), yy * 255 // (h - 1), (xx + yy) % 256], -1)
    return np.clip(base + rng.integers(0, 60, (h, w, 3)), 0, 255).astype(np.uint8)


def encoded(arr, fmt="PNG"):
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, fmt, **({"quality": 95} if fmt == "JPEG" else {}))
    return buf.getvalue()


@pytest.fixture
def one_image(tmp_path):
    arr = picture()
    Image.fromarray(arr).save(tmp_path / "a.png")
    (tmp_path / "list.txt").write_text("a.png 3\n")
    return tmp_path, arr


def reference_eval(arr):
    """EVAL_HWC computed with PIL and numpy alone, then made [C, H, W]."""
    img = Image.fromarray(arr).resize((48, 36), Image.BICUBIC)  # short side 48 -> 36
    img = np.asarray(img)[6:30, 4:44]  # center 40 (w) x 24 (h)
    return ((img / 255.0 - MEAN) / STD).transpose(2, 0, 1)


# ---------------------------------------------------------------- the dataset's CHW step

def test_dataset_makes_chw_after_a_list_without_tochw(one_image):
    root, arr = one_image
    img, label = ImageNetDataset(str(root), str(root / "list.txt"), EVAL_HWC)[0]
    assert img.shape == (3, 24, 40) and img.dtype == np.float32 and label == 3
    assert np.abs(img - reference_eval(arr)).max() < 1e-5


def test_a_list_ending_in_tochw_is_not_transposed_twice(one_image):
    root, arr = one_image
    img, _ = ImageNetDataset(str(root), str(root / "list.txt"), EVAL_HWC + [{"ToCHWImage": None}])[0]
    assert img.shape == (3, 24, 40)
    assert np.abs(img - reference_eval(arr)).max() < 1e-5
    # ToCHWImage before NormalizeImage(order: chw), PaddleClas's other spelling: still CHW once
    chw_first = EVAL_HWC[:3] + [{"ToCHWImage": None}, {"NormalizeImage": {"order": "chw"}}]
    img, _ = ImageNetDataset(str(root), str(root / "list.txt"), chw_first)[0]
    assert img.shape == (3, 24, 40) and np.abs(img - reference_eval(arr)).max() < 1e-5
    # DecodeImage channel_first: True decodes straight to [3, H, W]: left as it is
    img, _ = ImageNetDataset(str(root), str(root / "list.txt"),
                             [{"DecodeImage": {"channel_first": True}}])[0]
    assert img.shape == (3, 48, 64) and np.array_equal(img, arr.transpose(2, 0, 1))


def test_the_fixture_recipes_train_and_eval_lists_give_chw(tmp_path):
    """The seed's and upstream's MobileNeXt YAMLs (no ToCHWImage in Train/Eval) through our dataset."""
    Image.fromarray(picture(256, 300)).save(tmp_path / "a.jpg", quality=95)
    (tmp_path / "list.txt").write_text("a.jpg 0\n")
    for name in ("seed/MobileNeXt_100.yaml", "upstream/MobileNeXt_x1_0.yaml"):
        with open(os.path.join(FIXTURES, "paddleclas", name)) as f:
            cfg = yaml.safe_load(f)
        for mode in ("Train", "Eval"):
            op_list = cfg["DataLoader"][mode]["dataset"]["transform_ops"]
            assert "ToCHWImage" not in [next(iter(op)) for op in op_list]
            img, _ = ImageNetDataset(str(tmp_path), str(tmp_path / "list.txt"), op_list)[0]
            assert img.shape == (3, 224, 224) and img.dtype == np.float32, (name, mode)


def test_every_fixture_yaml_key_on_these_ops_is_accepted():
    """Each transform list of every PaddleClas YAML in the fixtures, restricted to the ops here,
    builds (the keys are upstream's: backend, channel_num, interpolation, ...)."""
    seen = set()

    def lists(node):
        if isinstance(node, dict):
            for key, value in node.items():
                if key in ("transform_ops", "transforms") and isinstance(value, list):
                    yield value
                else:
                    yield from lists(value)
        elif isinstance(node, list):
            for item in node:
                yield from lists(item)

    files = sorted(glob.glob(os.path.join(FIXTURES, "paddleclas", "*", "*.yaml")))
    assert len(files) >= 15
    for path in files:
        with open(path) as f:
            cfg = yaml.safe_load(f)
        for op_list in lists(cfg):
            ours = [op for op in op_list if isinstance(op, dict) and next(iter(op)) in UPSTREAM_OPS]
            create_operators(ours, where=path)
            seen |= {(next(iter(op)), key) for op in ours for key in (next(iter(op.values())) or {})}
    assert {("DecodeImage", "backend"), ("RandCropImage", "backend"),
            ("NormalizeImage", "channel_num")} <= seen


# ---------------------------------------------------------------- DecodeImage backend / to_np

def test_cv2_and_pil_decoding_give_the_same_rgb_image():
    arr = picture()
    png = encoded(arr)
    pil = ops.DecodeImage(backend="pil")(png)
    cv2 = ops.DecodeImage(backend="cv2")(png)
    assert np.array_equal(pil, arr) and np.array_equal(cv2, arr)  # lossless: exact
    jpeg = encoded(arr, "JPEG")
    diff = np.abs(ops.DecodeImage(backend="cv2")(jpeg).astype(int) - ops.DecodeImage(backend="pil")(jpeg))
    assert diff.max() <= 2  # two JPEG decoders
    assert np.array_equal(ops.DecodeImage(backend="cv2", to_rgb=False)(png), arr[:, :, ::-1])
    assert np.array_equal(ops.DecodeImage(backend="CV2")(png), arr)  # PaddleClas lowercases it
    with pytest.raises(ConfigError, match=r"DecodeImage: key 'backend' expects 'pil' or 'cv2', got 'opencv'"):
        create_operators([{"DecodeImage": {"backend": "opencv"}}])


def test_to_np_false_gives_a_pil_image_the_next_ops_take():
    arr = picture()
    png = encoded(arr)
    img = ops.DecodeImage(to_np=False, backend="pil")(png)
    assert isinstance(img, Image.Image) and img.mode == "RGB" and np.array_equal(np.asarray(img), arr)
    # the FasterNet / MobileViTV2 eval list (to_np: False, order: hwc) equals the numpy path
    tail = [{"ResizeImage": {"resize_short": 36, "interpolation": "bicubic", "backend": "pil"}},
            {"CropImage": {"size": [40, 24]}}, {"NormalizeImage": {"order": "hwc"}}]
    as_pil = transform(png, create_operators([{"DecodeImage": {"to_np": False, "backend": "pil"}}] + tail))
    as_np = transform(png, create_operators([{"DecodeImage": None}] + tail))
    assert as_pil.shape == (24, 40, 3) and np.array_equal(as_pil, as_np)
    # with cv2, PaddleClas hands on OpenCV's array untouched: BGR
    assert np.array_equal(ops.DecodeImage(to_np=False, backend="cv2")(png), arr[:, :, ::-1])
    with pytest.raises(ConfigError, match=r"key 'to_np' expects true/false, got 'no'"):
        ops.DecodeImage(to_np="no")


# ---------------------------------------------------------------- ResizeImage.return_numpy

def test_resize_return_numpy_false_gives_a_pil_image():
    arr = picture()
    out = ops.ResizeImage(resize_short=36, interpolation="bicubic", return_numpy=False)(arr)
    assert isinstance(out, Image.Image) and out.size == (48, 36)
    ref = Image.fromarray(arr).resize((48, 36), Image.BICUBIC)
    assert np.array_equal(np.asarray(out), np.asarray(ref))
    # a PIL image in, a PIL image out; the crop after it takes it
    again = ops.ResizeImage(size=[20, 10], return_numpy=False)(out)
    assert isinstance(again, Image.Image) and again.size == (20, 10)
    crop = ops.CropImage(size=[40, 24])(out)
    assert isinstance(crop, np.ndarray) and np.array_equal(crop, np.asarray(ref)[6:30, 4:44])
    assert isinstance(ops.ResizeImage(resize_short=36)(arr), np.ndarray)  # the default
    # cv2 always gives an array (PaddleClas applies return_numpy to PIL only)
    assert isinstance(ops.ResizeImage(resize_short=36, backend="cv2", return_numpy=False)(arr), np.ndarray)


# ---------------------------------------------------------------- RandCropImage.progress_size

def test_progress_size_is_kept_and_the_crop_stays_at_size():
    arr = picture(96, 128)
    op = create_operators([{"RandCropImage": {"size": 32, "progress_size": [16, 24, 28, 32]}}])[0]
    assert op.progress_size == [(16, 16), (24, 24), (28, 28), (32, 32)]
    plain = ops.RandCropImage(size=32)
    for seed in range(3):
        out = op(arr, rng=np.random.default_rng(seed))
        assert out.shape == (32, 32, 3)  # progressive training sets `size`; the op crops to it
        assert np.array_equal(out, plain(arr, rng=np.random.default_rng(seed)))
    with pytest.raises(ConfigError, match=r"RandCropImage: key 'progress_size' expects a list of sizes"):
        create_operators([{"RandCropImage": {"size": 32, "progress_size": 300}}])
    with pytest.raises(ConfigError, match=r"key 'progress_size' expects a positive integer"):
        ops.RandCropImage(size=32, progress_size=[171, -1])


# ---------------------------------------------------------------- the shipped recipes

def test_recipes_are_in_upstream_form_under_both_names():
    from conftest import ROOT
    from ppcls.arch import MODELS

    folder = os.path.join(ROOT, "ppcls", "configs", "ImageNet", "MobileNeXt")
    recipes = {}
    for name in ("MobileNeXt_100", "MobileNeXt_100_cooldown", "MobileNeXt_x0_35", "MobileNeXt_x0_5",
                 "MobileNeXt_x0_75", "MobileNeXt_x1_0", "MobileNeXt_x1_4"):
        with open(os.path.join(folder, name + ".yaml")) as f:
            recipes[name] = yaml.safe_load(f)
    with open(os.path.join(ROOT, "configs", "quickstart", "MobileNeXt_x1_0_digits.yaml")) as f:
        quickstart = yaml.safe_load(f)
    for name, cfg in [*recipes.items(), ("quickstart", quickstart)]:
        for mode in ("Train", "Eval"):
            names = [next(iter(op)) for op in cfg["DataLoader"][mode]["dataset"]["transform_ops"]]
            assert "ToCHWImage" not in names, (name, mode)  # the dataset makes [C, H, W]
        assert [next(iter(op)) for op in cfg["Infer"]["transforms"]][-1] == "ToCHWImage", name
    base = recipes["MobileNeXt_100"]
    for width in ("x0_35", "x0_5", "x0_75", "x1_0", "x1_4"):
        cfg = recipes[f"MobileNeXt_{width}"]
        assert cfg["Arch"]["name"] == f"MobileNeXt_{width}" and cfg["Arch"]["name"] in MODELS
        assert {**cfg, "Arch": base["Arch"]} == base, width  # the same recipe, another width
