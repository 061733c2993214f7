"""Augmentation ops (issue 11): what each op does, measured on small arrays, its determinism
under the sample generator, and that PaddleClas's own YAML entries build unchanged."""

import gc
import math
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import ImageOps

from ppcls.data.preprocess import OPS, create_operators, transform
from ppcls.data.preprocess.batch_ops import (BATCH_OPS, apply_batch_operators, batch_rng,
                                             create_batch_operators)
from ppcls.utils.errors import ConfigError

UPSTREAM = Path(__file__).resolve().parents[2] / ".." / "shared" / "fixtures" / "paddleclas" / "upstream"
if not UPSTREAM.exists():
    UPSTREAM = Path("/work/shared/fixtures/paddleclas/upstream")
RECIPES = ["DeiT_tiny_patch16_224", "EfficientNetB0", "MobileNetV3_large_x1_0", "ResNet50_Mixup",
           "ResNet50_RandAugment"]


@pytest.fixture(scope="module", autouse=True)
def _collect_garbage_before_later_tests():
    """Free this module's many temporary images in this process, before later tests fork loader
    workers (a worker that inherits a large uncollected heap and collects it after the fork
    was seen to hang in the suite)."""
    yield
    gc.collect()


def rng(seed=0):
    return np.random.default_rng(seed)


def build(name, **params):
    return create_operators([{name: params or None}])[0]


@pytest.fixture(scope="module")
def img():
    """A 48 x 40 (h x w) colourful uint8 image with values in 20..230."""
    g = np.random.default_rng(123)
    return g.integers(20, 231, size=(48, 40, 3), dtype=np.uint8)


# ------------------------------------------------------------------ upstream YAMLs build unchanged

@pytest.mark.parametrize("recipe", RECIPES)
def test_upstream_recipe_ops_build_and_run(recipe):
    cfg = yaml.safe_load((UPSTREAM / f"{recipe}.yaml").read_text())
    train = cfg["DataLoader"]["Train"]["dataset"]
    ops = create_operators(train["transform_ops"], where="DataLoader.Train.dataset.transform_ops")
    names = [type(op).__name__ for op in ops]
    assert names == [next(iter(item)) for item in train["transform_ops"]]
    src = np.random.default_rng(1).integers(0, 256, size=(60, 70, 3), dtype=np.uint8)
    out = transform(src, ops, rng(5))
    assert out.shape == (224, 224, 3) and out.dtype == np.float32
    assert np.array_equal(out, transform(src, ops, rng(5)))
    batch = create_batch_operators(train.get("batch_transform_ops"), class_num=10)
    assert [type(op).__name__ for op in batch] == [next(iter(i)) for i in train.get("batch_transform_ops") or []]


def test_deit_values_are_upstreams():
    cfg = yaml.safe_load((UPSTREAM / "DeiT_tiny_patch16_224.yaml").read_text())
    ops = create_operators(cfg["DataLoader"]["Train"]["dataset"]["transform_ops"])
    erase = ops[-1]
    assert erase.sh == pytest.approx(1 / 3) and erase.EPSILON == 0.25 and erase.mode == "pixel"
    timm = ops[3]
    assert timm.kind == "rand" and timm.num_layers == 2 and timm.magnitude == 9
    assert timm.hp["magnitude_std"] == 0.5 and "PosterizeIncreasing" in timm.names
    assert timm.hp["translate_const"] == int(224 * 0.45)
    (sampler,) = create_batch_operators(cfg["DataLoader"]["Train"]["dataset"]["batch_transform_ops"], class_num=5)
    assert [op.alpha for op in sampler.ops] == [0.8, 1.0]
    assert sampler.probs.tolist() == [0.5, 0.5, 0.0]


# --------------------------------------------------------------------------------- determinism

