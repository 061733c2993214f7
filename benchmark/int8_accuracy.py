"""INT8 against fp32 on a validation list: top-1 of each and how often their top-1 agree.

    python benchmark/int8_accuracy.py --fp32 inference/MobileNeXt_x1_0_digits \
        --int8 inference/MobileNeXt_x1_0_digits_int8 \
        --val dataset/digits/val_list.txt --root dataset/digits

Both exports run as predict_cls runs them (their inference.yml preprocessing, ONNX Runtime
for the INT8 one, the default back-end for the fp32 one), on every image of the list.
"""

import argparse
import os
import sys

import numpy as np


def predictions(model_dir, paths, batch_size=32):
    from ppcls.data.preprocess import create_operators, decode_image, transform
    from ppcls.inference.artifacts import read_inference_yml
    from ppcls.inference.predictor import create_predictor

    record = read_inference_yml(model_dir)
    ops = create_operators(record["PreProcess"]["transform_ops"])
    predictor = create_predictor({"inference_model_dir": model_dir, "use_onnx": "auto",
                                  "cpu_num_threads": 2}, record)
    tops = []
    for start in range(0, len(paths), batch_size):
        batch = np.stack([transform(decode_image(p), ops) for p in paths[start:start + batch_size]])
        tops.append(np.argmax(predictor.run(batch.astype(np.float32)), axis=1))
    return np.concatenate(tops), predictor.describe()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--fp32", required=True)
    parser.add_argument("--int8", required=True)
    parser.add_argument("--val", required=True, help="list file: relative/path label")
    parser.add_argument("--root", required=True, help="image root of the list")
    args = parser.parse_args(argv)
    from ppcls.data.dataset import read_list_file

    paths, labels, _ = read_list_file(args.val, args.root)
    labels = np.asarray(labels)
    fp32, d32 = predictions(args.fp32, paths)
    int8, d8 = predictions(args.int8, paths)
    top1_fp32 = float((fp32 == labels).mean())
    top1_int8 = float((int8 == labels).mean())
    agree = float((fp32 == int8).mean())
    print(f"images: {len(paths)}")
    print(f"fp32 ({d32['backend']}, {d32['precision']}): top-1 {100 * top1_fp32:.2f}%")
    print(f"int8 ({d8['backend']}, {d8['precision']}): top-1 {100 * top1_int8:.2f}%")
    print(f"top-1 difference: {100 * (top1_int8 - top1_fp32):+.2f} points; same top-1 class: "
          f"{100 * agree:.2f}% ({int((fp32 == int8).sum())}/{len(paths)})")
    return 0 if abs(top1_int8 - top1_fp32) <= 0.01 and agree >= 0.98 else 1


if __name__ == "__main__":
    sys.exit(main())
