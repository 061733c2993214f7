"""The training reader's speed: ours next to upstream PaddleClas and the decode floor, then
through the DataLoader with 0, 1 and 2 workers, with uint8 and float32 batches.

    python benchmark/data_speed.py                              # the seed's MobileNeXt_100.yaml
    python benchmark/data_speed.py --config ../shared/fixtures/paddleclas/upstream/ResNet50.yaml
    python benchmark/data_speed.py --skip-loader --images 256   # per-sample numbers only

Images: ../shared/bench's ImageNet-size JPEGs (made once in --image-dir by
``reader_bench.py make``: short side 333-500, quality 75-95). Every figure is one process, one
thread (OMP_NUM_THREADS=1, OpenCV 1 thread), median of --repeats alternating passes:

1. per sample, ``ImageNetDataset(**DataLoader.Train.dataset keys)[i]`` (what
   ../shared/bench/reader_vs_upstream.sh times): ours (the fast reader), ours with
   ``fast_reader=False`` (the ops one by one, as before issue 17), upstream PaddleClas (through
   ../shared/bench/reader_bench.py in its own venv, when $UPSTREAM and $UPSTREAM_VENV exist), DALI's
   CPU-only pipeline of the same list (``Global.use_dali``, when nvidia-dali is installed) and the
   decode floors (a full decode with PIL, and with simplejpeg, alone);
2. the loader (``build_dataloader``, batch --batch-size, CPU): images/s with 0, 1 and 2
   workers, with uint8 batches normalised after the loader (``Global.device_normalize``, the
   default) and with float32 batches normalised in the workers; "overhead" is the share of a
   worker's time spent outside making samples (collate, pickling the batch to the main process,
   the queue), from the 1-worker figure against the per-sample one.
"""

import argparse
import os
import subprocess
import sys
import time

from common import (READER_BENCH as BENCH, SEED_RECIPE, ensure_bench_images, header, median,
                    print_table, reader_dataset_keys)


def per_sample(dataset, n):
    for i in range(8):
        dataset[i % len(dataset)]
    start = time.perf_counter()
    for i in range(n):
        dataset[i % len(dataset)]
    return n / (time.perf_counter() - start)


def decode_floor(image_dir, n, how):
    import numpy as np
    from PIL import Image

    names = [line.split()[0] for line in open(os.path.join(image_dir, "train_list.txt"))]
    datas = [open(os.path.join(image_dir, name), "rb").read() for name in names[:n]]
    if how == "simplejpeg":
        import simplejpeg

        decode = simplejpeg.decode_jpeg
    else:
        import io

        def decode(data):
            return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    start = time.perf_counter()
    for data in datas:
        decode(data)
    return len(datas) / (time.perf_counter() - start)