RANDOM_OPS = [
    ("AutoAugment", {}), ("RandAugment", {}), ("RandAugmentV2", {"magnitude": 9}),
    ("RandAugmentV3", {"magnitude": 7}), ("TimmAutoAugment", {"config_str": "rand-m9-mstd0.5-inc1", "img_size": 40}),
    ("TimmAutoAugment", {"config_str": "original-mstd0.5"}), ("TimmAutoAugment", {"config_str": "v0"}),
    ("TimmAutoAugment", {"config_str": "augmix-m3-w2"}),
    ("RandomErasing", {"EPSILON": 1.0, "mode": "pixel"}), ("Cutout", {"length": 16}),
    ("GridMask", {"d1": 8, "d2": 20, "rotate": 30}), ("HideAndSeek", {}), ("PCALighting", {}),
    ("RandCropImageV2", {"size": 24}), ("RandomRotation", {"degrees": 30, "prob": 1.0}),
]


@pytest.mark.parametrize("name,params", RANDOM_OPS, ids=[f"{n}-{i}" for i, (n, _) in enumerate(RANDOM_OPS)])
def test_same_seed_same_image_other_seed_other_image(name, params, img):
    op = build(name, **params)
    outs = [op(img.copy(), rng=rng(s)) for s in range(6)]
    assert np.array_equal(outs[0], op(img.copy(), rng=rng(0)))
    assert any(o.shape != outs[0].shape or not np.array_equal(o, outs[0]) for o in outs[1:])
    assert outs[0].shape[:2] == ((24, 24) if name == "RandCropImageV2" else img.shape[:2])
    expect = np.float32 if name == "PCALighting" else np.uint8
    assert outs[0].dtype == expect
    assert np.array_equal(img, np.random.default_rng(123).integers(20, 231, size=(48, 40, 3), dtype=np.uint8))


@pytest.mark.parametrize("name", ["AutoAugment", "RandAugment", "TimmAutoAugment"])
def test_policy_ops_refuse_a_normalised_image(name, img):
    with pytest.raises(Exception, match="uint8"):
        build(name)(img.astype(np.float32), rng=rng())


def test_bad_keys_are_config_errors():
    for item in ({"RandAugment": {"magnitude": -1}}, {"TimmAutoAugment": {"config_str": "rand-q3"}},
                 {"TimmAutoAugment": {"config_str": "beta"}}, {"RandomErasing": {"mode": "blur"}},
                 {"RandomErasing": {"sl": 0.5, "sh": 0.1}}, {"GridMask": {"d1": 9, "d2": 9}},
                 {"Pad": {"padding": -1}}, {"RandomRotation": {"degrees": -5}}, {"AutoAugment": {"foo": 1}}):
        with pytest.raises(ConfigError):
            create_operators([item])


# ------------------------------------------------------------------------- policy augmentations

def test_autoaugment_subpolicy_probabilities(img):
    op = build("AutoAugment")
    pil = ImageOps.equalize(__import__("PIL.Image", fromlist=["Image"]).fromarray(img))
    once = np.asarray(pil)
    # sub-policy 12: equalize with p 0.0 then equalize with p 0.8
    hits = sum(np.array_equal(np.asarray(op.run_subpolicy(
        __import__("PIL.Image", fromlist=["Image"]).fromarray(img), 12, rng(s))), once) for s in range(300))
    assert abs(hits / 300 - 0.8) < 0.08
    # the 25 sub-policies are picked uniformly
    g = rng(1)
    from ppcls.data.preprocess.imageops import choice_index
    counts = np.bincount([choice_index(g, 25) for _ in range(5000)], minlength=25)
    assert len(op.policy) == 25 and counts.min() > 140 and counts.max() < 265


def test_randaugment_levels_are_upstreams():
    v1, v2, v3 = build("RandAugment"), build("RandAugmentV2"), build("RandAugmentV3")
    assert len(v1.names) == 14 and len(v2.names) == 16 and len(v3.names) == 14
    assert v1.level_map["posterize"] == (2, False) and v1.level_map["solarize"] == (128.0, False)
    assert v1.level_map["rotate"] == (15.0, False) and v1.level_map["shearX"] == (0.15, True)
    assert v2.level_map["solarize_add"] == (55, False) and v2.level_map["cutout"] == (20, False)
    assert v2.level_map["translateX"] == (50.0, True) and v2.level_map["rotate"] == (15.0, True)
    assert v2.level_map["color"][0] + 1 == pytest.approx(1.0)   # factor 1.8 * 0.5 + 0.1
    assert v3.level_map["posterize"] == (6, False) and v3.level_map["solarize"] == (127.5, False)


