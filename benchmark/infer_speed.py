"""CPU inference speed of the exported model: Paddle Inference, ONNX Runtime, the default, INT8.

    python benchmark/infer_speed.py                    # MobileNeXt-1.0 and MobileNetV2, 3 repeats
    python benchmark/infer_speed.py --repeats 5 --iters 100

Exports (into a temporary folder) MobileNeXt_x1_0 with the official fixture weights when
../shared/fixtures is there (random weights otherwise) and paddle.vision's MobileNetV2,
both as ``tools/export_model.py`` writes them (logits, no softmax, so outputs compare at
their own scale), plus ``inference.onnx`` by paddle2onnx, and MobileNeXt's INT8 model as
``deploy/slim/quant_post_static.py`` writes it (calibrated on crops of deploy/images and
scikit-learn's two photographs). Then, for each model and back-end,
in its own process, back-ends taking turns over the repeats:

  latency     batch 1, median ms over --iters runs, with 1 and with 2 threads
  throughput  batch 16, images/s, all threads

Back-ends:
  default         what deploy/python/predict_cls.py runs on CPU with
                  deploy/configs/inference_cls.yaml (only the thread count changed)
  paddle-onednn   Paddle Inference, oneDNN on (ppcls.inference.predictor.paddle_config)
  paddle-native   Paddle Inference, oneDNN off
  onnxruntime     ONNX Runtime, CPU execution provider
  ort-int8        the INT8 model on ONNX Runtime (MobileNeXt only)
  phone formats (MobileNeXt only; tools/export_model.py -o Global.export_format=mobile,
  docs/mobile.md); the litert rows need the optional TensorFlow stack + ai-edge-litert:
  ort-format      inference.ort fp32 (ort_fp32) on ONNX Runtime
  ort-format-int8 inference.ort INT8 (ort_int8) on ONNX Runtime
  litert-fp32     inference.tflite fp32 (tflite_fp32) on LiteRT with XNNPACK
  litert-fp16     inference.tflite fp16 weights (tflite_fp16) on LiteRT with XNNPACK
  litert-int8     inference.tflite full-integer INT8 (tflite_int8) on LiteRT with XNNPACK
  paddle-legacy   inference.pdmodel, the old program (legacy) on Paddle Inference with oneDNN

Printed: medians, each back-end's time relative to ONNX Runtime's on the same model (so
lower is faster, for throughput too), and the largest difference of each back-end's output
from the dygraph model's on a fixed input, relative to the largest output (for INT8, its
top-1 on deploy/images against fp32's is printed instead).
"""

import argparse
import json
import os
import sys
import tempfile
import time

from common import header, median, print_table, run_worker

HERE = os.path.abspath(__file__)
ROOT = os.path.dirname(os.path.dirname(HERE))
FIXTURE = os.path.join(ROOT, "..", "shared", "fixtures", "mobilenext_official_w1_0.npz")
DEPLOY_CONFIG = os.path.join(ROOT, "deploy", "configs", "inference_cls.yaml")
# phone-format rows -> the export's sub-folder (ppcls.inference.mobile)
MOBILE_ROWS = {"ort-format": "ort_fp32", "ort-format-int8": "ort_int8", "litert-fp32": "tflite_fp32",
               "litert-fp16": "tflite_fp16", "litert-int8": "tflite_int8", "paddle-legacy": "legacy"}
BACKENDS = ("default", "paddle-onednn", "paddle-native", "onnxruntime", "ort-int8") + tuple(MOBILE_ROWS)
IMAGES = os.path.join(ROOT, "deploy", "images")


