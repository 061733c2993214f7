"""PaddleClas's other samplers and datasets (MultiScaleSampler + MultiScaleDataset, RASampler,
BatchSampler, relabel) and progressive training (Global.train_mode: progressive).

Samplers are checked on index lists (a dataset is only its length), with the numbers that
PaddleClas's definitions give, computed by hand in the comments; two cards are two sampler
objects with ``num_replicas=2`` and ``rank`` 0 and 1. Two short runs on the digits exercise the
whole path (MultiScale at 32 and 64 px, progressive over four stages).
"""

import math
import os
import shutil
from collections import Counter

import numpy as np
import pytest
import yaml

from ppcls.data import build_dataloader
from ppcls.data.dataset import ImageNetDataset, MultiScaleDataset, SampleKey, sample_rng
from ppcls.data.sampler import BatchSampler, DistributedBatchSampler, MultiScaleSampler, RASampler
from ppcls.engine.progressive import ProgressiveTraining, stage_of
from ppcls.utils.errors import ConfigError, DataError
from helpers import QUICKSTART, load_params, log_lines, tiny_data  # noqa: F401


def train_here(path, overrides, monkeypatch, trace=None):
    """``tools/train.py -c path -o ...`` in this process (the tools are thin over it); returns
    the lines of train.log."""
    from ppcls.engine import train
    from ppcls.utils.config import get_config

    if trace is not None:
        monkeypatch.setenv("PPCLS_TRACE_DIR", str(trace))
    else:
        monkeypatch.delenv("PPCLS_TRACE_DIR", raising=False)
    # Global.fast_cpu off: its kernels set process-wide thread counts (tools/train.py runs have
    # them on; a by-hand MobileViTV3_S run at 32/64/96 px used them)
    cfg = get_config(str(path), list(overrides) + ["Global.fast_cpu=False"])
    train(cfg)
    log = os.path.join(cfg["Global"]["output_dir"], cfg["Arch"]["name"], "train.log")
    with open(log) as f:
        return f.read()


class Indices:
    """A data set that is only a length: what the samplers look at."""

    def __init__(self, n):
        self.n = n

    def __len__(self):
        return self.n


# ---------------------------------------------------------------- MultiScaleSampler

def test_multiscale_pairs_follow_paddleclas_rule():
    # MobileViTV3_S.yaml: scales [256, 160, 192, 224, 288, 320], first_bs 48, divided_factor 32.
    # batch size = int(256 * 256 * 48 / (s * s)): 48, 122.88, 85.33, 62.69, 37.93, 30.72
    s = MultiScaleSampler(Indices(1000), [256, 160, 192, 224, 288, 320], first_bs=48,
                          num_replicas=1, rank=0)
    assert s.img_batch_pairs == [(256, 256, 48), (160, 160, 122), (192, 192, 85), (224, 224, 62),
                                 (288, 288, 37), (320, 320, 30)]
    # sizes are rounded down to the factor; [w, h] pairs keep their orientation
    s = MultiScaleSampler(Indices(10), [[64, 48], 50], first_bs=4, divided_factor=16, num_replicas=1, rank=0)
    assert s.img_batch_pairs == [(64, 48, 4), (48, 48, 5)]  # 64*48*4 / (48*48) = 5.33
    # evaluation: the first scale as given, with first_bs
    s = MultiScaleSampler(Indices(10), [50, 64], first_bs=4, is_training=False, num_replicas=1, rank=0)
    assert s.img_batch_pairs == [(50, 50, 4)]
    with pytest.raises(ConfigError, match="scales"):
        MultiScaleSampler(Indices(10), [64, "x"], first_bs=4)


@pytest.mark.parametrize("n", [101, 100])
def test_multiscale_two_cards_share_steps_and_split_the_data(n):
    kw = dict(scales=[64, 32, 48], first_bs=4, divided_factor=16, num_replicas=2)
    ranks = [MultiScaleSampler(Indices(n), rank=r, **kw) for r in (0, 1)]
    per_card = math.ceil(n / 2)
    seen_orders = set()
    for epoch in (1, 2, 3):
        b0, b1 = (s.batches(epoch) for s in ranks)
        assert len(b0) == len(b1) == len(ranks[0])  # the same number of steps every epoch
        for x, y in zip(b0, b1):  # the same resolution and batch size on both cards at each step
            sizes = {k.size for k in x} | {k.size for k in y}
            assert len(sizes) == 1 and len(x) == len(y)
            w, h = sizes.pop()
            assert (w, h, len(x)) in ranks[0].img_batch_pairs
        seen_orders.add(tuple(batch[0].size for batch in b0))
        firsts = []
        for batches in (b0, b1):
            keys = [k.index for b in batches for k in b]
            first = keys[:per_card]  # the card's share, then the fill-up of the last batch
            assert len(set(first)) == len(first) or n % 2  # distinct within a share
            assert set(keys) == set(first[:len(set(keys))]) | set(keys[per_card:])
            firsts.append(set(keys))
            assert all(k.epoch == epoch for b in batches for k in b)
        assert not firsts[0] & firsts[1]  # disjoint shares
        assert firsts[0] | firsts[1] == set(range(n))  # every sample once per epoch on the two cards
        assert sum(len(b) for b in b0) >= per_card
    assert len(seen_orders) > 1  # the order of resolutions changes between epochs


