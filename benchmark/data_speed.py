"""Data pipeline speed: images per second per worker for the ImageNet train transforms.

    python benchmark/data_speed.py                  # 96 JPEGs, 3 repeats
    python benchmark/data_speed.py --images 200 --config ppcls/configs/ImageNet/MobileNeXt/MobileNeXt_100.yaml

Writes --images ImageNet-sized JPEGs (sizes drawn around ImageNet's typical 500x375 /
375x500, quality 90, smooth random content so files are realistically sized) to a temporary
folder, then runs DataLoader.Train.dataset.transform_ops of the config (default: the
published MobileNeXt recipe: decode, RandCropImage 224 with random interpolation,
RandFlipImage, ColorJitter, NormalizeImage, ToCHWImage) over every file in one process,
which is what one DataLoader worker does. Reported per stage (decode alone, the full
pipeline) and per op, median over the repeats. A training step of the fast CPU path at
batch 32 needs 32 / step-seconds images per second; divide by this number for the workers
that keeps it fed.
"""

import argparse
import os
import sys
import tempfile
import time

from common import header, median, print_table

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RECIPE = os.path.join(ROOT, "ppcls", "configs", "ImageNet", "MobileNeXt", "MobileNeXt_100.yaml")


def write_jpegs(folder, count, seed=0):
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    paths, sizes = [], []
    for i in range(count):
        w, h = (500, 375) if rng.random() < 0.7 else (375, 500)
        scale = rng.uniform(0.8, 1.2)
        w, h = int(w * scale), int(h * scale)
        # Smooth content: low-resolution noise upsampled, plus a little fine noise.
        base = rng.integers(0, 256, (h // 16 + 1, w // 16 + 1, 3), dtype=np.uint8)
        img = Image.fromarray(base).resize((w, h), Image.BICUBIC)
        arr = np.asarray(img, dtype=np.int16) + rng.integers(-24, 25, (h, w, 3))
        path = os.path.join(folder, f"{i:04d}.jpg")
        Image.fromarray(arr.clip(0, 255).astype(np.uint8)).save(path, quality=90)
        paths.append(path)
        sizes.append(os.path.getsize(path))
    return paths, sizes


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=96)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--config", default=RECIPE)
    args = parser.parse_args(argv)

    import numpy as np

    from ppcls.data.preprocess import create_operators
    from ppcls.utils.config import get_config

    print("\n".join(header("benchmark/data_speed.py " + " ".join(argv or sys.argv[1:]),
                           ("paddle", "PIL", "numpy", "cv2"))))
    op_list = get_config(args.config, show=False)["DataLoader"]["Train"]["dataset"]["transform_ops"]
    ops = create_operators(op_list, where="DataLoader.Train.dataset.transform_ops")
    names = [next(iter(op)) for op in op_list]
    with tempfile.TemporaryDirectory() as tmp:
        paths, sizes = write_jpegs(tmp, args.images)
        print(f"# {len(paths)} JPEGs, mean {np.mean(sizes) / 1024:.0f} KiB; ops: {' -> '.join(names)}")
        rng = np.random.default_rng(0)
        per_op = {name: [] for name in names}
        totals = []
        for _ in range(args.repeats):
            spent = dict.fromkeys(names, 0.0)
            start = time.perf_counter()
            for path in paths:
                with open(path, "rb") as f:
                    data = f.read()  # the worker's file read, counted in DecodeImage's share
                t0 = time.perf_counter()
                for name, op in zip(names, ops):
                    data = op(data, rng=rng)
                    t1 = time.perf_counter()
                    spent[name] += t1 - t0
                    t0 = t1
            totals.append(len(paths) / (time.perf_counter() - start))
            for name in names:
                per_op[name].append(1000 * spent[name] / len(paths))
        rows = [[name, f"{median(v):.2f}", f"{median(v) / sum(median(w) for w in per_op.values()):.0%}"]
                for name, v in per_op.items()]
        print_table(["op", "ms/image (median)", "share"], rows)
        print(f"\nfull pipeline, one worker: {median(totals):.1f} images/s "
              f"(repeats: {', '.join(f'{t:.1f}' for t in totals)})")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"# load average {load:.2f} at end")


if __name__ == "__main__":
    main()
