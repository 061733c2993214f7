"""The training reader (issue 17): the fused decode + random crop draws the same boxes as
RandCropImage, DCT-scaled decoding stays within JPEG rounding of a full decode, ColorJitter on
uint8 matches paddle.vision / PIL, NormalizeImage on the device gives the same training step,
and the odd and broken images behave as they did. Small arrays and images only."""

import io
import os

import numpy as np
import paddle
import pytest
from PIL import Image

from ppcls.data import build_dataloader
from ppcls.data.dataset import ImageNetDataset
from ppcls.data.device_normalize import DeviceNormalize, split_normalize
from ppcls.data.preprocess import create_operators, decode_image, fastread, native, ops
from ppcls.utils.errors import DataError

MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
SEED_TRAIN_OPS = [  # the seed's MobileNeXt_100.yaml train list, at a small size
    {"DecodeImage": {"to_rgb": True, "channel_first": False, "backend": "pil"}},
    {"RandCropImage": {"size": 32, "interpolation": "random", "backend": "pil"}},
    {"RandFlipImage": {"flip_code": 1}},
    {"ColorJitter": {"brightness": 0.4, "contrast": 0.4, "saturation": 0.4, "hue": 0}},
    {"NormalizeImage": {"scale": "1.0/255.0", "mean": MEAN, "std": STD, "order": ""}}]


def photo(h, w, seed=0):
    """A smooth picture with some detail (so resampling methods differ a little)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([xx * 255 // max(w - 1, 1), yy * 255 // max(h - 1, 1), (xx * 3 + yy) % 256], -1)
    return np.clip(base + rng.integers(0, 40, (h, w, 3)), 0, 255).astype(np.uint8)


def jpeg(arr_or_img, **kw):
    img = arr_or_img if isinstance(arr_or_img, Image.Image) else Image.fromarray(arr_or_img)
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=kw.pop("quality", 92), **kw)
    return buf.getvalue()


def fused_pair(size=32, interpolation="random"):
    decode, crop = create_operators([{"DecodeImage": None},
                                     {"RandCropImage": {"size": size, "interpolation": interpolation}}])
    return fastread.DecodeRandCrop(decode, crop), decode, crop


# ---------------------------------------------------------------- crop boxes

def test_reader_draws_the_same_crop_boxes_as_randcropimage():
    """2,000 draws: the fused op's plan (box, interpolation) uses the same generator calls as
    RandCropImage, so the same seed gives the same boxes and leaves the generator in the same state."""
    fused, _, crop = fused_pair(224)
    sizes = [(375, 500), (500, 333), (224, 224), (120, 900), (1200, 800)]
    old_rng, new_rng = np.random.default_rng(7), np.random.default_rng(7)
    boxes = set()
    for i in range(2000):
        h, w = sizes[i % len(sizes)]
        old_box = crop.box(h, w, old_rng)
        old_method = ("bilinear", "bicubic")[int(old_rng.random() * 2)]  # RandCropImage's resizer draw
        box, method, _ = fused.plan(h, w, new_rng)
        assert (box, method) == (old_box, old_method)
        boxes.add(box)
    assert old_rng.random() == new_rng.random()
    assert len(boxes) > 1500  # the draws are random, not a few boxes


@pytest.fixture(scope="module")
def natural():
    """scikit-learn's two sample photos (427 x 640), as JPEG bytes at quality 90."""
    from sklearn.datasets import load_sample_images

    return [jpeg(arr, quality=90) for arr in load_sample_images().images]


