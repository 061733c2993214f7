"""Plot loss, learning rate and top-1 against epochs from a run's log (needs matplotlib).

``python tools/plot_log.py output/MobileNeXt_x1_0/train.log [-o curves.png]``
"""

import argparse
import os

from ppcls.utils.cli import run_tool


def main(argv=None):
    parser = argparse.ArgumentParser(description="Training curves from a train.log")
    parser.add_argument("log", help="a train.log written by tools/train.py")
    parser.add_argument("-o", "--out", default=None,
                        help="PNG to write (default: curves.png beside the log)")
    parser.add_argument("--metric", default="top1", help="metric to plot (default top1)")
    args = parser.parse_args(argv)
    from ppcls.engine.curves import plot_log

    out = args.out or os.path.join(os.path.dirname(os.path.abspath(args.log)), "curves.png")
    print(plot_log(args.log, out, metric=args.metric))
    return 0


if __name__ == "__main__":
    run_tool(main)
