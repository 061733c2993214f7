"""Accuracy of an exported model on a labelled list file:

    python tools/eval_export.py --model_dir inference/MobileNeXt_x1_0_digits \
        --list dataset/digits/val_list.txt --root dataset/digits

prints ``[Eval][Export] top1: 0.98333, top5: 1.00000, images: 360 (onnxruntime on cpu, fp32)``.
The export runs as ``deploy/python/predict_cls.py`` runs it (its inference.yml preprocessing,
``--use_onnx auto``: ONNX Runtime when the export has an inference.onnx, else Paddle Inference).
"""

import argparse

from ppcls.utils.cli import run_tool


def _use_onnx(text):
    return {"auto": "auto", "true": True, "false": False}[text.lower()]


def main(argv=None):
    parser = argparse.ArgumentParser(description="Top-1/top-5 of an exported model on a list file")
    parser.add_argument("--model_dir", required=True, help="the export (Global.save_inference_dir)")
    parser.add_argument("--list", required=True, help="list file: '<relative/path> <label>' per line")
    parser.add_argument("--root", required=True, help="the folder the list's paths are relative to")
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--use_onnx", type=_use_onnx, default="auto", help="auto, True or False")
    parser.add_argument("--cpu_num_threads", type=int, default=None)
    parser.add_argument("--use_gpu", action="store_true")
    args = parser.parse_args(argv)
    from ppcls.inference.evaluate import evaluate_export

    options = {"use_onnx": args.use_onnx, "use_gpu": args.use_gpu, "batch_size": args.batch_size}
    if args.cpu_num_threads:
        options["cpu_num_threads"] = args.cpu_num_threads
    r = evaluate_export(args.model_dir, args.list, args.root, args.batch_size, options)
    topk = next(k for k in r if k.startswith("top") and k != "top1")
    print(f"[Eval][Export] top1: {r['top1']:.5f}, {topk}: {r[topk]:.5f}, images: {r['images']} "
          f"({r['correct']} right; {r['backend']} on {r['device']}, {r['precision']})", flush=True)
    return 0


if __name__ == "__main__":
    run_tool(main)