def test_randaugment_choice_is_uniform_and_ops_do_what_they_say(img):
    op = build("RandAugment", num_layers=3)
    g = rng(2)
    picks = [n for _ in range(2000) for n in op.choose(g)]
    assert len(picks) == 6000
    freq = np.array([picks.count(n) for n in op.names]) / len(picks)
    assert np.abs(freq - 1 / 14).max() < 0.02
    from PIL import Image
    pil = Image.fromarray(img)
    sol = np.asarray(op.apply(pil, "solarize", rng()))
    assert np.array_equal(sol, np.where(img >= 128, 255 - img, img))
    post = np.asarray(op.apply(pil, "posterize", rng()))
    assert np.array_equal(post, img & 0b11000000)
    v2 = build("RandAugmentV2", magnitude=5)
    cut = np.asarray(v2.apply(pil, "cutout", rng(3)))
    changed = np.any(cut != img, axis=2)
    assert changed.sum() <= 40 * 40 and np.all(cut[changed] == 128)
    add = np.asarray(v2.apply(pil, "solarize_add", rng()))
    assert np.array_equal(add, np.where(img < 128, np.minimum(img.astype(int) + 55, 255), img))


def test_timm_config_strings():
    t = build("TimmAutoAugment", config_str="rand-n3-m5-w0")
    assert t.num_layers == 3 and t.magnitude == 5 and t.weights is not None
    assert t.weights.sum() == pytest.approx(1.0) and t.weights[t.names.index("Posterize")] == 0
    assert t.weights[t.names.index("Rotate")] == pytest.approx(0.3 / 1.0)
    for s, kind in (("original", "auto"), ("originalr", "auto"), ("v0r-mstd0.5", "auto"),
                    ("auto-original", "auto"), ("augmix-m3-w4-d2", "augmix")):
        assert build("TimmAutoAugment", config_str=s).kind == kind
    assert len(build("TimmAutoAugment", config_str="v0").policy) == 25


def test_timm_fill_is_the_mean_and_ops_apply_with_prob_half(img):
    from PIL import Image

    from ppcls.data.preprocess.autoaugment import TimmOp
    t = build("TimmAutoAugment", config_str="rand-n1-m10", interpolation="bilinear")
    assert t.hp["fill"] == (124, 116, 104)       # round(255 * [0.485, 0.456, 0.406])
    rot = np.asarray(TimmOp("Rotate", 1.0, 10, t.hp)(Image.fromarray(img), rng()))
    assert tuple(rot[0, 0]) == (124, 116, 104) and tuple(rot[-1, -1]) == (124, 116, 104)
    # one op per image, applied with p 0.5; of the 15, only Solarize at m10 (threshold 256) is an
    # identity here, so P(unchanged) = 0.5 + 0.5 / 15
    same = np.mean([np.array_equal(t(img, rng=rng(s)), img) for s in range(600)])
    assert abs(same - (0.5 + 0.5 / 15)) < 0.07


# ------------------------------------------------------------------------------- RandomErasing

def test_random_erasing_probability_and_area():
    op = build("RandomErasing", EPSILON=0.5, sl=0.02, sh=0.4, r1=0.3, mode="const", attempt=100)
    ones = np.ones((64, 64, 3), np.float32)
    fracs = []
    for s in range(400):
        out = op(ones, rng=rng(s))
        assert out.shape == ones.shape and out.dtype == np.float32
        fracs.append(float((out == 0).all(axis=2).mean()))
    fracs = np.array(fracs)
    erased = fracs[fracs > 0]
    assert abs(len(erased) / 400 - 0.5) < 0.08
    # each erased area is a uniform fraction in [sl, sh] (up to rounding of the sides)
    assert erased.min() >= 0.02 * 0.6 and erased.max() <= 0.4 * 1.1
    assert erased.min() < 0.06 and erased.max() > 0.32
    assert abs(np.mean(erased) - 0.21) < 0.04


