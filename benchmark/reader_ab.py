"""This checkout's training reader against another checkout's, image by image in one process.

    git archive main ppcls | tar -x -C /tmp/main-ppcls     # the base: main's ppcls
    python benchmark/reader_ab.py --base /tmp/main-ppcls
    python benchmark/reader_ab.py --base /tmp/main-ppcls --config ../shared/fixtures/paddleclas/upstream/ResNet50.yaml
    python benchmark/reader_ab.py --base /tmp/main-ppcls --device-normalize   # the training default

On a shared machine whose speed drifts by 20-50% from one second to the next, timings of two
checkouts in turn (``reader_steps.py``, ``reader_vs_upstream.sh``) cannot resolve a 5-10%
change. Here both checkouts' ``ImageNetDataset(**DataLoader.Train.dataset keys)`` live in one
process and take turns on every image (who goes first alternates), so a slow second hits both
alike: ``ds[i]``'s CPU time (``time.process_time``) summed over --passes passes of the 256
bench JPEGs, and the ratio. Each pass also checks that both give arrays of the same shape and
dtype (the pixels may differ where the reader changed on purpose).
"""

import argparse
import importlib
import os
import sys
import time

from common import SEED_RECIPE, checkout_roots, ensure_bench_images, header, reader_dataset_keys


def load_dataset_module(root):
    """``ppcls.data.dataset`` of the checkout at ``root`` (a fresh import: objects built from
    it keep their own modules after the next checkout's import replaces ``sys.modules``)."""
    for name in [m for m in sys.modules if m == "ppcls" or m.startswith("ppcls.")]:
        del sys.modules[name]
    sys.path.insert(0, root)
    try:
        return importlib.import_module("ppcls.data.dataset")
    finally:
        sys.path.remove(root)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--base", required=True, help="root of the other checkout (holds its ppcls)")
    parser.add_argument("--config", default=SEED_RECIPE)
    parser.add_argument("--image-dir", default=os.environ.get("READER_IMAGES", "/tmp/reader-bench-images"))
    parser.add_argument("--passes", type=int, default=4)
    parser.add_argument("--device-normalize", action="store_true",
                        help="leave the final NormalizeImage out, as training does (Global.device_normalize)")
    args = parser.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")

    print("\n".join(header("benchmark/reader_ab.py " + " ".join(argv or sys.argv[1:]),
                           ("PIL", "numpy", "cv2", "simplejpeg"))))
    ensure_bench_images(args.image_dir)
    keys = reader_dataset_keys(args.config, args.image_dir)
    extra = {"device_normalize": True} if args.device_normalize else {}
    sets = {label: load_dataset_module(root).ImageNetDataset(**keys, class_num=10, **extra)
            for label, root in checkout_roots(args.base).items()}
    order = list(sets.items())
    spent = dict.fromkeys(sets, 0.0)
    for ds in sets.values():  # warm up (imports, buffers)
        for i in range(16):
            ds[i]
    n = len(order[0][1])
    for p in range(args.passes):
        for i in range(n):
            outs = []
            for label, ds in (order if (i + p) % 2 == 0 else order[::-1]):
                start = time.process_time()
                x, _ = ds[i]
                spent[label] += time.process_time() - start
                outs.append(x)
            if outs[0].shape != outs[1].shape or outs[0].dtype != outs[1].dtype:
                raise SystemExit(f"image {i}: {outs[0].shape} {outs[0].dtype} vs {outs[1].shape} {outs[1].dtype}")
    images = args.passes * n
    base, this = spent["base"] / images * 1e3, spent["this checkout"] / images * 1e3
    mode = ", device normalise (uint8 out)" if args.device_normalize else ""
    print(f"\n# ds[i], {os.path.basename(args.config)}{mode}, {n} images x {args.passes} passes, CPU ms per image")
    print(f"base {base:.3f} ms, this checkout {this:.3f} ms, this / base {this / base:.3f}")


if __name__ == "__main__":
    main()
