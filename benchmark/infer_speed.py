"""CPU inference speed of the exported model: Paddle Inference, ONNX Runtime, the default.

    python benchmark/infer_speed.py                    # MobileNeXt-1.0 and MobileNetV2, 3 repeats
    python benchmark/infer_speed.py --repeats 5 --iters 100

Exports (into a temporary folder) MobileNeXt_x1_0 with the official fixture weights when
../shared/fixtures is there (random weights otherwise) and paddle.vision's MobileNetV2,
both as ``tools/export_model.py`` writes them (logits, no softmax, so outputs compare at
their own scale), plus ``inference.onnx`` by paddle2onnx. Then, for each model and back-end,
in its own process, back-ends taking turns over the repeats:

  latency     batch 1, median ms over --iters runs, with 1 and with 2 threads
  throughput  batch 16, images/s, all threads

Back-ends:
  default         what deploy/python/predict_cls.py runs on CPU with
                  deploy/configs/inference_cls.yaml (only the thread count changed)
  paddle-onednn   Paddle Inference, oneDNN on (ppcls.inference.predictor.paddle_config)
  paddle-native   Paddle Inference, oneDNN off
  onnxruntime     ONNX Runtime, CPU execution provider

Printed: medians, each back-end's time relative to ONNX Runtime's on the same model (so
lower is faster, for throughput too), and the largest difference of each back-end's output
from the dygraph model's on a fixed input, relative to the largest output.
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
BACKENDS = ("default", "paddle-onednn", "paddle-native", "onnxruntime")


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
    export_model(cfg)
    export_onnx(cfg["Global"]["save_inference_dir"])
    dirs["MobileNeXt_x1_0"] = cfg["Global"]["save_inference_dir"]

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


def make_predictor(backend, model_dir, threads):
    from ppcls.inference.predictor import OnnxPredictor, PaddlePredictor, create_predictor

    if backend == "default":
        from ppcls.utils.config import get_config

        g = dict(get_config(DEPLOY_CONFIG, show=False)["Global"])
        g.update(inference_model_dir=model_dir, cpu_num_threads=threads)
        return create_predictor(g)
    if backend == "onnxruntime":
        return OnnxPredictor(model_dir, cpu_num_threads=threads)
    return PaddlePredictor(model_dir, enable_mkldnn=backend == "paddle-onednn", cpu_num_threads=threads)


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
    if args.worker:
        return worker(args)

    import numpy as np

    print("\n".join(header("benchmark/infer_speed.py " + " ".join(argv or sys.argv[1:]),
                           ("paddle", "onnxruntime", "paddle2onnx"))))
    all_threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    backends = args.backends.split(",")
    with tempfile.TemporaryDirectory() as tmp:
        dirs, x, reference = export_models(tmp)
        np.save(os.path.join(tmp, "x.npy"), x)
        for name in args.models.split(","):
            cases = [("latency", 1, 1), ("latency", 1, 2), ("throughput", 16, all_threads)]
            results = {(b, c): [] for b in backends for c in cases}
            diffs, used = {}, {}
            for repeat in range(args.repeats):
                for case in cases:
                    for backend in backends:
                        extra = ["--input", os.path.join(tmp, "x.npy")] if repeat == 0 and case == cases[0] else []
                        out = run_worker(HERE, ["--worker", backend, "--model-dir", dirs[name],
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
            for backend in backends:
                row = [backend + ("" if backend != "default" else f" ({used.get(backend)})")]
                for case in cases:
                    value = median(results[(backend, case)])
                    ort = median(results[("onnxruntime", case)]) if "onnxruntime" in backends else None
                    # every ratio is time relative to ONNX Runtime's: lower is faster
                    ratio = (value / ort if case[0] == "latency" else ort / value) if ort else None
                    row.append(f"{value:.1f}" + (f" ({ratio:.2f}x)" if ratio else ""))
                row.append(f"{diffs.get(backend, float('nan')):.1e}")
                rows.append(row)
            print_table(["back-end (time x ONNX Runtime's)", "1 thread, ms", "2 threads, ms",
                         f"batch 16, {all_threads} threads, img/s", "max |out - dygraph| / max |dygraph|"], rows)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"\n# load average {load:.2f} at end")


if __name__ == "__main__":
    main()