def test_random_erasing_modes_and_layouts():
    base = np.full((32, 32, 3), 5.0, np.float32)
    pix = build("RandomErasing", EPSILON=1.0, mode="pixel", sl=0.3, sh=0.4)(base, rng=rng(1))
    vals = pix[pix != 5.0]
    assert vals.size > 0.25 * base.size and abs(vals.std() - 1) < 0.15 and abs(vals.mean()) < 0.15
    rand = build("RandomErasing", EPSILON=1.0, mode="rand", sl=0.3, sh=0.4)(base, rng=rng(1))
    region = rand[(rand != 5.0).any(axis=2)]
    assert len(np.unique(region, axis=0)) == 1     # one colour
    chw = build("RandomErasing", EPSILON=1.0, mean=[1, 2, 3], sl=0.3, sh=0.4)(np.zeros((3, 32, 32), np.float32), rng=rng(2))
    hit = chw[0] != 0
    assert hit.mean() > 0.25 and np.all(chw[1][hit] == 2) and np.all(chw[2][hit] == 3)


# ------------------------------------------------------------------------------------ masks

def _expected_clipped(n, half):
    return np.mean([min(y + half, n) - max(y - half, 0) for y in range(n)])


def test_cutout_hole_area_and_fill():
    op = build("Cutout", n_holes=1, length=16, fill_value=[0, 0, 0])
    ones = np.full((64, 48, 3), 200, np.uint8)
    masked = np.array([float((op(ones, rng=rng(s)) == 0).all(axis=2).mean()) for s in range(500)])
    expected = _expected_clipped(64, 8) * _expected_clipped(48, 8) / (64 * 48)
    assert abs(masked.mean() - expected) < 0.01
    assert masked.max() == pytest.approx(256 / (64 * 48))
    rnd = build("Cutout", length=16, fill_value="none")(ones, rng=rng(0))
    assert (rnd != 200).any()


def test_gridmask_masked_fraction():
    op = build("GridMask", d1=8, d2=16, ratio=0.5, mode=0, prob=1.0)
    ones = np.ones((3, 48, 48), np.float32)        # [C, H, W], as PaddleClas feeds it
    fr = [1 - op(ones, rng=rng(s))[0].mean() for s in range(300)]
    exp = np.mean([1 - ((d - int(d * 0.5 + 0.5)) / d) ** 2 for d in range(8, 16)])
    assert abs(np.mean(fr) - exp) < 0.04
    inv = build("GridMask", d1=8, d2=16, mode=1)
    fr1 = [1 - inv(ones, rng=rng(s))[0].mean() for s in range(300)]
    assert abs(np.mean(fr1) - (1 - exp)) < 0.04
    half = build("GridMask", d1=8, d2=16, prob=0.5)
    untouched = np.mean([np.array_equal(half(ones, rng=rng(s)), ones) for s in range(300)])
    assert abs(untouched - 0.5) < 0.09


def test_hide_and_seek_hidden_fraction():
    op = build("HideAndSeek")
    ones = np.ones((64, 64, 3), np.uint8)
    fr = np.array([1 - op(ones, rng=rng(s)).mean() for s in range(400)])
    assert abs(fr.mean() - 0.8 * 0.5) < 0.05       # grid 0 in 1 of 5 draws, patches hidden w.p. 0.5
    assert abs((fr == 0).mean() - (0.2 + 0.8 * 0.5 ** 9)) < 0.07


# ------------------------------------------------------------------------ lighting, geometry

def test_pca_lighting_shift_follows_the_eigenvectors(img):
    op = build("PCALighting")
    alphas = []
    for s in range(400):
        out = op(img, rng=rng(s))
        delta = out - img.astype(np.float32)
        assert np.allclose(delta, delta[0, 0], atol=1e-4)            # one colour shift for every pixel
        alphas.append(np.linalg.solve(op.eigvec, delta[0, 0]) / op.eigval)
    alphas = np.array(alphas)
    assert np.all(np.abs(alphas.mean(axis=0)) < 0.02) and np.all(np.abs(alphas.std(axis=0) - 0.1) < 0.015)


