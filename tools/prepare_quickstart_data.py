"""Build the quickstart data set (scikit-learn's handwritten digits) as an ImageNet-layout folder.

    python tools/prepare_quickstart_data.py --out dataset/digits
    python tools/prepare_quickstart_data.py --out dataset/ILSVRC2012 --size 224 --layout ilsvrc
"""

import argparse

from ppcls.data.digits import LAYOUTS, prepare_digits
from ppcls.utils.cli import run_tool


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="dataset/digits", help="output folder (default dataset/digits)")
    parser.add_argument("--size", type=int, default=32, help="image side in pixels (default 32)")
    parser.add_argument("--val_fraction", type=float, default=0.2,
                        help="share of each class held out for validation (default 0.2)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the stratified split (default 0)")
    parser.add_argument("--layout", choices=LAYOUTS, default="imagenet",
                        help="file naming: imagenet (train/3/00012.jpg) or ilsvrc "
                             "(train/n00000003/n00000003_00012.JPEG, val/ILSVRC2012_val_00000001.JPEG)")
    parser.add_argument("--force", action="store_true",
                        help="rebuild a folder this tool made earlier with other settings")
    args = parser.parse_args(argv)
    print(prepare_digits(args.out, size=args.size, val_fraction=args.val_fraction, seed=args.seed,
                         layout=args.layout, force=args.force), flush=True)
    return 0


if __name__ == "__main__":
    run_tool(main)