def export_models(out):
    """Export both models into ``out``; return {name: model_dir} and the dygraph outputs."""
    import numpy as np
    import paddle

    from ppcls.inference.export import export_model, export_onnx

    x = np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype("float32")
    dirs, reference = {}, {}
    cfg = {"Global": {"save_inference_dir": os.path.join(out, "mobilenext"),
                      "image_shape": [3, 224, 224], "export_softmax": False},
           "Arch": {"name": "MobileNeXt_x1_0", "class_num": 1000}}
    if os.path.isfile(FIXTURE):
        from ppcls.utils.torch_weights import torch_state_dict_to_paddle
        from ppcls.utils.weights import save_state_dict

        npz = np.load(FIXTURE)
        state = torch_state_dict_to_paddle({k[len("state_dict/"):]: npz[k] for k in npz.files
                                            if k.startswith("state_dict/")})
        weights = os.path.join(out, "official_w1_0.pdparams")
        save_state_dict(state, weights)
        cfg["Global"]["pretrained_model"] = weights
    # the phone formats too (INT8 ones calibrated on the same crops as quantize() below)
    from ppcls.inference import mobile

    calib = calibration_list(out)
    cfg["DataLoader"] = {"Train": {"dataset": {"image_root": calib,
                                               "cls_label_path": os.path.join(calib, "list.txt")}}}
    missing = mobile.missing_modules(mobile.TF_MODULES + ("ai_edge_litert",))
    cfg["Global"]["export_format"] = ["ort", "legacy"] + ([] if missing else ["tflite"])
    if missing:
        print(f"# litert rows skipped: not installed: {', '.join(missing)} ({mobile.TF_PIP} "
              f"ai-edge-litert==2.3.0)")
    mobile.export_with_formats(cfg)  # export_model + inference.onnx + the phone formats
    dirs["MobileNeXt_x1_0"] = cfg["Global"]["save_inference_dir"]
    for row, sub in MOBILE_ROWS.items():
        if os.path.isdir(os.path.join(dirs["MobileNeXt_x1_0"], sub)):
            dirs[f"MobileNeXt_x1_0/{row}"] = os.path.join(dirs["MobileNeXt_x1_0"], sub)
    dirs["MobileNeXt_x1_0/int8"] = quantize(cfg, out)

    from ppcls.inference.export import build_eval_model

    model = build_eval_model(cfg)
    with paddle.no_grad():
        reference["MobileNeXt_x1_0"] = model(paddle.to_tensor(x)).numpy()

    from paddle.vision.models import mobilenet_v2

    paddle.seed(0)
    mbv2 = mobilenet_v2(num_classes=1000)
    mbv2.eval()
    mbv2_dir = os.path.join(out, "mobilenetv2")
    static = paddle.jit.to_static(mbv2, input_spec=[paddle.static.InputSpec([None, 3, 224, 224],
                                                                            "float32", "x")],
                                  full_graph=True)
    paddle.jit.save(static, os.path.join(mbv2_dir, "inference"))
    export_onnx(mbv2_dir)
    dirs["MobileNetV2"] = mbv2_dir
    with paddle.no_grad():
        reference["MobileNetV2"] = mbv2(paddle.to_tensor(x)).numpy()
    return dirs, x, reference


def calibration_list(out, count=32):
    """Crops and flips of deploy/images and scikit-learn's photographs, as a list file."""
    import glob

    import sklearn
    from PIL import Image

    sources = sorted(glob.glob(os.path.join(IMAGES, "*.jpg")))
    sources += sorted(glob.glob(os.path.join(os.path.dirname(sklearn.__file__), "datasets", "images", "*.jpg")))
    folder = os.path.join(out, "calib")
    os.makedirs(folder, exist_ok=True)
    rng = __import__("numpy").random.default_rng(0)
    lines = []
    for i in range(count):
        img = Image.open(sources[i % len(sources)]).convert("RGB")
        w, h = img.size
        side = int(min(w, h) * rng.uniform(0.5, 1.0))
        x, y = int(rng.integers(0, w - side + 1)), int(rng.integers(0, h - side + 1))
        crop = img.crop((x, y, x + side, y + side))
        if i % 2:
            crop = crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        crop.save(os.path.join(folder, f"{i:03d}.jpg"), quality=95)
        lines.append(f"{i:03d}.jpg 0")
    with open(os.path.join(folder, "list.txt"), "w") as f:
        f.write("\n".join(lines) + "\n")
    return folder


def quantize(cfg, out):
    """The INT8 model of ``cfg``'s fp32 export, as deploy/slim/quant_post_static.py makes it."""
    from ppcls.inference.quantize import quantize_export

    calib = os.path.join(out, "calib")
    qcfg = {"DataLoader": {"Train": {"dataset": {"image_root": calib,
                                                 "cls_label_path": os.path.join(calib, "list.txt")}}}}
    return quantize_export(cfg["Global"]["save_inference_dir"], os.path.join(out, "mobilenext_int8"),
                           qcfg, {"calib_images": 32})


