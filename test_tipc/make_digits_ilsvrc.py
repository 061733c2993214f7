"""Build an ILSVRC-2012-layout data set from scikit-learn's handwritten digits, for TIPC.

    python test_tipc/make_digits_ilsvrc.py --out dataset/ILSVRC2012 --subset lite

Writes, as the ImageNet recipe expects:
    train/n0000000<k>/n0000000<k>_<index>.JPEG   train_list.txt  ("train/... label")
    val/ILSVRC2012_val_<n>.JPEG                  val_list.txt    ("val/... label"), val/ flat
The 1,797 scans (8x8, 10 classes, labels 0-9) are split and drawn as the quickstart data set
does (``ppcls.data.digits``: stratified 80/20 split with seed 0, dark ink on white); each scan is
upscaled (bicubic) to an ImageNet-like RGB JPEG of 256x256, 320x256 or 256x320.
Subsets: `lite` (4 train + 2 val images per class), `lite_whole_infer` (lite train, whole val),
`whole` (everything). The folder is built beside OUT and moved into place at the end, so an
interrupted run leaves nothing half-written; OUT itself is replaced only when it holds the
marker file of an earlier run (or the manifest of tools/prepare_quickstart_data.py).
"""

import argparse
import os
import shutil
import sys
import tempfile

SUBSETS = {  # name -> (train images per class, val images per class); None = all
    "lite": (4, 2),
    "lite_whole_infer": (4, None),
    "whole": (None, None),
}
SIZES = ((256, 256), (320, 256), (256, 320))  # (width, height), cycled


def _split():
    """The digits as (train, val) lists of (index, 8x8 scan, label): the quickstart split."""
    from sklearn.datasets import load_digits
    from ppcls.data.digits import split_indices

    digits = load_digits()
    train, val = split_indices(digits.target, 0.2, 0)
    return ([(int(i), digits.images[i], int(digits.target[i])) for i in train],
            [(int(i), digits.images[i], int(digits.target[i])) for i in val])


def _take(samples, per_class):
    if per_class is None:
        return samples
    seen = {}
    out = []
    for sample in samples:
        label = sample[2]
        if seen.get(label, 0) < per_class:
            seen[label] = seen.get(label, 0) + 1
            out.append(sample)
    return out


def _to_jpeg(scan, size, path):
    from PIL import Image
    from ppcls.data.digits import render

    render(scan, 8).resize(size, Image.Resampling.BICUBIC).save(path, "JPEG", quality=95)


def build(out, subset, marker):
    train_per_class, val_per_class = SUBSETS[subset]
    train, val = _split()
    train, val = _take(train, train_per_class), _take(val, val_per_class)
    parent = os.path.dirname(os.path.abspath(out))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".ILSVRC2012.", dir=parent)
    try:
        lines = []
        for i, (index, scan, label) in enumerate(train):
            cls = f"n{label:08d}"
            rel = f"train/{cls}/{cls}_{index:05d}.JPEG"
            os.makedirs(os.path.join(tmp, "train", cls), exist_ok=True)
            _to_jpeg(scan, SIZES[i % len(SIZES)], os.path.join(tmp, rel))
            lines.append(f"{rel} {label}\n")
        with open(os.path.join(tmp, "train_list.txt"), "w") as f:
            f.writelines(lines)
        lines = []
        os.makedirs(os.path.join(tmp, "val"))
        for i, (_, scan, label) in enumerate(val):
            rel = f"val/ILSVRC2012_val_{i + 1:08d}.JPEG"
            _to_jpeg(scan, SIZES[i % len(SIZES)], os.path.join(tmp, rel))
            lines.append(f"{rel} {label}\n")
        with open(os.path.join(tmp, "val_list.txt"), "w") as f:
            f.writelines(lines)
        with open(os.path.join(tmp, marker), "w") as f:
            f.write(subset)
        if os.path.lexists(out):
            generated = (os.path.isfile(os.path.join(out, marker))
                         or os.path.isfile(os.path.join(out, ".quickstart_digits.json")))
            if not generated:
                raise SystemExit(f"Error: {out} exists and was not made by this script; not replacing it")
            old = out.rstrip("/") + f".old.{os.getpid()}"
            os.replace(out, old)
            os.replace(tmp, out)
            shutil.rmtree(old)
        else:
            os.replace(tmp, out)
    finally:
        if os.path.isdir(tmp):
            shutil.rmtree(tmp)
    print(f"{out}: {len(train)} train and {len(val)} val images (digits, subset '{subset}')")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="output folder, e.g. dataset/ILSVRC2012")
    parser.add_argument("--subset", choices=sorted(SUBSETS), default="lite")
    parser.add_argument("--marker", default=".tipc_digits",
                        help="file written inside OUT naming the subset (default: .tipc_digits)")
    args = parser.parse_args(argv)
    build(args.out, args.subset, args.marker)
    return 0


if __name__ == "__main__":
    sys.exit(main())