def test_multiscale_dataset_crops_to_the_batch_size(tiny_data):
    root, _, _ = tiny_data
    ops = [{"DecodeImage": {"to_rgb": True, "channel_first": False}},
           {"RandCropImage": {"size": 40, "scale": [0.5, 1.0], "interpolation": "bilinear"}},
           {"NormalizeImage": {"scale": "1.0/255.0", "mean": [0.5] * 3, "std": [0.5] * 3, "order": ""}}]
    ds = MultiScaleDataset(root, os.path.join(root, "train_small.txt"), ops, class_num=10, seed=3)
    assert ds[SampleKey(0, 1, size=(64, 48))][0].shape == (3, 48, 64)  # [C, H, W] of (w, h)
    assert ds[SampleKey(0, 1)][0].shape == (3, 40, 40)  # no size: the list as written
    # the other keys of the op are kept: scale [0.5, 1] crops differ from a full-image resize
    a, b = ds[SampleKey(0, 1, size=(32, 32))][0], ds[SampleKey(0, 2, size=(32, 32))][0]
    assert not np.array_equal(a, b)
    with pytest.raises(ConfigError, match="MultiScaleDataset needs a RandCropImage"):
        MultiScaleDataset(root, os.path.join(root, "train_small.txt"), [ops[0], ops[2]], class_num=10)


def multiscale_config(root):
    with open(QUICKSTART) as f:
        cfg = yaml.safe_load(f)
    train = cfg["DataLoader"]["Train"]
    train["dataset"].update(name="MultiScaleDataset", image_root=root,
                            cls_label_path=os.path.join(root, "train_small.txt"))
    train["sampler"] = {"name": "MultiScaleSampler", "scales": [32, 64], "first_bs": 8,
                        "divided_factor": 32, "is_training": True}
    ev = cfg["DataLoader"]["Eval"]
    ev["dataset"].update(image_root=root, cls_label_path=os.path.join(root, "val_small.txt"))
    ev["sampler"]["batch_size"] = 8
    return cfg


def test_multiscale_loader_batches_and_a_short_run(tiny_data, tmp_path, monkeypatch):
    root, train_labels, _ = tiny_data
    cfg = multiscale_config(root)
    # pairs: (32, 32, 8) and (64, 64, int(32*32*8 / 64**2) = 2)
    loader = build_dataloader(cfg, "Train", seed=5)
    shapes = Counter()
    seen = []
    for images, labels, indices in loader:
        shapes[tuple(images.shape)] += 1
        assert labels.numpy().tolist() == [train_labels[i] for i in indices]
        seen += indices.tolist()
    assert set(shapes) <= {(8, 3, 32, 32), (2, 3, 64, 64)} and len(shapes) == 2, shapes
    assert set(seen) == set(range(len(train_labels)))
    # the same images with two worker processes (each sample seeded by (seed, epoch, index))
    cfg["DataLoader"]["Train"]["loader"]["num_workers"] = 2
    single, multi = (build_dataloader(c, "Train", seed=5) for c in (multiscale_config(root), cfg))
    for (a, _, ia), (b, _, ib) in zip(single, multi):
        assert np.array_equal(ia, ib) and np.array_equal(a.numpy(), b.numpy())
    cfg["DataLoader"]["Train"]["loader"]["num_workers"] = 0
    # MultiScaleSampler needs MultiScaleDataset
    bad = multiscale_config(root)
    bad["DataLoader"]["Train"]["dataset"]["name"] = "ImageNetDataset"
    with pytest.raises(ConfigError, match="MultiScaleSampler needs dataset MultiScaleDataset"):
        build_dataloader(bad, "Train", seed=5)

    # a short training run through tools/train.py: steps at both resolutions
    cfg["Arch"]["name"] = "MobileNeXt_x0_35"
    cfg["Global"].update(epochs=1, output_dir=str(tmp_path / "out"), print_batch_step=1,
                         eval_during_train=False, max_iters_per_epoch=6, seed=5)
    cfg["Optimizer"]["lr"]["warmup_epoch"] = 0
    path = tmp_path / "ms.yaml"
    path.write_text(yaml.safe_dump(cfg))
    trace = tmp_path / "trace"
    log = train_here(path, [], monkeypatch, trace)
    steps = [yaml.safe_load(line) for line in (trace / "trace.rank0.jsonl").read_text().splitlines()]
    assert len(steps) == 6
    assert {len(s["indices"]) for s in steps} == {8, 2}  # 32 px batches of 8 and 64 px batches of 2
    assert len({s["params"] for s in steps}) == 6  # every step updated the weights
    assert len(log_lines(log, "[Train][Epoch 1/1][Iter:")) == 6


