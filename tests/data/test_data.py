"""The data pipeline: list-file checks, image decoding, transform ops, reproducible augmentation,
sharding, bad images during iteration, and the quickstart data tool."""

import io
import os
import re
import struct
import subprocess
import sys
import zlib
from collections import Counter

import numpy as np
import pytest
from PIL import Image

from conftest import ROOT
from ppcls.data import build_dataloader
from ppcls.data.dataset import ImageNetDataset
from ppcls.data.preprocess import create_operators, decode_image, ops, transform
from ppcls.data.sampler import DistributedBatchSampler, batch_indices
from ppcls.utils.errors import ConfigError, DataError

MEAN = [0.485, 0.456, 0.406]
STD = [0.229, 0.224, 0.225]
TRAIN_OPS = [
    {"DecodeImage": {"to_rgb": True, "channel_first": False}},
    {"RandCropImage": {"size": 24, "scale": [0.08, 1.0], "ratio": [0.75, 1.3333],
                       "interpolation": "random"}},
    {"RandFlipImage": {"flip_code": 1}},
    {"ColorJitter": {"brightness": 0.4, "contrast": 0.4, "saturation": 0.4}},
    {"NormalizeImage": {"scale": "1.0/255.0", "mean": MEAN, "std": STD, "order": ""}},
    {"ToCHWImage": None},
]
EVAL_OPS = [
    {"DecodeImage": {"to_rgb": True, "channel_first": False}},
    {"ResizeImage": {"resize_short": 36, "interpolation": "bicubic", "backend": "pil"}},
    {"CropImage": {"size": 32}},
    {"NormalizeImage": {"scale": 0.00392156862745098, "mean": MEAN, "std": STD, "order": ""}},
    {"ToCHWImage": None},
]