def test_reader_output_is_the_planned_box_of_the_full_image(natural):
    """The fused op's image is the planned box of the decoded JPEG resized to the target: within
    a grey level of PIL's resize of that box when the box is not larger than the target, and
    within two when it shrinks (OpenCV's resize after a blur that stands in for PIL's wider filter)."""
    data = natural[0]
    full = decode_image(data)
    fused, _, _ = fused_pair(224, "bilinear")
    sizes = set()
    for seed in range(12):
        out = fused(data, np.random.default_rng(seed))
        box, _, k = fused.plan(427, 640, np.random.default_rng(seed))
        ref = np.asarray(Image.fromarray(full).resize((224, 224), Image.BILINEAR, box=box))
        assert out.shape == (224, 224, 3) and out.dtype == np.uint8
        shrink = max(box[2] - box[0], box[3] - box[1]) / 224
        sizes.add(shrink <= 1)
        assert np.abs(out.astype(int) - ref).mean() < (1.0 if shrink <= 1 else 2.0), (seed, box)
    assert sizes == {True, False}


@pytest.mark.parametrize("shrink", [1.1, 1.5, 2.0, 2.7, 4.0])
def test_reader_pre_blur_adds_the_variance_of_pils_wider_filter(shrink):
    """PIL's bilinear filter widened by the shrink r has r^2 times the variance (1/6) of the
    triangle OpenCV samples with; the blur before OpenCV's resize adds the difference, a
    normalised kernel of variance (r^2 - 1) / 6, whatever the shrink (3 taps up to 2, more
    beyond; one tap when negligible)."""
    kernel = fastread._blur_kernel((shrink ** 2 - 1) / 12).ravel().astype(np.float64)
    x = np.arange(kernel.size) - kernel.size // 2
    assert kernel.sum() == pytest.approx(1, abs=1e-6) and np.allclose(kernel, kernel[::-1])
    assert (kernel * x ** 2).sum() == pytest.approx((shrink ** 2 - 1) / 6, rel=0.02)
    assert (kernel.size == 3) == (shrink <= 2) and kernel.min() >= 0
    assert fastread._blur_kernel(0.001).ravel().tolist() == [1.0]


# ---------------------------------------------------------------- DCT-scaled region decoding

