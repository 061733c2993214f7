"""Global.use_dali (issue 17): the training list as a DALI pipeline, run in DALI's CPU-only mode
(device_id=None), the same code a GPU runs up to the decoder's device. Skipped without
nvidia-dali (requirements-test.txt installs it)."""

import numpy as np
import pytest
from PIL import Image

from ppcls.data import build_dataloader
from ppcls.data.preprocess import create_operators

pytest.importorskip("nvidia.dali")

MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


def picture(size, seed):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    base = np.stack([xx * 255 // (size - 1), yy * 255 // (size - 1), (xx + 2 * yy) % 256], -1)
    return np.clip(base + rng.integers(0, 30, (size, size, 3)), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("dali")
    lines = []
    for i in range(12):
        Image.fromarray(picture(64, i)).save(root / f"{i}.jpg", quality=95)
        lines.append(f"{i}.jpg {i % 3}")
    (root / "list.txt").write_text("\n".join(lines) + "\n")
    return root


def config(root, ops, sampler=None, **dataset):
    return {"Global": {"seed": 5, "use_dali": True, "device": "cpu"},
            "Arch": {"name": "MobileNeXt_x0_35", "class_num": 3},
            "DataLoader": {"Train": {
                "dataset": {"name": "ImageNetDataset", "image_root": str(root),
                            "cls_label_path": str(root / "list.txt"), "transform_ops": ops, **dataset},
                "sampler": sampler or {"name": "DistributedBatchSampler", "batch_size": 4, "shuffle": True,
                                       "drop_last": True},
                "loader": {"num_workers": 2}}}}


FULL_CROP = [{"DecodeImage": {"to_rgb": True, "channel_first": False}},
             {"RandCropImage": {"size": 32, "scale": [1.0, 1.0], "ratio": [1.0, 1.0], "interpolation": "bilinear",
                                "backend": "pil"}},
             {"NormalizeImage": {"scale": "1.0/255.0", "mean": MEAN, "std": STD, "order": ""}}]


def reference(root, index, ops):
    """The built-in ops on the whole image (a crop of scale 1 and ratio 1 is the whole square)."""
    decode, crop, norm = create_operators(ops)
    img = decode(str(root / f"{index}.jpg"))
    img = np.asarray(Image.fromarray(img).resize(crop.size, Image.BILINEAR))
    return norm(img).transpose(2, 0, 1)


def test_dali_pipeline_decodes_resizes_and_normalises_as_the_ops(folder):
    loader = build_dataloader(config(folder, FULL_CROP), "Train", device="cpu")
    assert type(loader).__name__ == "DaliLoader" and len(loader) == 3
    seen = set()
    for images, labels, indices in loader:
        assert images.dtype.name == "FLOAT32" and tuple(images.shape) == (4, 3, 32, 32)
        assert labels.numpy().tolist() == [i % 3 for i in indices]  # labels from the list, by index
        for image, index in zip(images.numpy(), indices):
            ref = reference(folder, index, FULL_CROP)
            assert np.abs(image - ref).mean() < 0.03, index  # about 1.5 grey levels (resampler, IDCT)
            seen.add(int(index))
    assert len(seen) == 12  # each image once per epoch


def test_dali_flip_jitter_and_random_crop_keep_their_distributions(folder):
    ops = [FULL_CROP[0], {"RandCropImage": {"size": 24, "interpolation": "random"}}, {"RandFlipImage": {"flip_code": 1}},
           {"ColorJitter": {"brightness": 0.4, "contrast": 0.4, "saturation": 0.4, "hue": 0}}, FULL_CROP[2]]
    loader = build_dataloader(config(folder, ops), "Train", device="cpu")
    batches = [b for _ in range(3) for b in loader]
    images = np.concatenate([b[0].numpy() for b in batches])
    assert images.shape == (36, 3, 24, 24) and np.isfinite(images).all()
    assert len({float(img.mean()) for img in images}) == 36  # random crops and factors differ per image
    # flips: with a full crop and no jitter, each image is the reference or its mirror, both seen
    ops = FULL_CROP[:2] + [{"RandFlipImage": {"flip_code": 1}}, FULL_CROP[2]]
    kinds = set()
    for _ in range(2):
        for images, _, indices in build_dataloader(config(folder, ops), "Train", device="cpu"):
            for image, index in zip(images.numpy(), indices):
                ref = reference(folder, index, FULL_CROP)
                plain, mirrored = np.abs(image - ref).mean(), np.abs(image - ref[:, :, ::-1]).mean()
                assert min(plain, mirrored) < 0.03
                kinds.add(plain < mirrored)
    assert kinds == {True, False}


def test_dali_jitter_factors_stay_in_the_ops_range(folder):
    """Brightness 0.4 alone: each image's mean is its reference's scaled by a factor in
    [0.6, 1.4] (in grey levels); prob 0 leaves the images as they are."""
    def grey_means(ops):
        out = {}
        for images, _, indices in build_dataloader(config(folder, ops), "Train", device="cpu"):
            for image, index in zip(images.numpy(), indices):
                out[int(index)] = float((image * np.array(STD)[:, None, None] + np.array(MEAN)[:, None, None]).mean())
        return out

    plain = grey_means(FULL_CROP)
    bright = grey_means(FULL_CROP[:2] + [{"ColorJitter": {"brightness": 0.4}}, FULL_CROP[2]])
    ratios = [bright[i] / plain[i] for i in plain]
    assert min(ratios) > 0.58 and max(ratios) < 1.42 and max(ratios) - min(ratios) > 0.1
    skipped = grey_means(FULL_CROP[:2] + [{"ColorJitter": {"brightness": 0.4, "prob": 0.0}}, FULL_CROP[2]])
    assert all(abs(skipped[i] - plain[i]) < 1e-3 for i in plain)


@pytest.mark.parametrize("change,reason", [
    ({"batch_transform_ops": [{"MixupOperator": {"alpha": 0.2}}]}, "batch_transform_ops"),
    ({"transform_ops": [FULL_CROP[0], {"ResizeImage": {"size": 32}}, FULL_CROP[2]]}, "RandCropImage"),
    ({"transform_ops": FULL_CROP[:2] + [{"RandomErasing": None}, FULL_CROP[2]]}, "RandomErasing"),
])
def test_dali_falls_back_with_one_warning_for_what_it_cannot_run(folder, capsys, change, reason):
    from ppcls.utils import logger

    cfg = config(folder, FULL_CROP)
    cfg["DataLoader"]["Train"]["dataset"].update(change)
    logger.init_logger()  # onto this test's captured stdout
    loader = build_dataloader(cfg, "Train", device="cpu")
    assert type(loader).__name__ == "ImageDataLoader"
    warnings = [line for line in capsys.readouterr().out.splitlines() if "WARNING" in line and "use_dali" in line]
    assert len(warnings) == 1 and reason in warnings[0] and "built-in loader" in warnings[0]


def test_training_with_use_dali_runs_on_the_pipeline(folder, tmp_path):
    """The engine trains an epoch on the DALI loader (CPU-only mode here), with the list's labels."""
    import os

    from ppcls.engine import Engine

    cfg = config(folder, FULL_CROP[:2] + [{"RandFlipImage": {"flip_code": 1}}, FULL_CROP[2]])
    cfg["Global"].update(output_dir=str(tmp_path), epochs=1, print_batch_step=1, save_interval=0,
                         eval_during_train=False)
    cfg.update({"Loss": {"Train": [{"CELoss": {"weight": 1.0}}]},
                "Optimizer": {"name": "Momentum", "momentum": 0.9, "lr": {"name": "Constant", "learning_rate": 0.01}},
                "Metric": {"Train": [{"TopkAcc": {"topk": [1, 2]}}]}})
    engine = Engine(cfg, "train")
    assert type(engine.train_loader).__name__ == "DaliLoader"
    engine.train()
    log = open(os.path.join(str(tmp_path), "MobileNeXt_x0_35", "train.log")).read()
    assert "through a DALI pipeline on the CPU" in log and "[Train][Epoch 1/1][Avg]" in log
    assert "use_dali" not in "".join(line for line in log.splitlines() if "WARNING" in line)


def test_dali_gpu_pipeline_is_built_up_to_the_point_a_gpu_is_needed():
    """The graph a card runs (nvJPEG's mixed decoder, the same ops after it) is defined here; only
    starting it needs CUDA."""
    from ppcls.data import dali

    ops = create_operators([FULL_CROP[0], {"RandCropImage": {"size": 224, "interpolation": "random"}},
                            {"RandFlipImage": {"flip_code": -1}},
                            {"ColorJitter": {"brightness": 0.4, "contrast": 0.4, "saturation": 0.4, "hue": 0.1,
                                             "prob": 0.5}},
                            {"NormalizeImage": {"order": "", "output_fp16": True, "channel_num": 4}}])
    pipeline = dali.build_pipeline(["a.jpg", "b.jpg"], ops, 2, True, 1, device_id=0)
    assert pipeline.device_id == 0 and pipeline.batch_size == 2
    try:
        import paddle

        has_gpu = paddle.device.is_compiled_with_cuda() and paddle.device.cuda.device_count() > 0
    except Exception:  # noqa: BLE001
        has_gpu = False
    if not has_gpu:
        with pytest.raises(RuntimeError, match="CUDA"):
            pipeline.build()
