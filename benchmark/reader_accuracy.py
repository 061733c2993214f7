"""How far the fast training reader's pixels are from the unfused ops' (PIL), per image.

    python benchmark/reader_accuracy.py                          # this checkout
    python benchmark/reader_accuracy.py --base /tmp/main-ppcls   # and another one beside it

For each of ../shared/bench's ImageNet-size JPEGs (made once by ``reader_bench.py make``), the
seed recipe's fused ``DecodeRandCrop`` (``ds.steps[0]``) against ``DecodeImage`` +
``RandCropImage`` with PIL (``ds.ops[:2]``, what ``Global.fast_reader: False`` runs) on the same
generator, so the same box and interpolation: mean |difference| in grey levels over the
image, then the mean and worst over the images, grouped by how much the box shrinks (box side /
target side, the larger of the two) and by whether the decode was DCT-scaled. Not a timing:
the numbers are the same on every machine.
"""

import argparse
import json
import os
import sys

from common import (SEED_RECIPE, checkout_roots, ensure_bench_images, header, print_table,
                    reader_dataset_keys, run_worker)
GROUPS = ("shrink <= 1", "1 - 1.35", "1.35 - 2", "DCT-scaled", "all")


def child(root, config, image_dir):
    """One checkout: {group: [mean |diff| of each image]} (printed as JSON)."""
    sys.path.insert(0, root)
    import numpy as np

    from ppcls.data.dataset import ImageNetDataset, sample_rng
    from ppcls.data.preprocess import fastread

    ds = ImageNetDataset(**reader_dataset_keys(config, image_dir), class_num=10)
    fused, (decode, crop) = ds.steps[0], ds.ops[:2]
    out = {group: [] for group in GROUPS}
    for i, path in enumerate(ds.images):
        with open(path, "rb") as f:
            h, w = fastread.jpeg_size(f.read())
        box, _, k = fused.plan(h, w, sample_rng(0, 0, i))
        a = fused(path, sample_rng(0, 0, i))
        b = crop(decode(path), sample_rng(0, 0, i))
        diff = float(np.abs(a.astype(np.int16) - b).mean())
        shrink = max((box[2] - box[0]) / crop.size[0], (box[3] - box[1]) / crop.size[1])
        group = ("DCT-scaled" if k > 1 else "shrink <= 1" if shrink <= 1 else
                 "1 - 1.35" if shrink <= 1.35 else "1.35 - 2")
        out[group].append(diff)
        out["all"].append(diff)
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default=SEED_RECIPE)
    parser.add_argument("--base", help="root of another checkout to measure alongside (holds its ppcls)")
    parser.add_argument("--image-dir", default=os.environ.get("READER_IMAGES", "/tmp/reader-bench-images"))
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(child(args.worker, args.config, args.image_dir)))
        return
    print("\n".join(header("benchmark/reader_accuracy.py " + " ".join(argv or sys.argv[1:]),
                           ("PIL", "numpy", "cv2", "simplejpeg"))))
    ensure_bench_images(args.image_dir)
    roots = checkout_roots(args.base)
    found = {label: run_worker(os.path.abspath(__file__), [
        "--worker", root, "--config", os.path.abspath(args.config), "--image-dir", args.image_dir],
        env={"OMP_NUM_THREADS": "1", "PYTHONPATH": root}) for label, root in roots.items()}
    rows = []
    for group in GROUPS:
        row = [group, str(len(found["this checkout"][group]))]
        for label in roots:
            diffs = found[label][group]
            row.append(f"{sum(diffs) / len(diffs):.3f} / {max(diffs):.3f}" if diffs else "-")
        rows.append(row)
    print(f"\n# fused reader vs DecodeImage + RandCropImage (PIL), {os.path.basename(args.config)}: "
          "mean |diff| in grey levels per image, mean / worst over the images")
    print_table(["box", "images"] + list(roots), rows)


if __name__ == "__main__":
    main()