def test_random_rotation_angle_range_and_direction():
    op = build("RandomRotation", degrees=[90, 90], prob=1.0)
    sq = np.arange(32 * 32 * 3, dtype=np.uint8).reshape(32, 32, 3)
    assert np.array_equal(op(sq, rng=rng()), np.rot90(sq))               # counter-clockwise
    r = build("RandomRotation", degrees=20)
    angles = np.array([r.angle(rng(s)) for s in range(500)])
    assert angles.min() >= -20 and angles.max() <= 20 and angles.min() < -18 and angles.max() > 18
    assert abs(angles.std() - 40 / math.sqrt(12)) < 1.0
    half = build("RandomRotation", degrees=[30, 60])      # prob 0.5; every such turn changes the image
    unchanged = np.mean([np.array_equal(half(sq, rng=rng(s)), sq) for s in range(200)])
    assert abs(unchanged - 0.5) < 0.1


def test_pad_sizes_and_fill(img):
    out = build("Pad", padding=4, fill=7)(img)
    assert out.shape == (56, 48, 3) and np.all(out[:4] == 7) and np.array_equal(out[4:-4, 4:-4], img)
    out = build("Pad", padding=[1, 2, 3, 4])(img)
    assert out.shape == (48 + 6, 40 + 4, 3) and np.array_equal(out[2:-4, 1:-3], img)
    edge = build("Pad", padding=2, padding_mode="edge")(img)
    assert np.array_equal(edge[0, 2:-2], img[0])


def test_crop_image_at_ratio():
    src = np.zeros((64, 80, 3), np.uint8)
    src[16:48, 24:56] = 255                        # the centre 32 x 32
    out = build("CropImageAtRatio", size=32, pad=32)(src)
    assert out.shape == (32, 32, 3) and np.all(out == 255)
    assert build("CropImageAtRatio", size=24, pad=8)(src).shape == (24, 24, 3)


def test_rand_crop_v2_positions_are_uniform():
    idx = np.stack(np.meshgrid(np.arange(40), np.arange(48), indexing="xy"), -1).astype(np.uint8)
    src = np.concatenate([idx, np.zeros((48, 40, 1), np.uint8)], axis=2)
    op = build("RandCropImageV2", size=[32, 40])
    seen = set()
    for s in range(400):
        out = op(src, rng=rng(s))
        assert out.shape == (40, 32, 3)
        seen.add((int(out[0, 0, 1]), int(out[0, 0, 0])))
    assert seen == {(t, l) for t in range(9) for l in range(9)}


# ----------------------------------------------------------------------------- batch ops

def _batch(n=16, size=8):
    imgs = np.stack([np.full((3, size, size), i, np.float32) for i in range(n)])
    return imgs, np.arange(n) % 5


def test_mixup_lambda_follows_beta_and_targets_match():
    (op,) = create_batch_operators([{"MixupOperator": {"alpha": 0.2}}], class_num=5)
    imgs, labels = _batch()
    lams = []
    for s in range(1500):
        out, tgt = apply_batch_operators(imgs, labels, [op], batch_rng(0, 0, s))
        perm, lam = op.draw(16, batch_rng(0, 0, s))        # the draws the op made for this batch
        lams.append(lam)
        if s < 20:
            assert np.allclose(out, lam * imgs + (1 - lam) * imgs[perm], atol=1e-5)
            assert tgt.shape == (16, 5) and tgt.dtype == np.float32 and np.allclose(tgt.sum(1), 1)
            expect = lam * np.eye(5)[labels] + (1 - lam) * np.eye(5)[labels[perm]]
            assert np.allclose(tgt, expect, atol=1e-6)
    a = 0.2
    assert abs(np.mean(lams) - 0.5) < 0.03
    assert abs(np.var(lams) - 1 / (4 * (2 * a + 1))) < 0.015