def photo(h=375, w=500, seed=0):
    """A smooth test picture with detail (so interpolation methods differ)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([xx * 255 // max(w - 1, 1), yy * 255 // max(h - 1, 1), (xx + yy) % 256], -1)
    noise = rng.integers(0, 60, (h, w, 3))
    return np.clip(base + noise, 0, 255).astype(np.uint8)


def write_jpeg(path, arr):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(arr).save(path, "JPEG", quality=95)


def config(root, list_file, ops_list=TRAIN_OPS, mode="Train", batch_size=8, workers=0, shuffle=True,
           class_num=10, **global_keys):
    return {"Global": dict(global_keys), "Arch": {"name": "MobileNeXt_x1_0", "class_num": class_num},
            "DataLoader": {mode: {
                "dataset": {"name": "ImageNetDataset", "image_root": str(root),
                            "cls_label_path": str(list_file), "transform_ops": ops_list},
                "sampler": {"name": "DistributedBatchSampler", "batch_size": batch_size,
                            "drop_last": False, "shuffle": shuffle},
                "loader": {"num_workers": workers, "use_shared_memory": True}}}}


# ---------------------------------------------------------------- quickstart data (real scans)

@pytest.fixture(scope="session")
def digits(tmp_path_factory):
    out = tmp_path_factory.mktemp("qs") / "digits"
    run = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "prepare_quickstart_data.py"),
                          "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    return out


@pytest.fixture()
def small_list(digits, tmp_path):
    """The first 40 training scans of the quickstart set, as a list file of their own."""
    lines = (digits / "train_list.txt").read_text().splitlines()[:40]
    path = tmp_path / "small_list.txt"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_quickstart_data_has_all_scans_and_every_line_loads(digits):
    from sklearn.datasets import load_digits

    target = load_digits().target
    jpgs = [f for _, _, files in os.walk(digits) for f in files if f.endswith(".jpg")]
    assert len(jpgs) == 1797 == len(target)
    labels = {}
    for split in ("train", "val"):
        ds = ImageNetDataset(str(digits), str(digits / f"{split}_list.txt"), EVAL_OPS, class_num=10)
        labels[split] = ds.labels
        for i in range(len(ds)):
            img, label = ds[i]
            assert img.shape == (3, 32, 32) and img.dtype == np.float32
    assert len(labels["train"]) + len(labels["val"]) == 1797
    # every scan once, with its own label (file name = index in load_digits)
    names = [line.split()[0] for s in ("train", "val") for line in (digits / f"{s}_list.txt").read_text().splitlines()]
    idx = sorted(int(os.path.splitext(os.path.basename(n))[0]) for n in names)
    assert idx == list(range(1797))
    for line in (digits / "val_list.txt").read_text().splitlines():
        rel, label = line.split()
        assert int(label) == target[int(os.path.basename(rel)[:5])] == int(rel.split("/")[1])
    # stratified: each class holds out 20% of its scans (to within one)
    per_class, val_per_class = Counter(target.tolist()), Counter(labels["val"])
    for c in range(10):
        assert abs(val_per_class[c] - 0.2 * per_class[c]) <= 1
    names_file = (digits / "label_list.txt").read_text().splitlines()
    assert names_file[0] == "0 zero" and names_file[9] == "9 nine" and len(names_file) == 10


def test_quickstart_tool_is_idempotent_and_never_clobbers(digits, tmp_path):
    tool = os.path.join(ROOT, "tools", "prepare_quickstart_data.py")
    before = sorted(os.listdir(digits / "val" / "3"))
    again = subprocess.run([sys.executable, tool, "--out", str(digits)], capture_output=True, text=True)
    assert again.returncode == 0 and "nothing to do" in again.stdout
    other = subprocess.run([sys.executable, tool, "--out", str(digits), "--size", "48"],
                           capture_output=True, text=True)
    assert other.returncode == 2 and other.stderr.startswith("Error: ") and "--force" in other.stderr
    assert "Traceback" not in other.stderr and len(other.stderr.strip().splitlines()) == 1
    assert sorted(os.listdir(digits / "val" / "3")) == before
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    refused = subprocess.run([sys.executable, tool, "--out", str(foreign)], capture_output=True, text=True)
    assert refused.returncode == 2 and "not made by this tool" in refused.stderr
    assert (foreign / "notes.txt").read_text() == "keep me"


def test_quickstart_ilsvrc_layout_and_large_size(tmp_path):
    from ppcls.data.digits import prepare_digits, render

    assert render(np.full((8, 8), 16.0), 224).size == (224, 224)
    out = tmp_path / "ILSVRC2012"
    prepare_digits(str(out), size=8, layout="ilsvrc", progress=False)
    train = (out / "train_list.txt").read_text().splitlines()
    val = (out / "val_list.txt").read_text().splitlines()
    assert len(train) + len(val) == 1797
    assert train[0].startswith("train/n00000000/n00000000_") and val[0].startswith("val/ILSVRC2012_val_00000001.JPEG ")
    ImageNetDataset(str(out), str(out / "val_list.txt"), class_num=10)


# ---------------------------------------------------------------- the list file is checked up front

@pytest.fixture()
def tiny_root(tmp_path):
    for i in range(4):
        write_jpeg(str(tmp_path / "imgs" / f"{i}.jpg"), photo(40, 50, seed=i))
    return tmp_path


@pytest.mark.parametrize("lines, line_no, words", [
    (["imgs/0.jpg 1", "imgs/1.jpg 2", "imgs/2.jpg"], 3, ["expected '<relative/path> <label>'", "'imgs/2.jpg'"]),
    (["imgs/0.jpg 1", "imgs/1.jpg two"], 2, ["label 'two' is not an integer"]),
    (["imgs/0.jpg 1", "imgs/9.jpg 2", "imgs/2.jpg 3"], 2, ["image file not found", "imgs/9.jpg"]),
    (["imgs/0.jpg 1", "imgs/1.jpg 2", "imgs/2.jpg 3", "imgs/3.jpg 10"], 4,
     ["label 10 is outside [0, 10)", "Arch.class_num is 10"]),
    (["imgs/0.jpg -1"], 1, ["label -1 is outside [0, 10)"]),
])
def test_bad_list_file_names_file_and_line(tiny_root, lines, line_no, words):
    list_file = tiny_root / "list.txt"
    list_file.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError) as err:
        build_dataloader(config(tiny_root, list_file), "Train", seed=0)
    msg = str(err.value)
    assert msg.startswith(f"{list_file} line {line_no}: ")
    for word in words:
        assert word in msg
    assert "\n" not in msg


def test_list_problems_are_counted(tiny_root):
    list_file = tiny_root / "list.txt"
    list_file.write_text("imgs/0.jpg 1\nimgs/x.jpg 1\nimgs/y.jpg 1\nimgs/1.jpg 99\n")
    with pytest.raises(DataError, match=r"line 2: image file not found.*\(and 2 more bad lines in this file\)"):
        ImageNetDataset(str(tiny_root), str(list_file), class_num=10)


def test_missing_list_and_root(tiny_root):
    with pytest.raises(DataError, match="list file not found: .*nope.txt"):
        ImageNetDataset(str(tiny_root), str(tiny_root / "nope.txt"))
    (tiny_root / "l.txt").write_text("imgs/0.jpg 0\n")
    with pytest.raises(DataError, match="image_root is not a folder: .*absent"):
        ImageNetDataset(str(tiny_root / "absent"), str(tiny_root / "l.txt"))


def test_paths_with_spaces_and_custom_delimiter(tiny_root):
    os.rename(tiny_root / "imgs" / "1.jpg", tiny_root / "imgs" / "a b.jpg")
    (tiny_root / "l.txt").write_text("imgs/a b.jpg 3\r\n\nimgs/0.jpg 4\n")
    ds = ImageNetDataset(str(tiny_root), str(tiny_root / "l.txt"), class_num=10)
    assert ds.labels == [3, 4] and ds.images[0].endswith("a b.jpg")
    (tiny_root / "t.txt").write_text("imgs/a b.jpg\t3\n")
    assert ImageNetDataset(str(tiny_root), str(tiny_root / "t.txt"), delimiter="\t").labels == [3]


# ---------------------------------------------------------------- a bad image during iteration

@pytest.fixture()
def corrupt_root(small_list, digits, tmp_path):
    """The 40-scan list with its 11th image replaced by a truncated JPEG."""
    lines = small_list.read_text().splitlines()
    rel = lines[10].split()[0]
    good = (digits / rel).read_bytes()
    root = tmp_path / "root"
    for line in lines:
        src = digits / line.split()[0]
        dst = root / line.split()[0]
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.write_bytes(src.read_bytes())
    (root / rel).write_bytes(good[: len(good) // 2])
    return root, small_list, rel


@pytest.mark.parametrize("workers", [0, 2])
def test_corrupt_jpeg_during_iteration_names_image_and_line(corrupt_root, workers):
    root, list_file, rel = corrupt_root
    loader = build_dataloader(config(root, list_file, batch_size=8, workers=workers), "Train", seed=1)
    with pytest.raises(DataError) as err:
        for _ in loader:
            pass
    msg = str(err.value)
    assert msg.startswith(f"{os.path.join(str(root), rel)} (line 11 of {list_file}): cannot decode image: ")
    assert "truncated" in msg and "\n" not in msg and "Traceback" not in msg


@pytest.mark.parametrize("workers", [0, 2])
def test_skip_bad_images_drops_and_counts(corrupt_root, workers):
    root, list_file, rel = corrupt_root
    cfg = config(root, list_file, batch_size=1, workers=workers, skip_bad_images=True)
    loader = build_dataloader(cfg, "Train", seed=1)
    for epoch in (1, 2):
        loader.batch_sampler.set_epoch(epoch)
        labels, seen = [], []
        for _, y, indices in loader:
            labels.append(int(y[0]))
            seen += indices.tolist()
        assert len(labels) == 39  # the one-image batch of the bad scan is left out
        assert sorted(seen) == [i for i in range(40) if i != 10]
        assert loader.epoch_skipped == 1
    assert loader.num_skipped == 2
    assert all(rel in m and "line 11" in m for m in loader.skipped_images)
    expected = Counter(int(line.split()[1]) for i, line in enumerate(list_file.read_text().splitlines()) if i != 10)
    assert Counter(labels) == expected


class _Broken:
    """An op with a bug in it (not bad data)."""

    def __call__(self, img, rng=None):
        raise ZeroDivisionError("bug in a transform op")


@pytest.mark.parametrize("workers", [0, 2])
def test_a_bug_in_an_op_is_raised_not_hung(digits, small_list, workers):
    # paddle's own single-process reader thread hangs for good when a dataset raises; ours must not
    loader = build_dataloader(config(digits, small_list, batch_size=8, workers=workers), "Train", seed=0)
    loader.dataset.ops = loader.dataset.ops[:1] + [_Broken()]
    with pytest.raises(RuntimeError) as err:
        next(iter(loader))
    assert re.search(r"^ZeroDivisionError while making .*digits/train/\d/\d{5}\.jpg \(line \d+ of .*small_list.txt\)",
                     str(err.value))
    assert "bug in a transform op" in str(err.value)


def test_images_of_different_sizes_in_a_batch(tmp_path):
    write_jpeg(str(tmp_path / "a.jpg"), photo(30, 40))
    write_jpeg(str(tmp_path / "b.jpg"), photo(32, 40))
    (tmp_path / "l.txt").write_text("a.jpg 0\nb.jpg 1\n")
    no_crop = [{"DecodeImage": None}, {"NormalizeImage": {"order": ""}}, {"ToCHWImage": None}]
    loader = build_dataloader(config(tmp_path, tmp_path / "l.txt", no_crop, batch_size=2), "Train", seed=0)
    with pytest.raises(DataError, match=r"different shapes \[\(3, 30, 40\), \(3, 32, 40\)\].*CropImage"):
        next(iter(loader))


# ---------------------------------------------------------------- decoding what users feed

def _encode(img, fmt, **kw):
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def test_decode_modes_become_rgb(tmp_path):
    rgb = photo(30, 40)
    gray = rgb[:, :, 0]
    out = decode_image(_encode(Image.fromarray(gray, "L"), "PNG"))
    assert out.shape == (30, 40, 3) and out.dtype == np.uint8
    assert np.array_equal(out, np.repeat(gray[:, :, None], 3, axis=2))

    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[0, 0] = (255, 0, 0, 255)      # opaque red
    rgba[0, 1] = (255, 0, 0, 0)        # fully transparent red -> white background
    rgba[1, 0] = (0, 0, 255, 128)      # half-transparent blue over white
    rgba[1, 1] = (0, 0, 0, 0)
    out = decode_image(_encode(Image.fromarray(rgba, "RGBA"), "PNG"))
    assert out[0, 0].tolist() == [255, 0, 0] and out[0, 1].tolist() == [255, 255, 255]
    assert out[1, 1].tolist() == [255, 255, 255]
    assert np.abs(out[1, 0].astype(int) - [127, 127, 255]).max() <= 1

    pal = Image.fromarray(rgb).quantize(colors=16)
    expected = np.array(pal.convert("RGB"))
    out = decode_image(_encode(pal, "PNG"))
    assert np.array_equal(out, expected)
    lut = np.array(pal.getpalette()[:48]).reshape(16, 3)
    assert np.array_equal(out, lut[np.array(pal)])        # palette lookup, computed with numpy

    pal_t = Image.fromarray(np.array([[0, 1]], np.uint8), "P")
    pal_t.putpalette([10, 20, 30, 200, 0, 0] + [0] * 762)
    out = decode_image(_encode(pal_t, "PNG", transparency=0))
    assert out[0, 0].tolist() == [255, 255, 255] and out[0, 1].tolist() == [200, 0, 0]

    cmyk = Image.new("CMYK", (3, 1))
    cmyk.putpixel((0, 0), (0, 0, 0, 0))          # white
    cmyk.putpixel((1, 0), (255, 0, 0, 0))        # cyan
    cmyk.putpixel((2, 0), (0, 0, 0, 255))        # black
    out = decode_image(_encode(cmyk, "TIFF"))
    assert out.tolist() == [[[255, 255, 255], [0, 255, 255], [0, 0, 0]]]
    out = decode_image(_encode(Image.fromarray(rgb).convert("CMYK"), "JPEG", quality=95))
    assert out.shape == (30, 40, 3) and np.abs(out.astype(int) - rgb).mean() < 8

    deep = np.array([[0, 257, 32768, 65535]], np.uint16)
    png16 = tmp_path / "deep.png"
    Image.fromarray(deep).save(png16)
    assert Image.open(png16).mode.startswith("I")
    out = decode_image(str(png16))
    assert out[:, :, 0].tolist() == [[0, 1, 128, 255]] and np.array_equal(out[:, :, 0], out[:, :, 2])


def test_decode_applies_exif_orientation():
    img = Image.fromarray(photo(20, 30))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    out = decode_image(_encode(img, "JPEG", exif=exif.tobytes(), quality=95))
    assert out.shape == (30, 20, 3)


def _huge_png(width, height):
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))


def test_decode_refuses_bad_files_with_reason(tmp_path, monkeypatch):
    good = _encode(Image.fromarray(photo(60, 80)), "JPEG", quality=95)
    cases = {
        "notes.jpg": (b"this is a text file, not a picture\n", "not an image"),
        "empty.jpg": (b"", "empty file (0 bytes)"),
        "half.jpg": (good[: len(good) // 2], "truncated"),
        "bomb.png": (_huge_png(30000, 30000), "too large to decode safely"),
    }
    for name, (data, reason) in cases.items():
        path = tmp_path / name
        path.write_bytes(data)
        with pytest.raises(DataError) as err:
            decode_image(str(path))
        assert str(err.value).startswith(f"{path}: ") and reason in str(err.value), str(err.value)
    with pytest.raises(DataError, match="missing.jpg: file not found"):
        decode_image(str(tmp_path / "missing.jpg"))
    # over PIL's limit (not twice over it): still refused, naming the limit
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 3000)
    with pytest.raises(DataError, match=r"big.jpg: too large to decode safely: 80x60 = 4,800 pixels .* 3,000"):
        decode_image(good, name="big.jpg")


def test_decode_image_op_channel_order():
    rgb = photo(10, 12)
    data = _encode(Image.fromarray(rgb), "PNG")
    assert np.array_equal(ops.DecodeImage()(data), rgb)
    assert np.array_equal(ops.DecodeImage(to_rgb=False)(data), rgb[:, :, ::-1])
    assert ops.DecodeImage(channel_first=True)(data).shape == (3, 10, 12)


# ---------------------------------------------------------------- ops against PIL / numpy

def test_resize_short_matches_pil():
    arr = photo(375, 500)
    op = ops.ResizeImage(resize_short=256, interpolation="bicubic", backend="pil")
    out = op(arr)
    assert out.shape == (256, 341, 3)
    assert np.array_equal(out, np.array(Image.fromarray(arr).resize((341, 256), Image.BICUBIC)))
    assert op(photo(500, 375)).shape == (341, 256, 3)
    assert ops.ResizeImage(size=[64, 48])(arr).shape == (48, 64, 3)   # [w, h]
    bilinear = ops.ResizeImage(resize_short=100)(arr)                  # default: bilinear
    assert np.array_equal(bilinear, np.array(Image.fromarray(arr).resize((133, 100), Image.BILINEAR)))


def test_center_crop_and_normalize_and_chw():
    arr = photo(256, 341)
    crop = ops.CropImage(size=224)(arr)
    assert np.array_equal(crop, arr[16:240, 58:282])
    assert ops.CropImage(size=[100, 50])(arr).shape == (50, 100, 3)
    with pytest.raises(DataError, match="smaller than the crop"):
        ops.CropImage(size=400)(arr)
    norm = ops.NormalizeImage(scale="1.0/255.0", mean=MEAN, std=STD, order="")(crop)
    expected = (crop.astype(np.float64) / 255.0 - np.array(MEAN)) / np.array(STD)
    assert norm.dtype == np.float32 and np.abs(norm - expected).max() < 1e-5
    chw = ops.ToCHWImage()(norm)
    assert chw.shape == (3, 224, 224) and np.array_equal(chw[1], norm[:, :, 1])
    chw_first = ops.NormalizeImage(order="chw")(ops.ToCHWImage()(crop))   # PaddleClas defaults
    assert np.abs(chw_first - chw).max() < 1e-5
    assert ops.NormalizeImage(order="", channel_num=4)(crop).shape == (224, 224, 4)


def test_eval_pipeline_end_to_end_matches_pil_reference():
    arr = photo(375, 500)
    data = _encode(Image.fromarray(arr), "PNG")
    pipeline = create_operators([
        {"DecodeImage": {"to_rgb": True, "channel_first": False}},
        {"ResizeImage": {"resize_short": 256, "interpolation": "bicubic", "backend": "pil"}},
        {"CropImage": {"size": 224}},
        {"NormalizeImage": {"scale": "1.0/255.0", "mean": MEAN, "std": STD, "order": ""}},
        {"ToCHWImage": None}])
    out = transform(data, pipeline)
    ref = np.array(Image.fromarray(arr).resize((341, 256), Image.BICUBIC).crop((58, 16, 282, 240)))
    ref = ((ref / 255.0 - np.array(MEAN)) / np.array(STD)).transpose(2, 0, 1)
    assert out.shape == (3, 224, 224) and np.abs(out - ref).max() < 1e-5


def test_rand_crop_uses_bilinear_and_bicubic_and_stays_in_range():
    arr = photo(64, 64)
    whole = ops.RandCropImage(size=32, scale=[1.0, 1.0], ratio=[1.0, 1.0], interpolation="random")
    refs = {m: np.array(Image.fromarray(arr).resize((32, 32), getattr(Image, m.upper())))
            for m in ("bilinear", "bicubic")}
    seen = Counter()
    for s in range(40):
        out = whole(arr, rng=np.random.default_rng(s))
        match = [m for m, ref in refs.items() if np.array_equal(out, ref)]
        assert len(match) == 1
        seen[match[0]] += 1
    assert seen["bilinear"] > 5 and seen["bicubic"] > 5
    op = ops.RandCropImage(size=[40, 20], scale=[0.08, 1.0], ratio=[0.75, 4 / 3])
    for s in range(50):
        left, top, right, bottom = op.box(100, 150, np.random.default_rng(s))
        assert 0 <= left < right <= 150 and 0 <= top < bottom <= 100
        area = (right - left) * (bottom - top) / (100 * 150)
        assert 0.07 <= area <= 1.0 and 0.7 <= (right - left) / (bottom - top) <= 1.4
    assert op(arr, rng=np.random.default_rng(0)).shape == (20, 40, 3)


def test_flip_and_color_jitter():
    arr = photo(20, 30)
    flips = [ops.RandFlipImage(flip_code=1)(arr, rng=np.random.default_rng(s)) for s in range(20)]
    same = sum(np.array_equal(f, arr) for f in flips)
    mirrored = sum(np.array_equal(f, arr[:, ::-1]) for f in flips)
    assert same + mirrored == 20 and same > 3 and mirrored > 3
    assert np.array_equal(ops.RandFlipImage(flip_code=0)(arr, rng=_always_low()), arr[::-1])
    jitter = ops.ColorJitter(brightness=0.4, contrast=0.4, saturation=0.4)
    outs = [jitter(arr, rng=np.random.default_rng(s)) for s in range(3)]
    assert all(o.shape == arr.shape and o.dtype == np.uint8 for o in outs)
    assert not np.array_equal(outs[0], arr) and not np.array_equal(outs[0], outs[1])
    assert np.array_equal(ops.ColorJitter()(arr, rng=np.random.default_rng(0)), arr)
    # brightness alone is a scaling of every pixel (PIL ImageEnhance.Brightness), factor in [0.6, 1.4]
    bright = ops.ColorJitter(brightness=0.4)(arr, rng=np.random.default_rng(5)).astype(float)
    factor = bright.sum() / arr.astype(float).sum()
    assert 0.55 < factor < 1.45


class _always_low:
    def random(self):
        return 0.0


def test_cv2_backend_only_when_installed(monkeypatch):
    arr = photo(375, 500)
    try:
        import cv2
    except ImportError:
        cv2 = None
    if cv2 is not None:
        out = ops.ResizeImage(resize_short=256, interpolation="area", backend="cv2")(arr)
        assert np.array_equal(out, cv2.resize(arr, (341, 256), interpolation=cv2.INTER_AREA))
    monkeypatch.setattr(ops, "_import_cv2", lambda: None)
    with pytest.raises(ConfigError, match=r"ResizeImage: key 'backend' is 'cv2' but OpenCV is not installed"):
        create_operators([{"ResizeImage": {"resize_short": 256, "backend": "cv2"}}])


def test_create_operators_errors_name_op_and_key():
    with pytest.raises(ConfigError) as err:
        create_operators([{"DecodeImage": None}, {"RandomCrop": {"size": 224}}], where="DataLoader.Train.dataset.transform_ops")
    msg = str(err.value)
    assert "DataLoader.Train.dataset.transform_ops.1" in msg and "unknown transform op 'RandomCrop'" in msg
    assert "known ops:" in msg and "RandCropImage" in msg and "ToCHWImage" in msg
    with pytest.raises(ConfigError, match=r"transform_ops.0.RandCropImage: op RandCropImage does not take key 'sise' "
                                          r"\(did you mean 'size'\?\); it takes: size, scale"):
        create_operators([{"RandCropImage": {"sise": 224}}])
    with pytest.raises(ConfigError, match="op CropImage needs key 'size'"):
        create_operators([{"CropImage": None}])
    with pytest.raises(ConfigError, match=r"key 'interpolation' expects one of nearest, bilinear, bicubic"):
        create_operators([{"ResizeImage": {"resize_short": 256, "interpolation": "cubic"}}])
    with pytest.raises(ConfigError, match=r"key 'scale' expects a number or a fraction like '1.0/255.0', got .__import__"):
        create_operators([{"NormalizeImage": {"scale": "__import__('os')"}}])
    assert abs(create_operators([{"NormalizeImage": {"scale": "1/255"}}])[0].scale - 1 / 255) < 1e-12


# ---------------------------------------------------------------- reproducible augmentation

def _epoch(loader, epoch):
    loader.batch_sampler.set_epoch(epoch)
    return [(x.numpy(), y.numpy()) for x, y, _ in loader]


def _same(a, b):
    return len(a) == len(b) and all(np.array_equal(x1, x2) and np.array_equal(y1, y2)
                                    for (x1, y1), (x2, y2) in zip(a, b))


def test_augmentation_depends_on_seed_epoch_index_only(digits, small_list):
    single = build_dataloader(config(digits, small_list, batch_size=8, workers=0), "Train", seed=7)
    multi = build_dataloader(config(digits, small_list, batch_size=8, workers=2), "Train", seed=7)
    run = [_epoch(single, e) for e in (1, 2, 3)]
    resumed = _epoch(multi, 3)                     # a fresh loader, straight at epoch 3, 2 workers
    assert _same(run[2], resumed)
    assert run[0][0][0].shape == (8, 3, 24, 24) and run[0][0][0].dtype == np.float32
    assert run[0][0][1].dtype == np.int64
    assert not np.array_equal(run[1][0][0], run[2][0][0])
    # same samples in another epoch get other crops: compare sample by sample, sorted by order
    ds = single.dataset
    a, b = ds[(5, 1)][0], ds[(5, 2)][0]
    assert not np.array_equal(a, b) and np.array_equal(a, ds[(5, 1)][0])
    other_seed = build_dataloader(config(digits, small_list, batch_size=8, workers=0), "Train", seed=8)
    assert not np.array_equal(other_seed.dataset[(5, 1)][0], a)
    # Global.seed is used when no seed is passed
    with_global = build_dataloader(config(digits, small_list, batch_size=8, seed=7), "Train")
    assert _same(_epoch(with_global, 2), run[1])


def test_eval_loader_is_deterministic_and_ordered(digits):
    cfg = config(digits, digits / "val_list.txt", EVAL_OPS, mode="Eval", batch_size=64, shuffle=False)
    loader = build_dataloader(cfg, "Eval")
    labels = np.concatenate([y.numpy() for _, y, _ in loader])
    listed = [int(line.split()[1]) for line in (digits / "val_list.txt").read_text().splitlines()]
    assert labels.tolist() == listed


# ---------------------------------------------------------------- sharding across ranks

def test_two_ranks_get_disjoint_shards_covering_the_data(digits, small_list, monkeypatch):
    ds = ImageNetDataset(str(digits), str(small_list), class_num=10)
    for epoch in (0, 3):
        shards = []
        for rank in (0, 1):
            sampler = DistributedBatchSampler(ds, batch_size=6, num_replicas=2, rank=rank, shuffle=True)
            sampler.set_epoch(epoch)
            batches = list(sampler)
            assert len(batches) == len(sampler)
            assert all(key[1] == epoch for batch in batches for key in batch)
            shards.append([i for batch in batches for i in batch_indices(batch)])
        assert not set(shards[0]) & set(shards[1])
        assert sorted(shards[0] + shards[1]) == list(range(40))
    # build_dataloader reads rank and world size from the paddle.distributed.launch environment;
    # each batch carries the indices of its samples
    monkeypatch.setenv("PADDLE_TRAINERS_NUM", "2")
    seen = []
    for rank in (0, 1):
        monkeypatch.setenv("PADDLE_TRAINER_ID", str(rank))
        loader = build_dataloader(config(digits, small_list, batch_size=4), "Train", seed=0)
        assert (loader.batch_sampler.nranks, loader.batch_sampler.local_rank) == (2, rank)
        loader.batch_sampler.set_epoch(2)
        idx = []
        for _, y, indices in loader:
            assert y.numpy().tolist() == [ds.labels[i] for i in indices]
            idx += indices.tolist()
        seen.append(idx)
    assert len(seen[0]) == len(seen[1]) == 20 and sorted(seen[0] + seen[1]) == list(range(40))


# ---------------------------------------------------------------- config errors

def test_loader_config_errors(digits, small_list):
    cfg = config(digits, small_list)
    cfg["DataLoader"]["Train"]["sampler"]["batch_sise"] = 3
    with pytest.raises(ConfigError, match=r"unknown config key 'DataLoader.Train.sampler.batch_sise'"):
        build_dataloader(cfg, "Train")
    cfg = config(digits, small_list)
    cfg["DataLoader"]["Train"]["dataset"]["name"] = "CocoDataset"
    with pytest.raises(ConfigError, match=r"unknown dataset 'CocoDataset'; known: ImageFolder, ImageNetDataset, MultiScaleDataset"):
        build_dataloader(cfg, "Train")
    cfg = config(digits, small_list)
    cfg["DataLoader"]["Train"]["dataset"]["root"] = "x"
    with pytest.raises(ConfigError, match=r"'DataLoader.Train.dataset.root'; keys under DataLoader.Train.dataset: image_root"):
        build_dataloader(cfg, "Train")
    cfg = config(digits, small_list)
    cfg["DataLoader"]["Train"]["loader"]["num_workers"] = "two"
    with pytest.raises(ConfigError, match=r"'DataLoader.Train.loader.num_workers' expects an integer, got 'two'"):
        build_dataloader(cfg, "Train")
    with pytest.raises(ConfigError, match=r"config section 'DataLoader.Eval' is missing"):
        build_dataloader(config(digits, small_list), "Eval")
