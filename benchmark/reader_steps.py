"""Where the training reader's time goes, step by step, in this checkout next to another one.

    python benchmark/reader_steps.py --base /tmp/main-ppcls           # the seed's MobileNeXt_100.yaml
    python benchmark/reader_steps.py --base /tmp/main-ppcls --config ../shared/fixtures/paddleclas/upstream/ResNet50.yaml

``--base``: the root of another checkout (a folder holding its ``ppcls``), for example main's
code from ``git archive main ppcls | tar -x -C /tmp/main-ppcls``; without it only this
checkout is timed. Each figure is one process, one thread (OMP_NUM_THREADS=1, OpenCV 1
thread), CPU time (``time.process_time``: a process that waits for a core on a shared machine
is not charged for the wait), per image over --images images of ../shared/bench's ImageNet-size
JPEGs (made once by ``reader_bench.py make``), for ``ImageNetDataset(**DataLoader.Train.dataset
keys)``'s steps (the fused ones: what ``ds[i]`` runs) and for ``ds[i]`` as a whole. The two
checkouts take turns over --repeats rounds; medians, and this checkout's time as a share of the
base's.
"""

import argparse
import json
import os
import sys
import time

from common import (SEED_RECIPE, checkout_roots, ensure_bench_images, header, median, print_table,
                    reader_dataset_keys, run_worker)


def child(root, config, image_dir, n):
    """One process: per-image CPU ms of each step and of ``ds[i]``, as a dict (printed as JSON)."""
    sys.path.insert(0, root)
    import cv2

    cv2.setNumThreads(1)
    from ppcls.data.dataset import ImageNetDataset, sample_rng

    ds = ImageNetDataset(**reader_dataset_keys(config, image_dir), class_num=10)
    steps = [(getattr(s, "__qualname__", None) or type(s).__name__, s) for s in ds.steps]
    if ds.to_chw is not None:
        steps.append(("ToCHWImage", lambda img, rng: ds.to_chw(img)))
    names = [f"{i + 1}. {name}" for i, (name, _) in enumerate(steps)]
    spent = dict.fromkeys(names, 0.0)
    for i in range(min(16, len(ds))):  # warm up
        ds[i]
    for i in range(n):
        rng, img = sample_rng(ds.seed, 0, i % len(ds), 0), ds.images[i % len(ds)]
        for name, (_, step) in zip(names, steps):
            start = time.process_time()
            img = step(img, rng)
            spent[name] += time.process_time() - start
    start = time.process_time()
    for i in range(n):
        ds[i % len(ds)]
    spent["ds[i]"] = time.process_time() - start
    return {name: total / n * 1e3 for name, total in spent.items()}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default=SEED_RECIPE)
    parser.add_argument("--base", help="root of another checkout to time alongside (holds its ppcls)")
    parser.add_argument("--image-dir", default=os.environ.get("READER_IMAGES", "/tmp/reader-bench-images"))
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(child(args.worker, args.config, args.image_dir, args.images)))
        return
    print("\n".join(header("benchmark/reader_steps.py " + " ".join(argv or sys.argv[1:]),
                           ("PIL", "numpy", "cv2", "simplejpeg"))))
    ensure_bench_images(args.image_dir)
    roots = checkout_roots(args.base)
    runs = {label: [] for label in roots}
    for _ in range(args.repeats):
        for label, root in roots.items():
            runs[label].append(run_worker(os.path.abspath(__file__), [
                "--worker", root, "--config", os.path.abspath(args.config), "--image-dir", args.image_dir,
                "--images", str(args.images)], env={"OMP_NUM_THREADS": "1", "PYTHONPATH": root}))
    names = list(runs["this checkout"][0])
    rows = []
    for name in names:
        ms = {label: median([r[name] for r in runs[label]]) for label in roots if name in runs[label][0]}
        row = [name] + [f"{ms[label]:.3f}" if label in ms else "-" for label in roots]
        if args.base:
            row.append(f"{ms['this checkout'] / ms['base']:.2f}" if "base" in ms else "-")
        rows.append(row)
    print(f"\n# CPU ms per image, {os.path.basename(args.config)}, {args.images} images, one thread, "
          f"median of {args.repeats}")
    print_table(["step"] + list(roots) + (["this / base"] if args.base else []), rows)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"# load average {load:.2f} at end")


if __name__ == "__main__":
    main()