# ---------------------------------------------------------------- RASampler, BatchSampler

def test_rasampler_repeats_each_image_across_cards():
    n, bs = 600, 32
    cards = [RASampler(Indices(n), bs, num_replicas=2, rank=r, shuffle=True, num_repeats=3) for r in (0, 1)]
    # DeiT's rule: each card uses 600 // 256 * 256 / 2 = 256 samples an epoch: 8 batches of 32
    assert [len(c) for c in cards] == [8, 8]
    keys = [c.keys(epoch=4) for c in cards]
    assert [len(k) for k in keys] == [256, 256]
    # the repeated list is each index 3 times in a row, dealt to the cards in turn
    order = np.arange(n)
    np.random.RandomState(4).shuffle(order)
    repeated = [(int(i), r) for i in order for r in range(3)]
    for rank in (0, 1):
        assert [(k.index, k.repeat) for k in keys[rank]] == repeated[rank::2][:256]
    both = [(k.index, k.repeat) for ks in keys for k in ks]
    assert len(set(both)) == len(both)  # each copy used once
    counts = Counter(i for i, _ in both)
    assert max(counts.values()) == 3 and sum(counts.values()) == 512
    split = {i for i in counts if {k.index for k in keys[0]} >= {i} and {k.index for k in keys[1]} >= {i}}
    assert len(split) > 100  # most images have copies on both cards
    batches = list(cards[0])
    assert [len(b) for b in batches] == [32] * 8 and batches[0][0].epoch == 0
    # each copy is augmented differently: the copy number is part of the seed
    draws = [sample_rng(7, 4, 10, r).random() for r in range(3)]
    assert len(set(draws)) == 3 and draws[0] == sample_rng(7, 4, 10).random()
    with pytest.raises(ConfigError, match="at least 256 images"):
        RASampler(Indices(200), 8, num_replicas=1, rank=0)