def top1_on_images(model_dir):
    """Top-1 class of each image in deploy/images, with the export's own preprocessing."""
    import numpy as np

    from ppcls.data.preprocess import create_operators, decode_image, transform
    from ppcls.inference.artifacts import read_inference_yml
    from ppcls.inference.predictor import create_predictor

    record = read_inference_yml(model_dir)
    ops = create_operators(record["PreProcess"]["transform_ops"])
    predictor = create_predictor({"inference_model_dir": model_dir}, record)
    names = sorted(n for n in os.listdir(IMAGES) if n.endswith(".jpg"))
    batch = np.stack([transform(decode_image(os.path.join(IMAGES, n)), ops) for n in names])
    return dict(zip(names, np.argmax(predictor.run(batch.astype("float32")), axis=1).tolist()))


def make_predictor(backend, model_dir, threads):
    from ppcls.inference.predictor import OnnxPredictor, PaddlePredictor, create_predictor

    if backend == "default":
        from ppcls.utils.config import get_config

        g = dict(get_config(DEPLOY_CONFIG, show=False)["Global"])
        g.update(inference_model_dir=model_dir, cpu_num_threads=threads)
        return create_predictor(g)
    if backend in ("onnxruntime", "ort-int8"):  # the benchmark's own row names
        return OnnxPredictor(model_dir, cpu_num_threads=threads)
    if backend in MOBILE_ROWS and backend != "paddle-legacy":  # the back-end the folder selects
        from ppcls.inference.artifacts import read_inference_yml

        return create_predictor({"inference_model_dir": model_dir, "cpu_num_threads": threads},
                                read_inference_yml(model_dir))
    return PaddlePredictor(model_dir, enable_mkldnn=backend == "paddle-onednn", cpu_num_threads=threads)