@pytest.mark.parametrize("k", [1, 2, 4, 8])
def test_reader_scaled_region_equals_the_region_of_a_full_decode(natural, k):
    """At full size the pixels the fused op crops from are exactly PIL's full decode (so any
    region is that region of the full decode); with libjpeg-turbo's DCT scaling by 1/k they are
    a full decode averaged over k x k blocks (the downscale the scaling stands for) within JPEG
    rounding: mean |diff| < 1 grey level."""
    for data in natural:
        full = decode_image(data)
        scaled = fastread.decode_jpeg_scaled(data, 427, 640, k)
        assert scaled.shape == (-(-427 // k), -(-640 // k), 3)
        if k == 1:
            assert np.array_equal(scaled, full)  # the same libjpeg-turbo settings as PIL's: same pixels
            continue
        reduced = np.asarray(Image.fromarray(full).reduce(k)).astype(float)
        h, w = reduced.shape[:2]
        assert np.abs(scaled[:h, :w] - reduced).mean() < 1.0


@pytest.mark.parametrize("k", [1, 2, 4])
def test_reader_top_rows_decode_equals_the_top_of_a_full_decode(natural, k):
    """Only the rows down to the box's bottom (and a margin) are decoded from a baseline JPEG:
    those rows are the whole decode's to the bit, at every DCT scale and chroma subsampling;
    progressive and truncated files decode whole, as before."""
    for data in natural + [jpeg(photo(300, 410, 3), subsampling=0), jpeg(photo(300, 410, 4).mean(2).astype(np.uint8))]:
        h, w = fastread.jpeg_size(data)
        full = np.array(fastread.decode_jpeg_scaled(data, h, w, k))
        for rows in (1, 15, 16, 17, h // 3, h // 2 + 5, h - 40):
            top = fastread.decode_jpeg_scaled(data, h, w, k, rows=rows)
            visible = -(-rows // k)
            assert top.shape[1] == full.shape[1]
            # fewer rows whenever the margin leaves some out (h - 40 may not, at 1/4)
            assert top.shape[0] < full.shape[0] or rows + 16 * k > h - 16, (k, rows, top.shape)
            assert np.array_equal(top[:visible], full[:visible]), (k, rows)
    progressive = jpeg(photo(300, 410), progressive=True)
    assert fastread.decode_jpeg_scaled(progressive, 300, 410, k, rows=20).shape[0] == -(-300 // k)
    baseline = jpeg(photo(300, 410))
    truncated = baseline[:len(baseline) * 2 // 3]  # no EOI: decoded strictly, so the damage is named
    with pytest.raises(ValueError):
        fastread.decode_jpeg_scaled(truncated, 300, 410, k, rows=20)


@pytest.fixture(scope="module")
def native_lib():
    """The native helper; a machine without a C compiler skips (the reader then uses simplejpeg),
    one with a compiler whose build fails is a failure."""
    import shutil

    if not native.available():
        error = native.last_error()
        if (shutil.which("cc") is None and not os.environ.get("CC")) or "jpeglib.h" in error:
            pytest.skip(f"the native reader cannot be built here: {error}")
        pytest.fail(f"the native reader did not build: {error}")
    return native.library()


def _region_cases():
    """Photos as 4:2:0 baseline, 4:4:4, 4:2:2, progressive, grey and with restart markers."""
    from sklearn.datasets import load_sample_images

    china = load_sample_images().images[0]
    return [jpeg(china, quality=90), jpeg(china[:301, :397], quality=75, subsampling=0),
            jpeg(photo(233, 351, 2), subsampling=1), jpeg(china[50:, 30:], progressive=True),
            jpeg(china[:, :, 1]), jpeg(photo(200, 300, 5), restart_marker_blocks=3)]


@pytest.mark.parametrize("k", [1, 2, 4, 8])
def test_reader_native_region_equals_the_same_region_of_a_full_decode(native_lib, k):
    """Decoding only a box (its rows and the iMCU columns holding it) gives that box of the whole
    decode to the bit, for boxes anywhere (edges, one pixel, the whole image), every subsampling,
    progressive, grey, restart markers, at every DCT scale."""
    rng = np.random.default_rng(k)
    for data in _region_cases():
        h, w = fastread.jpeg_size(data)
        full = np.array(fastread.decode_jpeg_scaled(data, h, w, k))
        oh, ow = full.shape[:2]
        boxes = [(0, 0, ow, oh), (0, 0, 1, 1), (ow - 1, oh - 1, ow, oh), (ow // 3, 0, ow, oh // 2)]
        for _ in range(25):
            left, top = int(rng.integers(0, ow)), int(rng.integers(0, oh))
            boxes.append((left, top, int(rng.integers(left + 1, ow + 1)), int(rng.integers(top + 1, oh + 1))))
        for left, top, right, bottom in boxes:
            region = native.jpeg_region(data, k, (ow, oh), left, top, right, bottom)
            assert region is not None and np.array_equal(region, full[top:bottom, left:right]), (k, left, top)


def test_reader_native_region_refuses_damaged_data_and_wrong_sizes(native_lib):
    """Data libjpeg-turbo calls damaged (an error or a warning) and a size other than the
    decode's give None: the fused op then decodes the usual way, which names the problem."""
    good = jpeg(photo(120, 160))
    assert native.jpeg_region(good, 1, (160, 120), 0, 0, 160, 120) is not None
    assert native.jpeg_region(good, 1, (161, 120), 0, 0, 160, 120) is None
    assert native.jpeg_region(good[: len(good) // 2], 1, (160, 120), 0, 0, 160, 120) is None  # cut short
    assert native.jpeg_region(b"\xff\xd8\xff" + b"\x00" * 200, 1, (160, 120), 0, 0, 10, 10) is None
    scan = good.rindex(b"\xff\xda")
    bad = bytearray(good)
    bad[scan + 300:scan + 340] = b"\xff\xd0" * 20  # restart markers where none belong: a warning
    assert native.jpeg_region(bytes(bad), 1, (160, 120), 0, 100, 160, 120) is None
    cmyk = jpeg(Image.fromarray(photo(20, 30)).convert("CMYK"))
    assert native.jpeg_region(cmyk, 1, (30, 20), 0, 0, 30, 20) is None


@pytest.mark.parametrize("recipe", ["seed", "seed, device normalise", "cv2"])
def test_reader_with_and_without_the_native_helper_is_the_same(native_lib, natural, monkeypatch, recipe):
    """The fused ops with the native helper (region decode, one-pass jitter + normalise) give
    the same numbers as without it, for the seed's list (PIL backend keys; with and without its
    NormalizeImage, which the device runs by default) and a list without backend keys
    (OpenCV's resize, as upstream's ResNet50.yaml)."""
    train_ops = SEED_TRAIN_OPS if recipe == "seed" else SEED_TRAIN_OPS[:-1]
    if recipe == "cv2":
        train_ops = [{"DecodeImage": {"to_rgb": True, "channel_first": False}},
                     {"RandCropImage": {"size": 48}}, SEED_TRAIN_OPS[2], SEED_TRAIN_OPS[4]]
    data = natural + [jpeg(photo(90, 70, 1), subsampling=0)]
    steps, chw = fastread.fuse_reader_ops(create_operators(train_ops), chw=True)
    assert chw

    def run():
        outs = []
        for i in range(40):
            rng = np.random.default_rng(i)
            img = data[i % len(data)]
            for step in steps:
                img = step(img, rng)
            outs.append(img)
        return outs

    with_native = run()
    monkeypatch.setattr(native, "available", lambda: False)
    monkeypatch.setattr(native, "library", lambda: None)
    without = run()
    for a, b in zip(with_native, without):
        assert a.dtype == b.dtype and a.shape[0] == 3 and np.array_equal(a, b)


def test_reader_native_jitter_normalize_is_the_two_ops(native_lib):
    """ColorJitter's brightness / contrast / saturation and NormalizeImage in one native pass:
    the numbers of ``jitter_uint8`` then ``NormalizeImage.to_chw``, for every order, factors
    from 0 to 2 and odd sizes."""
    rng = np.random.default_rng(9)
    norm = ops.NormalizeImage(mean=MEAN, std=STD, order="")
    names = ["brightness", "contrast", "saturation"]
    for i in range(150):
        arr = photo(*rng.integers(1, 40, 2), seed=i) if i % 3 else rng.integers(0, 256, (17, 23, 3), np.uint8)
        order = [names[j] for j in rng.permutation(3)][:int(rng.integers(0, 4))]
        draws = [(key, float(rng.uniform(0, 2))) for key in order]
        arr_j, table = ops.jitter_uint8(arr, draws, defer=True)
        ref = norm.to_chw(arr_j, table=table)
        out = native.jitter_normalize(arr, draws, norm.columns())
        assert out.dtype == np.float32 and np.array_equal(out, ref), (i, draws)
        planes = native.jitter_chw(arr, draws)  # the same without the normalise (device normalise)
        assert planes.dtype == np.uint8 and np.array_equal(planes, ops.ToCHWImage()(ops.jitter_uint8(arr, draws)))


def test_reader_native_build_failure_falls_back(tmp_path):
    """No compiler (or PPCLS_NATIVE_READER=0): the helper is unavailable, says why, and the
    fused reader still runs (simplejpeg / numpy) with the same numbers."""
    import subprocess
    import sys

    script = (
        "import numpy as np, sys\n"
        "from ppcls.data.preprocess import native, fastread, create_operators\n"
        "sys.path.insert(0, %r)\n"
        "from test_reader import SEED_TRAIN_OPS, jpeg, photo\n"
        "steps, _ = fastread.fuse_reader_ops(create_operators(SEED_TRAIN_OPS), chw=True)\n"
        "img = jpeg(photo(80, 90))\n"
        "rng = np.random.default_rng(0)\n"
        "for step in steps:\n"
        "    img = step(img, rng)\n"
        "print(native.available(), repr(native.last_error()), float(img.sum()))\n") % os.path.dirname(__file__)
    results, warned = {}, {}
    for name, env in (("no compiler", {"CC": str(tmp_path / "no-such-cc")}), ("off", {"PPCLS_NATIVE_READER": "0"}),
                      ("on", {})):
        full_env = dict(os.environ, PPCLS_READER_CACHE=str(tmp_path / "cache"), **env)
        proc = subprocess.run([sys.executable, "-c", script], env=full_env, capture_output=True, text=True, check=False)
        assert proc.returncode == 0, proc.stderr[-2000:]
        results[name] = proc.stdout.strip().splitlines()[-1]
        warned[name] = proc.stderr.count("ReaderWarning: the training reader's native helper is unavailable")
    assert results["no compiler"].startswith("False ") and "no C compiler" in results["no compiler"]
    assert warned["no compiler"] == 1 and warned["off"] == warned["on"] == 0  # one ReaderWarning, and why
    assert results["off"].startswith("False ") and "PPCLS_NATIVE_READER=0" in results["off"]
    if native.available():
        assert results["on"].startswith("True None")
        assert len({r.split()[-1] for r in results.values()}) == 1  # the same image sum all three ways


def test_reader_does_not_scale_below_the_target():
    assert fastread.dct_factor((0, 0, 447, 500), (224, 224)) == 1  # 447 / 2 < 224
    assert fastread.dct_factor((0, 0, 448, 500), (224, 224)) == 2
    assert fastread.dct_factor((0, 0, 1800, 1800), (224, 224)) == 8
    assert fastread.dct_factor((0, 0, 1800, 800), (224, 224)) == 2


# ---------------------------------------------------------------- ColorJitter on uint8

def test_reader_colorjitter_matches_paddle_vision_within_one_grey_level():
    """200 random images and factors: the uint8 ColorJitter against paddle.vision's functional
    ops on PIL images (what ColorJitter ran before), same draws, same order."""
    from paddle.vision.transforms import functional as F

    adjust = {"brightness": F.adjust_brightness, "contrast": F.adjust_contrast,
              "saturation": F.adjust_saturation}
    rng = np.random.default_rng(0)
    worst = 0
    for i in range(200):
        h, w = rng.integers(8, 40, 2)
        arr = rng.integers(0, 256, (h, w, 3), dtype=np.uint8) if i % 2 else photo(h, w, seed=i)
        b, c, s = (float(v) for v in rng.uniform(0, 0.9, 3))
        op = ops.ColorJitter(brightness=b, contrast=c, saturation=s)
        out = op(arr, np.random.default_rng(i))
        # the reference: the same draws, made the way ColorJitter always made them
        ref_rng, pil = np.random.default_rng(i), Image.fromarray(arr)
        for j in ref_rng.permutation(4):
            key = ("brightness", "contrast", "saturation", "hue")[int(j)]
            x = {"brightness": b, "contrast": c, "saturation": s, "hue": 0}[key]
            if x:
                pil = adjust[key](pil, ref_rng.uniform(max(0.0, 1 - x), 1 + x))
        assert out.dtype == np.uint8 and out.shape == arr.shape
        worst = max(worst, int(np.abs(out.astype(int) - np.asarray(pil)).max()))
    assert worst <= 1


@pytest.mark.parametrize("norm_keys", [{}, {"output_fp16": True}])
def test_reader_jitter_then_normalize_in_one_step_is_the_two_ops(norm_keys):
    """The fused ColorJitter + NormalizeImage (+ [C, H, W]) the dataset runs gives the numbers
    of the two ops one after the other, for every order of the adjustments (a last brightness
    or contrast folded into the normalise tables, or a last saturation), with hue, and when
    the jitter is skipped (prob)."""
    rng = np.random.default_rng(4)
    norm = ops.NormalizeImage(mean=MEAN, std=STD, order="", **norm_keys)
    jitters = [ops.ColorJitter(0.4, 0.4, 0.4), ops.ColorJitter(0.4, 0.4, 0.4, 0.1),
               ops.ColorJitter(brightness=0.5), ops.ColorJitter(0.4, 0.4, 0.4, prob=0.5)]
    last = set()
    for i in range(48):
        jitter = jitters[i % len(jitters)]
        fused = fastread.JitterNormalize(jitter, norm)
        arr = photo(*rng.integers(6, 30, 2), seed=i)
        out = fused(arr, np.random.default_rng(i))
        draws = jitter.draw(np.random.default_rng(i))
        last.add(draws[-1][0] if draws else None)
        ref = ops.ToCHWImage()(norm(jitter(arr, np.random.default_rng(i))))
        assert out.dtype == ref.dtype and np.array_equal(out, ref), (i, draws)
    assert last == {"brightness", "contrast", "saturation", "hue", None}
    steps = ImageNetDataset.__new__(ImageNetDataset)  # the dataset's plan picks the fused step
    steps.device_normalize, steps.fast_reader = False, True
    planned, _, to_chw = steps.plan(create_operators(SEED_TRAIN_OPS))
    assert [type(s).__name__ for s in planned] == ["DecodeRandCrop", "RandFlipImage", "JitterNormalize"]
    assert to_chw is None
    steps.device_normalize = True  # the training default: the list ends with the jitter, into uint8 [C, H, W]
    planned, normalize, to_chw = steps.plan(create_operators(SEED_TRAIN_OPS))
    assert [type(s).__name__ for s in planned] == ["DecodeRandCrop", "RandFlipImage", "JitterCHW"]
    assert to_chw is None and normalize is not None


def test_reader_flip_is_the_mirror_image():
    arr = photo(9, 13)
    flip = ops.RandFlipImage(1)
    outs = [flip(arr, np.random.default_rng(s)) for s in range(8)]
    assert any(np.array_equal(o, arr[:, ::-1]) for o in outs) and any(o is arr for o in outs)
    assert all(np.array_equal(o, arr) or np.array_equal(o, arr[:, ::-1]) for o in outs)


# ---------------------------------------------------------------- normalise (lookup, on the device)

@pytest.mark.parametrize("order,fp16", [("", False), ("", True), ("chw", False)])
def test_reader_normalize_lookup_is_the_float_formula(order, fp16):
    op = ops.NormalizeImage(order=order, output_fp16=fp16)
    shape = (5, 7, 3) if order == "" else (3, 5, 7)
    arr = np.random.default_rng(1).integers(0, 256, shape, dtype=np.uint8)
    ref = (arr.astype(np.float32) * np.float32(1 / 255) - op.mean) / op.std
    out = op(arr)
    assert out.dtype == (np.float16 if fp16 else np.float32)
    assert np.array_equal(out, ref.astype(out.dtype))


@pytest.mark.parametrize("keys", [{}, {"channel_num": 4}, {"output_fp16": True}])
def test_reader_device_normalize_equals_the_op(keys):
    op = ops.NormalizeImage(order="chw", **keys)
    batch = np.random.default_rng(2).integers(0, 256, (4, 3, 6, 5), dtype=np.uint8)
    ref = np.stack([op(img) for img in batch])
    normalize = DeviceNormalize(op)
    for out in (normalize(paddle.to_tensor(batch)), normalize.gather(paddle.to_tensor(batch))):
        out = out.numpy()  # the CPU lookup, and the gather a GPU runs
        assert out.dtype == ref.dtype and out.shape == ref.shape
        assert np.array_equal(out, ref)  # the same numbers, so eval results do not move


def test_reader_only_a_final_normalize_of_uint8_images_is_deferred():
    built = create_operators(SEED_TRAIN_OPS)
    steps, op = split_normalize(built)
    assert op is built[-1] and steps == built[:-1]
    after_float = create_operators(SEED_TRAIN_OPS + [{"PCALighting": None}])
    assert split_normalize(after_float)[1] is None
    float_first = create_operators([{"DecodeImage": None}, {"PCALighting": None}, SEED_TRAIN_OPS[-1]])
    assert split_normalize(float_first)[1] is None


@pytest.fixture(scope="module")
def jpeg_folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("reader")
    lines = []
    for i in range(8):
        Image.fromarray(photo(40 + 4 * i, 56 - 2 * i, seed=i)).save(root / f"{i}.jpg", quality=90)
        lines.append(f"{i}.jpg {i % 4}")
    (root / "list.txt").write_text("\n".join(lines) + "\n")
    return root


def _loader(root, device_normalize, fast_reader=True):
    cfg = {"Global": {"seed": 3, "device_normalize": device_normalize, "fast_reader": fast_reader},
           "Arch": {"name": "MobileNeXt_x1_0", "class_num": 4},
           "DataLoader": {"Train": {
               "dataset": {"name": "ImageNetDataset", "image_root": str(root),
                           "cls_label_path": str(root / "list.txt"), "transform_ops": SEED_TRAIN_OPS},
               "sampler": {"name": "DistributedBatchSampler", "batch_size": 8, "shuffle": True},
               "loader": {"num_workers": 0}}}}
    return build_dataloader(cfg, "Train", device="cpu")


def test_reader_uint8_batch_training_step_equals_the_float_batch_step(jpeg_folder):
    """The same seed through the loader with uint8 batches normalised on the device and with
    float batches normalised in the workers: the same batch, and the same SGD step (1e-5)."""
    on, off = _loader(jpeg_folder, True), _loader(jpeg_folder, False)
    assert on.normalize is not None and off.normalize is None
    assert on.dataset[0][0].dtype == np.uint8 and off.dataset[0][0].dtype == np.float32
    (x_on, y_on, _), (x_off, y_off, _) = next(iter(on)), next(iter(off))
    assert x_on.dtype == paddle.float32 and x_on.shape == x_off.shape == [8, 3, 32, 32]
    assert np.array_equal(x_on.numpy(), x_off.numpy())
    assert np.array_equal(y_on.numpy(), y_off.numpy())

    params = []
    for images, labels in ((x_on, y_on), (x_off, y_off)):
        paddle.seed(0)
        model = paddle.nn.Sequential(paddle.nn.Conv2D(3, 8, 3, stride=2), paddle.nn.BatchNorm2D(8),
                                     paddle.nn.ReLU(), paddle.nn.AdaptiveAvgPool2D(1),
                                     paddle.nn.Flatten(), paddle.nn.Linear(8, 4))
        opt = paddle.optimizer.Momentum(0.1, parameters=model.parameters())
        loss = paddle.nn.functional.cross_entropy(model(images), labels)
        loss.backward()
        opt.step()
        params.append([p.numpy().copy() for p in model.parameters()])
    for a, b in zip(*params):
        assert np.abs(a - b).max() < 1e-5


# ---------------------------------------------------------------- odd and broken images

def _cases(tmp_path):
    rgb = photo(60, 80)
    exif = Image.Exif()
    exif[0x0112] = 6  # displayed rotated 90 degrees clockwise
    deep = (photo(60, 80)[:, :, 0].astype(np.uint16) * 257)
    good = jpeg(rgb)
    rotated = jpeg(rgb, exif=exif.tobytes())
    comment = b"\xff\xfe" + (40002).to_bytes(2, "big") + b" " * 40000  # a COM segment of 40 KB
    files = {
        "cmyk.jpg": jpeg(Image.fromarray(rgb).convert("CMYK")),
        "grey.jpg": jpeg(Image.fromarray(rgb[:, :, 1], "L")),
        "rotated.jpg": rotated,
        "rotated_late.jpg": rotated[:2] + comment * 2 + rotated[2:],  # EXIF behind 80 KB of comments
        "plain.jpg": good,
        "truncated.jpg": good[: len(good) // 2],
        "notes.jpg": b"a text file, not a picture\n",
        "empty.jpg": b"",
    }
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    Image.fromarray(deep).save(tmp_path / "deep.png")
    return [tmp_path / n for n in list(files) + ["deep.png"]]


def test_reader_odd_and_broken_images_behave_as_before(tmp_path):
    """CMYK, grey, 16-bit PNG, EXIF-rotated (EXIF first or behind 80 KB of comments), truncated,
    not-an-image, empty: the fused op gives what DecodeImage + RandCropImage give (the same
    image, or the same one-line error)."""
    fused, decode, crop = fused_pair(24, "bilinear")
    for path in _cases(tmp_path):
        try:
            ref = crop(decode(str(path)), np.random.default_rng(5))
        except DataError as err:
            with pytest.raises(DataError) as got:
                fused(str(path), np.random.default_rng(5))
            assert str(got.value) == str(err), path.name
            continue
        out = fused(str(path), np.random.default_rng(5))
        assert out.shape == ref.shape == (24, 24, 3), path.name
        if path.name in ("cmyk.jpg", "rotated.jpg", "rotated_late.jpg", "deep.png"):  # not the fast path: the same pixels
            assert np.array_equal(out, ref), path.name
        else:
            assert np.abs(out.astype(int) - ref).mean() < 4.0, path.name
    for name, what in (("truncated.jpg", "truncated"), ("notes.jpg", "not an image"), ("empty.jpg", "empty file")):
        with pytest.raises(DataError, match=what):
            fused(str(tmp_path / name), np.random.default_rng(0))


def test_reader_rotated_jpeg_crops_the_upright_image(tmp_path):
    _cases(tmp_path)
    fused, _, _ = fused_pair(24)
    assert fastread.jpeg_size((tmp_path / "rotated.jpg").read_bytes()) is None  # unfused path
    assert fastread.jpeg_size((tmp_path / "plain.jpg").read_bytes()) == (60, 80)
    assert fused(str(tmp_path / "rotated.jpg"), np.random.default_rng(0)).shape == (24, 24, 3)


def test_reader_dataset_with_and_without_the_fast_reader(jpeg_folder):
    """Global.fast_reader: False is the unfused ops; True the fused ones; the same labels, shapes
    and (boxes being the same) nearly the same pixels."""
    fast = ImageNetDataset(str(jpeg_folder), str(jpeg_folder / "list.txt"), SEED_TRAIN_OPS[:2], seed=1)
    slow = ImageNetDataset(str(jpeg_folder), str(jpeg_folder / "list.txt"), SEED_TRAIN_OPS[:2], seed=1,
                           fast_reader=False)
    assert type(fast.steps[0]).__name__ == "DecodeRandCrop" and slow.ops == slow.steps
    assert [type(op) for op in fast.ops] == [type(op) for op in slow.ops] == [ops.DecodeImage, ops.RandCropImage]
    for i in range(len(fast)):
        a, b = fast[i][0], slow[i][0]
        assert a.shape == b.shape == (3, 32, 32) and a.dtype == b.dtype == np.uint8
        assert np.abs(a.astype(int) - b).mean() < 6.0


def test_reader_without_simplejpeg_and_opencv_is_the_unfused_ops(natural, monkeypatch):
    """The fallbacks: PIL's decoder (``draft`` for the DCT scaling) and PIL's resize. At full
    size the fused op then gives exactly what DecodeImage + RandCropImage give."""
    monkeypatch.setattr(fastread, "simplejpeg", None)
    monkeypatch.setattr(ops, "_import_cv2", lambda: None)
    data = natural[1]
    assert fastread.jpeg_size(data) == (427, 640)
    assert np.array_equal(fastread.decode_jpeg_scaled(data, 427, 640, 1), decode_image(data))
    reduced = np.asarray(Image.fromarray(decode_image(data)).reduce(2)).astype(float)
    assert np.abs(fastread.decode_jpeg_scaled(data, 427, 640, 2)[:213, :320] - reduced[:213]).mean() < 1.0
    fused, decode, crop = fused_pair(224)
    for seed in range(6):
        box, _, k = fused.plan(427, 640, np.random.default_rng(seed))
        out = fused(data, np.random.default_rng(seed))
        ref = crop(decode(data), np.random.default_rng(seed))
        if k == 1:
            assert np.array_equal(out, ref)