def test_rasampler_copies_are_augmented_differently(tiny_data):
    root, _, _ = tiny_data
    ops = [{"DecodeImage": {"to_rgb": True, "channel_first": False}},
           {"RandCropImage": {"size": 32, "scale": [0.3, 1.0]}}]
    cfg = {"Global": {}, "Arch": {"class_num": 10}, "DataLoader": {"Train": {
        "dataset": {"name": "ImageNetDataset", "image_root": root,
                    "cls_label_path": os.path.join(root, "train_list.txt"), "transform_ops": ops},
        "sampler": {"name": "RASampler", "batch_size": 6, "shuffle": True, "num_repeats": 3},
        "loader": {"num_workers": 0}}}}
    loader = build_dataloader(cfg, "Train", seed=2)
    n = len(loader.dataset)  # 1437 digits: 1280 samples an epoch, 214 batches (the last one of 2)
    assert len(loader) == math.ceil(n // 256 * 256 / 6)
    images, labels, indices = next(iter(loader))
    assert indices.tolist()[:3] == [indices[0]] * 3  # one card: the three copies in a row
    assert labels.numpy().tolist()[:3] == [labels.numpy()[0]] * 3
    copies = images.numpy()[:3]
    assert not np.array_equal(copies[0], copies[1]) and not np.array_equal(copies[1], copies[2])


def test_batchsampler_is_paddle_batchsampler_over_all_data():
    bs = BatchSampler(Indices(10), batch_size=4, shuffle=True)
    ref = DistributedBatchSampler(Indices(10), 4, num_replicas=1, rank=0, shuffle=True)
    bs.set_epoch(3)
    ref.set_epoch(3)
    ours = [[k.index for k in b] for b in bs]
    assert ours == [[k.index for k in b] for b in ref]
    assert sorted(sum(ours, [])) == list(range(10)) and [len(b) for b in ours] == [4, 4, 2]
    assert len(BatchSampler(Indices(10), batch_size=4, drop_last=True)) == 2
    plain = BatchSampler(Indices(5), batch_size=2)
    assert [[k.index for k in b] for b in plain] == [[0, 1], [2, 3], [4]]


# ---------------------------------------------------------------- relabel

def test_relabel_maps_present_labels_to_0_k(tiny_data, tmp_path):
    root, _, _ = tiny_data
    lines = (open(os.path.join(root, "train_small.txt")).read().splitlines())[:5]
    originals = [7, 1003, -2, 7, 40]
    path = tmp_path / "odd_labels.txt"
    path.write_text("".join(f"{line.split()[0]} {label}\n" for line, label in zip(lines, originals)))
    ds = ImageNetDataset(root, str(path), relabel=True, class_num=4)
    assert ds.label_map == {-2: 0, 7: 1, 40: 2, 1003: 3}
    assert ds.labels == [1, 3, 0, 1, 2]
    with pytest.raises(DataError, match="4 different labels.*Arch.class_num is 3"):
        ImageNetDataset(root, str(path), relabel=True, class_num=3)
    with pytest.raises(DataError, match="line 1: label 7 is outside"):  # without relabel
        ImageNetDataset(root, str(path), class_num=4)


# ---------------------------------------------------------------- progressive training

EFFNETV2_OPS = [  # EfficientNetV2_S.yaml's train list
    {"DecodeImage": {"to_rgb": True, "channel_first": False}},
    {"RandCropImage": {"size": 171, "progress_size": [171, 214, 257, 300], "scale": [0.05, 1.0]}},
    {"RandFlipImage": {"flip_code": 1}},
    {"RandAugmentV2": {"num_layers": 2, "magnitude": 5.0,
                       "progress_magnitude": [5.0, 8.3333333333, 11.66666666667, 15.0]}},
    {"NormalizeImage": {"scale": 1.0, "mean": [128.0] * 3, "std": [128.0] * 3, "order": ""}},
]


def test_progressive_stages_follow_paddleclas():
    # 350 epochs: stage ends int(350 * k / 4) = 87, 175, 262, 350
    stages = {e: stage_of(e, 350) for e in (1, 87, 88, 175, 176, 262, 263, 350)}
    assert stages == {1: 0, 87: 0, 88: 1, 175: 1, 176: 2, 262: 2, 263: 3, 350: 3}
    assert [stage_of(e, 6) for e in range(1, 7)] == [0, 1, 1, 2, 3, 3]  # ends 1, 3, 4, 6
    cfg = {"Global": {"epochs": 8, "train_mode": "progressive"},
           "DataLoader": {"Train": {"dataset": {"transform_ops": EFFNETV2_OPS}}}}
    prog = ProgressiveTraining(cfg)
    sizes = [prog.settings(stage_of(e, 8))["train_image_size"] for e in range(1, 9)]
    assert sizes == [171, 171, 214, 214, 257, 257, 300, 300]
    mags = [prog.settings(s)["random_aug_magnitude"] for s in range(4)]
    assert mags == [5.0, 8.3333333333, 11.66666666667, 15.0]
    staged = prog.stage_config(2)["DataLoader"]["Train"]["dataset"]["transform_ops"]
    assert staged[1]["RandCropImage"]["size"] == 257
    assert staged[3]["RandAugmentV2"]["magnitude"] == 11.66666666667
    assert EFFNETV2_OPS[1]["RandCropImage"]["size"] == 171  # the config itself is untouched
    short = {"Global": {"train_mode": "progressive"}, "DataLoader": {"Train": {"dataset": {"transform_ops": [
        {"RandCropImage": {"size": 32, "progress_size": [32, 40]}}]}}}}
    with pytest.raises(ConfigError, match="progress_size expects a list of 4 values"):
        ProgressiveTraining(short)
    with pytest.raises(ConfigError, match="needs 'progress_size'"):
        ProgressiveTraining({"Global": {"train_mode": "progressive"}, "DataLoader": {"Train": {
            "dataset": {"transform_ops": EFFNETV2_OPS[:1]}}}})


def test_progressive_run_grows_size_magnitude_and_dropout(tiny_data, tmp_path, monkeypatch):
    root, _, _ = tiny_data
    ops = [dict(op) for op in EFFNETV2_OPS]
    ops[1] = {"RandCropImage": {"size": 32, "progress_size": [32, 40, 48, 56], "scale": [0.5, 1.0]}}
    over = [f"DataLoader.Train.dataset.image_root={root}",
            f"DataLoader.Train.dataset.cls_label_path={os.path.join(root, 'train_small.txt')}",
            "DataLoader.Train.sampler.batch_size=8", "Arch.name=MobileNeXt_x0_35",
            "Arch.dropout=[0.1, 0.2, 0.3, 0.4]", "Global.device=cpu",
            f"Global.output_dir={tmp_path / 'out'}", "Global.epochs=4", "Global.eval_during_train=False",
            "Global.max_iters_per_epoch=1", "Global.seed=3", "Global.train_mode=progressive",
            "Global.save_interval=1",
            "Optimizer.lr.warmup_epoch=0", "Global.print_batch_step=1"]
    with open(QUICKSTART) as f:
        cfg = yaml.safe_load(f)
    cfg["DataLoader"]["Train"]["dataset"]["transform_ops"] = ops
    path = tmp_path / "prog.yaml"
    path.write_text(yaml.safe_dump(cfg))
    trace = tmp_path / "trace"
    stages = log_lines(train_here(path, over, monkeypatch, trace), "Training stage:")
    assert len(stages) == 4
    for k, (size, mag, drop) in enumerate(zip([32, 40, 48, 56], [5.0, 8.3333333333, 11.66666666667, 15.0],
                                              [0.1, 0.2, 0.3, 0.4])):
        assert (f"Training stage: [{k + 1}/4](random_aug_magnitude={mag}, train_image_size={size}, "
                f"dropout_rate={drop})") in stages[k]
    assert len((trace / "trace.rank0.jsonl").read_text().splitlines()) == 4
    # resumed from epoch 2, the run enters stage 3 with the same values and ends where the
    # uninterrupted run ended
    resumed = tmp_path / "resumed" / "MobileNeXt_x0_35"
    resumed.mkdir(parents=True)
    for f in (tmp_path / "out" / "MobileNeXt_x0_35").glob("epoch_2.*"):
        shutil.copy(f, resumed / f.name)
    log = train_here(path, over + [f"Global.output_dir={tmp_path / 'resumed'}",
                                   f"Global.checkpoints={resumed / 'epoch_2'}"], monkeypatch)
    assert log_lines(log, "Training stage:")[0].endswith(stages[2].split("INFO: ")[-1])
    a, _ = load_params(str(tmp_path / "out" / "MobileNeXt_x0_35" / "latest"))
    b, _ = load_params(str(resumed / "latest"))
    assert all(np.array_equal(a[k], b[k]) for k in a)


def test_progressive_hook_rebuilds_the_loader_with_the_stage_size(tiny_data):
    import paddle

    from ppcls.arch import build_model

    root, _, _ = tiny_data
    ops = [{"DecodeImage": {"to_rgb": True, "channel_first": False}},
           {"RandCropImage": {"size": 32, "progress_size": [32, 40, 48, 56]}},
           {"RandAugmentV2": {"num_layers": 2, "magnitude": 5.0, "progress_magnitude": [5, 6, 7, 8]}}]
    cfg = {"Global": {"epochs": 4, "train_mode": "progressive"},
           "Arch": {"name": "MobileNeXt_x0_35", "class_num": 10, "dropout": [0.1, 0.2, 0.3, 0.4]},
           "DataLoader": {"Train": {
               "dataset": {"name": "ImageNetDataset", "image_root": root,
                           "cls_label_path": os.path.join(root, "train_small.txt"), "transform_ops": ops},
               "sampler": {"name": "DistributedBatchSampler", "batch_size": 8, "drop_last": True}}}}

    class FakeEngine:
        device, seed, train_loader = "cpu", 1, None
        bare_model = build_model(cfg)

    eng = FakeEngine()
    prog = ProgressiveTraining(cfg, lambda stage_cfg: build_dataloader(stage_cfg, "Train", device="cpu", seed=1))
    built = []
    for epoch in (1, 2, 2, 3, 4):
        prog.before_epoch(eng, epoch)
        built.append(eng.train_loader)
        images, _, _ = next(iter(eng.train_loader))
        assert images.shape[-1] == [32, 40, 40, 48, 56][len(built) - 1]
        ra = eng.train_loader.dataset.ops[2]
        assert ra.magnitude == [5, 6, 7, 8][epoch - 1]
        drop = [m for m in eng.bare_model.sublayers() if isinstance(m, paddle.nn.Dropout)]
        assert [d.p for d in drop] == [[0.1, 0.2, 0.3, 0.4][epoch - 1]]
    assert built[1] is built[2]  # rebuilt at stage changes only