def test_cutmix_box_area_matches_lambda():
    (op,) = create_batch_operators([{"CutmixOperator": {"alpha": 1.0}}], class_num=5)
    imgs, labels = _batch(size=32)
    drawn = []
    for s in range(400):
        out, tgt = apply_batch_operators(imgs, labels, [op], batch_rng(1, 0, s))
        perm, lam_drawn, (y1, y2, x1, x2) = op.draw(16, 32, 32, batch_rng(1, 0, s))
        drawn.append(lam_drawn)
        lam = 1 - (y2 - y1) * (x2 - x1) / 32**2                # the pasted area's true fraction
        if 0 < y1 and y2 < 32 and 0 < x1 and x2 < 32:          # box not clipped: sides 32 * sqrt(1 - lam)
            side = 32 * math.sqrt(1 - drawn[-1])
            assert side - 2 <= y2 - y1 <= side and side - 2 <= x2 - x1 <= side
        i = int(np.argmax(perm != np.arange(16)))
        pasted = (out[i, 0] == perm[i]).mean()
        assert pasted == pytest.approx(1 - lam)
        assert np.allclose(tgt[i], lam * np.eye(5)[labels[i]] + (1 - lam) * np.eye(5)[labels[perm[i]]])
    assert abs(np.mean(drawn) - 0.5) < 0.04 and abs(np.var(drawn) - 1 / 12) < 0.012   # Beta(1, 1)
    nhwc, _ = apply_batch_operators(imgs.transpose(0, 2, 3, 1), labels, [op], batch_rng(1, 0, 3))
    chw, _ = apply_batch_operators(imgs, labels, [op], batch_rng(1, 0, 3))
    assert np.array_equal(nhwc.transpose(0, 3, 1, 2), chw)


def test_op_sampler_frequencies_follow_probs():
    ops = create_batch_operators([{"OpSampler": {"MixupOperator": {"alpha": 0.8, "prob": 0.5},
                                                 "CutmixOperator": {"alpha": 1.0, "prob": 0.3}}}], class_num=4)
    imgs, labels = _batch(8)
    labels = labels % 4
    picks = []
    for s in range(2000):
        _, tgt = apply_batch_operators(imgs, labels, ops, batch_rng(2, 1, s))
        picks.append(ops[0].choose(batch_rng(2, 1, s)))
        if picks[-1] == 2:
            assert np.array_equal(tgt, np.eye(4, dtype=np.float32)[labels])   # unmixed: one-hot
    freq = np.bincount(picks, minlength=3) / 2000
    assert np.allclose(freq, [0.5, 0.3, 0.2], atol=0.035)


def test_batch_ops_are_deterministic_and_checked():
    ops = create_batch_operators([{"OpSampler": {"MixupOperator": {"alpha": 0.8, "prob": 0.5},
                                                 "CutmixOperator": {"alpha": 1.0, "prob": 0.5}}}], class_num=5)
    imgs, labels = _batch()
    a = apply_batch_operators(imgs, labels, ops, batch_rng(3, 2, 7))
    b = apply_batch_operators(imgs, labels, ops, batch_rng(3, 2, 7))
    c = apply_batch_operators(imgs, labels, ops, batch_rng(3, 2, 8))
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert not (np.array_equal(a[0], c[0]) and np.array_equal(a[1], c[1]))
    assert sorted(BATCH_OPS.names()) == ["CutmixOperator", "MixupOperator", "OpSampler"]
    for bad, cls in (([{"MixupOperator": {"alpha": 0}}], 5), ([{"MixupOperator": {"beta": 1}}], 5),
                     ([{"Fmix": {}}], 5), ([{"MixupOperator": {"alpha": 1}}], None),
                     ([{"OpSampler": {"MixupOperator": {"prob": 0.7}, "CutmixOperator": {"prob": 0.6}}}], 5)):
        with pytest.raises(ConfigError):
            create_batch_operators(bad, class_num=cls)


def test_posterize_keeps_the_top_bits_down_to_zero():
    """RandAugmentV2 below magnitude 2.5 asks for 0 bits (PIL refuses 0): all values become 0."""
    from PIL import Image, ImageOps

    from ppcls.data.preprocess.imageops import posterize

    arr = np.random.default_rng(0).integers(0, 256, (8, 8, 3)).astype(np.uint8)
    img = Image.fromarray(arr)
    for bits in range(1, 8):
        assert np.array_equal(np.asarray(posterize(img, bits)), np.asarray(ImageOps.posterize(img, bits)))
    assert not np.asarray(posterize(img, 0)).any()