def dali_cpu(dataset, n, batch_size=32):
    """DALI's CPU-only pipeline for the same list (``Global.use_dali`` with ``Global.device: cpu``),
    one thread, img/s; None without nvidia-dali or for a list it cannot run."""
    from ppcls.data import dali

    if not dali.available() or dali.unsupported(dataset.ops, {"sampler": {"name": "BatchSampler"}}):
        return None
    pipeline = dali.build_pipeline(dataset.images, dataset.ops, batch_size, True, 0, num_threads=1)
    pipeline.build()
    pipeline.run()  # start-up not timed
    batches = max(1, n // batch_size)
    start = time.perf_counter()
    for _ in range(batches):
        pipeline.run()
    return batches * batch_size / (time.perf_counter() - start)


def upstream(config, image_dir, n):
    """Upstream PaddleClas's img/s (its own venv, as reader_vs_upstream.sh runs it), or None."""
    repo = os.environ.get("UPSTREAM", "/tmp/paddleclas-upstream")
    python = os.path.join(os.environ.get("UPSTREAM_VENV", "/tmp/paddleclas-upstream-venv"), "bin", "python")
    if not (os.path.isdir(os.path.join(repo, "ppcls")) and os.path.isfile(python)):
        return None
    run = subprocess.run([python, BENCH, "one", repo, os.path.abspath(config), image_dir, str(n)],
                         capture_output=True, text=True, cwd="/tmp", env=dict(os.environ, OMP_NUM_THREADS="1"))
    try:
        return float(run.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return None


def loader_speed(config, image_dir, workers, device_normalize, batch_size, batches):
    from ppcls.data import build_dataloader
    from ppcls.utils.config import get_config

    cfg = get_config(config, show=False)
    cfg["Global"] = {"seed": 0, "device_normalize": device_normalize}
    cfg["Arch"] = {"name": "MobileNeXt_x1_0", "class_num": 10}
    train = cfg["DataLoader"]["Train"]
    # one pass long enough for every timed batch: a new pass starts new worker processes
    lines = open(os.path.join(image_dir, "train_list.txt")).read().split()
    pairs = [f"{lines[i]} {lines[i + 1]}" for i in range(0, len(lines), 2)]
    repeat = -(-(batches + 2) * batch_size // len(pairs))
    list_file = os.path.join(image_dir, f"loader_list_{repeat}.txt")
    with open(list_file, "w") as f:
        f.write("\n".join(pairs * repeat) + "\n")
    train["dataset"].update(image_root=image_dir, cls_label_path=list_file)
    train["sampler"] = {"name": "DistributedBatchSampler", "batch_size": batch_size, "drop_last": True,
                        "shuffle": True}
    train["loader"] = {"num_workers": workers, "use_shared_memory": True}
    loader = build_dataloader(cfg, "Train", device="cpu")
    seen, start = 0, None
    for images, _, _ in loader:
        if start is None:  # the first batch (worker start-up) is not timed
            start = time.perf_counter()
            continue
        seen += int(images.shape[0])
        if seen >= batches * batch_size:
            break
    return seen / (time.perf_counter() - start), str(images.dtype)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default=SEED_RECIPE)
    parser.add_argument("--image-dir", default=os.environ.get("READER_IMAGES", "/tmp/reader-bench-images"))
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--batches", type=int, default=8, help="timed batches per loader run")
    parser.add_argument("--skip-loader", action="store_true")
    parser.add_argument("--skip-upstream", action="store_true")
    args = parser.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    try:
        import cv2

        cv2.setNumThreads(1)
    except ImportError:
        pass
    from ppcls.data.dataset import ImageNetDataset

    print("\n".join(header("benchmark/data_speed.py " + " ".join(argv or sys.argv[1:]),
                           ("paddle", "PIL", "numpy", "cv2", "simplejpeg"))))
    ensure_bench_images(args.image_dir)
    keys = reader_dataset_keys(args.config, args.image_dir)
    ours = ImageNetDataset(**keys, class_num=10)
    before = ImageNetDataset(**keys, class_num=10, fast_reader=False)
    runs = {"ours (fast reader)": [], "ours, fast_reader=False": [], "upstream PaddleClas": [],
            "DALI CPU-only pipeline (Global.use_dali, 1 thread)": [],
            "decode floor: PIL full decode": [], "decode floor: simplejpeg full decode": []}
    for _ in range(args.repeats):
        runs["ours (fast reader)"].append(per_sample(ours, args.images))
        runs["ours, fast_reader=False"].append(per_sample(before, args.images))
        if not args.skip_upstream:
            up = upstream(args.config, args.image_dir, args.images)
            if up is not None:
                runs["upstream PaddleClas"].append(up)
        speed = dali_cpu(ours, args.images)
        if speed is not None:
            runs["DALI CPU-only pipeline (Global.use_dali, 1 thread)"].append(speed)
        runs["decode floor: PIL full decode"].append(decode_floor(args.image_dir, args.images, "pil"))
        try:
            runs["decode floor: simplejpeg full decode"].append(decode_floor(args.image_dir, args.images, "simplejpeg"))
        except ImportError:
            pass
    base = median(runs["upstream PaddleClas"]) if runs["upstream PaddleClas"] else None
    rows = [[name, f"{median(v):.0f}", f"{median(v) / base:.2f}x" if base else "-",
             ", ".join(f"{x:.0f}" for x in v)] for name, v in runs.items() if v]
    print(f"\n# per sample, {os.path.basename(args.config)}, {args.images} images, one thread")
    print_table(["reader", "img/s (median)", "vs upstream", "runs"], rows)

    if args.skip_loader:
        return
    sample = median(runs["ours (fast reader)"])
    rows = []
    for workers in (0, 1, 2):
        for device_normalize in (True, False):
            speeds = []
            for _ in range(args.repeats):
                speed, dtype = loader_speed(args.config, args.image_dir, workers, device_normalize,
                                            args.batch_size, args.batches)
                speeds.append(speed)
            speed = median(speeds)
            overhead = f"{1 - speed / sample:.0%}" if workers == 1 else "-"
            rows.append([workers, "uint8 (device normalise)" if device_normalize else "float32",
                         f"{speed:.0f}", overhead, ", ".join(f"{x:.0f}" for x in speeds)])
    print(f"\n# the loader, batch {args.batch_size}, CPU (batches as paddle tensors; uint8 ones normalised "
          "after the loader)")
    print_table(["workers", "batches", "img/s (median)", "overhead vs per sample", "runs"], rows)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"# load average {load:.2f} at end")


if __name__ == "__main__":
    main()
