"""Training throughput on CPU: the fast path against the plain Paddle path, same run.

    python benchmark/train_speed.py                      # (32, 224) and (64, 32 px), 3 repeats
    python benchmark/train_speed.py --settings 64x32 --repeats 5 --ablation --torch

One training step = forward, cross-entropy, backward, Momentum(0.9, Nesterov, L2 4e-5)
update, on a fixed random batch (the step alone, no data loading), 1000 classes. Every
measurement runs in its own process (the fast path changes process-wide settings: threads
and the allocator), and the variants take turns, repeat after repeat, so a change in the
machine's load hits them alike. Reported: the median images/s over the repeats, and each
variant's ratio to the plain path's median.

Variants:
  plain         MobileNeXt_x1_0, Paddle as installed: no switch of ours (Paddle's default
                one math thread, glibc's default allocator behaviour)
  fast          the same model with ppcls.ops.fast_cpu.enable (what Global.fast_cpu does)
  mbv2-plain    paddle.vision.models.mobilenet_v2, Paddle as installed
  mbv2-fast     the same with ppcls.ops.fast_cpu.enable (its layers fit the same kernels)
  --ablation    plain+threads (all cores for Paddle's math), plain+alloc (freed memory
                kept), fast-1thread (the kernels alone)
  --torch       torch: the official network in PyTorch eager (benchmark/torch_mobilenext.py),
                all cores
"""

import argparse
import json
import os
import sys
import time

from common import header, median, print_table, run_worker, spread

HERE = os.path.abspath(__file__)


def build(variant, threads):
    import paddle

    if variant.startswith("mbv2"):
        from paddle.vision.models import mobilenet_v2

        model = mobilenet_v2(num_classes=1000)
    else:
        from ppcls.arch import build_model

        model = build_model({"name": "MobileNeXt_x1_0", "class_num": 1000})
    from ppcls.ops import fast_cpu
    from ppcls.ops.fast_cpu import runtime

    if variant in ("fast", "mbv2-fast", "fast-1thread"):
        n = fast_cpu.enable(model, 1 if variant == "fast-1thread" else threads)
        if n == 0:
            raise SystemExit(f"fast path unavailable: {runtime.last_error()}")
    elif variant == "plain+threads":
        runtime.set_threads(threads)
    elif variant == "plain+alloc":
        runtime.keep_freed_memory()
    model.train()
    opt = paddle.optimizer.Momentum(0.1, momentum=0.9, use_nesterov=True,
                                    parameters=model.parameters(), weight_decay=4e-5)
    return model, opt


def paddle_step(variant, batch, size, threads):
    import numpy as np
    import paddle
    import paddle.nn.functional as F

    model, opt = build(variant, threads)
    rng = np.random.default_rng(0)
    x = paddle.to_tensor(rng.standard_normal((batch, 3, size, size)).astype("float32"))
    y = paddle.to_tensor(rng.integers(0, 1000, (batch, 1)))

    def step():
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        opt.clear_grad()
        return float(loss)  # waits for the step to finish

    return step


def torch_step(batch, size, threads):
    import numpy as np
    import torch

    from torch_mobilenext import MobileNeXt

    torch.set_num_threads(threads)
    model = MobileNeXt()
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=4e-5)
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.standard_normal((batch, 3, size, size)).astype("float32"))
    y = torch.from_numpy(rng.integers(0, 1000, (batch,)))

    def step():
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        return float(loss)

    return step


def worker(args):
    if args.worker == "torch":
        step = torch_step(args.batch, args.size, args.threads)
    else:
        step = paddle_step(args.worker, args.batch, args.size, args.threads)
    for _ in range(args.warmup):
        step()
    start = time.perf_counter()
    for _ in range(args.steps):
        step()
    seconds = (time.perf_counter() - start) / args.steps
    print(json.dumps({"variant": args.worker, "step_s": seconds, "img_s": args.batch / seconds}))


def default_threads():
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--settings", default="32x224,64x32",
                        help="comma-separated BATCHxSIZE (default: 32x224,64x32)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=0, help="timed steps (default: by size)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=default_threads())
    parser.add_argument("--ablation", action="store_true")
    parser.add_argument("--torch", action="store_true")
    parser.add_argument("--no-mbv2", action="store_true")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--batch", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--size", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return worker(args)

    variants = ["plain", "fast"]
    if not args.no_mbv2:
        variants += ["mbv2-plain", "mbv2-fast"]
    if args.ablation:
        variants += ["plain+threads", "plain+alloc", "fast-1thread"]
    if args.torch:
        variants += ["torch"]
    print("\n".join(header("benchmark/train_speed.py " + " ".join(argv or sys.argv[1:]),
                           ("paddle", "torch") if args.torch else ("paddle",))))
    print(f"# threads for fast/torch: {args.threads}; repeats: {args.repeats}")
    for setting in args.settings.split(","):
        batch, size = (int(v) for v in setting.lower().split("x"))
        steps = args.steps or (3 if size >= 160 else 10)
        results = {v: [] for v in variants}
        for _ in range(args.repeats):
            for variant in variants:
                out = run_worker(HERE, ["--worker", variant, "--batch", str(batch), "--size", str(size),
                                        "--steps", str(steps), "--warmup", str(args.warmup),
                                        "--threads", str(args.threads)])
                results[variant].append(out["img_s"])
        base = median(results["plain"])
        print(f"\n## batch {batch}, {size}x{size}, {steps} timed steps after {args.warmup} warm-up")
        rows = [[v, f"{median(r):.2f}", spread(r), f"{1000 * batch / median(r):.0f}",
                 f"{median(r) / base:.2f}x"] for v, r in results.items()]
        print_table(["variant", "img/s (median)", "range", "ms/step", "vs plain"], rows)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"\n# load average {load:.2f} at end")


if __name__ == "__main__":
    main()