def cpu_flags():
    """The CPU's SIMD extensions that decide INT8 speed (AVX2; AVX-512; VNNI dot products)."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    except OSError:
        return "cpu flags: unknown"
    wanted = ("avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "amx_int8")
    return "cpu flags: " + ", ".join(f"{w} {'yes' if w in flags else 'no'}" for w in wanted)


def paired_worker(args):
    """fp32 and INT8 ONNX Runtime sessions in one process, called alternately: the ratio of each
    pair of calls is measured under the same momentary load (this machine is shared)."""
    import numpy as np

    from ppcls.inference.predictor import OnnxPredictor

    fp32 = OnnxPredictor(args.model_dir, cpu_num_threads=args.threads)
    int8 = OnnxPredictor(args.input, cpu_num_threads=args.threads)
    batch = np.random.default_rng(1).standard_normal((args.batch, 3, 224, 224)).astype("float32")
    for _ in range(5):
        fp32.run(batch)
        int8.run(batch)
    t32, t8 = [], []
    for _ in range(args.iters):
        for predictor, times in ((fp32, t32), (int8, t8)):
            start = time.perf_counter()
            predictor.run(batch)
            times.append(time.perf_counter() - start)
    t32, t8 = np.asarray(t32), np.asarray(t8)
    print(json.dumps({"fp32_ms": 1000 * float(np.median(t32)), "int8_ms": 1000 * float(np.median(t8)),
                      "ratio": float(np.median(t8 / t32)),
                      "ratio_p25_p75": [float(np.percentile(t8 / t32, 25)), float(np.percentile(t8 / t32, 75))]}))


def worker(args):
    import numpy as np

    predictor = make_predictor(args.worker, args.model_dir, args.threads)
    rng = np.random.default_rng(1)
    batch = rng.standard_normal((args.batch, 3, 224, 224)).astype("float32")
    for _ in range(5):
        predictor.run(batch)
    times = []
    for _ in range(args.iters):
        start = time.perf_counter()
        predictor.run(batch)
        times.append(time.perf_counter() - start)
    result = {"ms": 1000 * float(np.median(times)), "img_s": args.batch / float(np.median(times)),
              "backend_used": getattr(predictor, "backend", "?")}
    if args.input:
        result["output"] = predictor.run(np.load(args.input)).tolist()
    print(json.dumps(result))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--iters", type=int, default=50, help="timed runs per measurement")
    parser.add_argument("--models", default="MobileNeXt_x1_0,MobileNetV2")
    parser.add_argument("--backends", default=",".join(BACKENDS))
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--model-dir", help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--batch", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--input", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker == "paired":
        return paired_worker(args)
    if args.worker:
        return worker(args)

    import numpy as np

    print("\n".join(header("benchmark/infer_speed.py " + " ".join(argv or sys.argv[1:]),
                           ("paddle", "onnxruntime", "paddle2onnx", "ai_edge_litert", "tensorflow",
                            "onnx2tf"))))
    print("# " + cpu_flags())
    all_threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    backends = args.backends.split(",")
    with tempfile.TemporaryDirectory() as tmp:
        dirs, x, reference = export_models(tmp)
        np.save(os.path.join(tmp, "x.npy"), x)
        for name in args.models.split(","):
            cases = [("latency", 1, 1), ("latency", 1, 2), ("throughput", 16, all_threads)]
            own_dir = {"ort-int8": f"{name}/int8", **{row: f"{name}/{row}" for row in MOBILE_ROWS}}
            model_backends = [b for b in backends if b not in own_dir or own_dir[b] in dirs]
            results = {(b, c): [] for b in model_backends for c in cases}
            diffs, used = {}, {}
            for repeat in range(args.repeats):
                for case in cases:
                    for backend in model_backends:
                        model_dir = dirs[own_dir[backend]] if backend in own_dir else dirs[name]
                        extra = ["--input", os.path.join(tmp, "x.npy")] if repeat == 0 and case == cases[0] else []
                        out = run_worker(HERE, ["--worker", backend, "--model-dir", model_dir,
                                                "--threads", str(case[2]), "--batch", str(case[1]),
                                                "--iters", str(args.iters if case[1] == 1 else max(5, args.iters // 5)),
                                                *extra])
                        results[(backend, case)].append(out["ms"] if case[0] == "latency" else out["img_s"])
                        used[backend] = out["backend_used"]
                        if "output" in out:
                            ref = reference[name]
                            diffs[backend] = float(np.abs(np.asarray(out["output"]) - ref).max()
                                                   / np.abs(ref).max())
            print(f"\n## {name}: batch 1 latency (ms, median of medians) and batch 16 throughput")
            rows = []
            for backend in model_backends:
                row = [backend + ("" if backend != "default" else f" ({used.get(backend)})")]
                for case in cases:
                    value = median(results[(backend, case)])
                    ort = median(results[("onnxruntime", case)]) if "onnxruntime" in model_backends else None
                    # every ratio is time relative to ONNX Runtime's: lower is faster
                    ratio = (value / ort if case[0] == "latency" else ort / value) if ort else None
                    row.append(f"{value:.1f}" + (f" ({ratio:.2f}x)" if ratio else ""))
                row.append(f"{diffs.get(backend, float('nan')):.1e}")
                rows.append(row)
            print_table(["back-end (time x ONNX Runtime's)", "1 thread, ms", "2 threads, ms",
                         f"batch 16, {all_threads} threads, img/s", "max |out - dygraph| / max |dygraph|"], rows)
            if f"{name}/int8" in dirs:
                print("\n## INT8 / fp32 on ONNX Runtime, paired (alternate calls in one process; "
                      "median of per-pair ratios, interquartile range)")
                rows = []
                for batch, threads in ((1, 1), (1, 2), (16, all_threads)):
                    out = run_worker(HERE, ["--worker", "paired", "--model-dir", dirs[name],
                                            "--input", dirs[f"{name}/int8"], "--threads", str(threads),
                                            "--batch", str(batch),
                                            "--iters", str(args.iters * 2 if batch == 1 else max(10, args.iters // 2))])
                    rows.append([f"batch {batch}, {threads} thread(s)", f"{out['fp32_ms']:.1f}",
                                 f"{out['int8_ms']:.1f}", f"{out['ratio']:.2f}x "
                                 f"({out['ratio_p25_p75'][0]:.2f}-{out['ratio_p25_p75'][1]:.2f})"])
                print_table(["case", "fp32 ms", "int8 ms", "int8 time / fp32 time"], rows)
                fp32, int8 = top1_on_images(dirs[name]), top1_on_images(dirs[f"{name}/int8"])
                same = sum(fp32[k] == int8[k] for k in fp32)
                print(f"\nINT8 vs fp32 top-1 on deploy/images: {same}/{len(fp32)} the same "
                      f"(fp32 {fp32}, int8 {int8})")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"\n# load average {load:.2f} at end")


if __name__ == "__main__":
    main()
