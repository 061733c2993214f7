"""Train every PaddleClas ImageNet recipe with MobileNeXt, one tiny epoch each, in one process.

    python tools/check_recipes.py /path/to/PaddleClas            # its ppcls/configs/ImageNet
    python tools/check_recipes.py DIR_OF_YAMLS --only 'ResNet|ViT' --workers 0

Each recipe is switched to MobileNeXt the way a user would: the ``Arch`` section is replaced
by ``{name: --arch, class_num: 10}``, the batch sizes are set (``--batch-size``; a
``MultiScaleSampler``'s ``first_bs``), the data paths point at the quickstart digits
(``--train-images`` training images, ``--eval-images`` to evaluate, ``--size`` px; the
recipe's own crops and resizes still apply), and the run is one epoch on ``Global.device=cpu``
with evaluation after it. Everything else (optimizer, LR schedule, regularizer, loss, metric,
sampler, transform ops, EMA, AMP...) is the recipe's, unchanged.

One line a recipe (``ok`` with top-1 and seconds / ``FAIL`` with the error / ``listed`` with
the reason it cannot run with another model), then a summary. Exit status 1 when any recipe
failed. ``--json FILE`` writes every result; ``--full NAME,...`` also evaluates the saved
``latest`` weights and exports them for those recipes (tools/eval.py's and
tools/export_model.py's paths; the tests use it).

All 354 recipes of PaddleClas develop take about 26 minutes on 2 busy CPU cores with
``--workers 0 --batch-size 2 --train-images 4 --eval-images 2`` (docs/vocabulary.md has the
numbers). A run's folder under ``--out`` (checkpoints, train.log: about 60 MB) is removed
once its recipe passed, unless ``--keep-runs``; a failed run's folder is kept.
"""

import argparse
import contextlib
import gc
import json
import math
import os
import re
import shutil
import sys
import tempfile
import time
import traceback
import warnings

# A recipe that needs another model's own outputs: (test, reason).
NEEDS_ITS_MODEL = (
    (lambda cfg, losses: cfg.get("Arch", {}).get("name") == "DistillationModel"
     or any(n.startswith("Distillation") for n in losses),
     "distillation: the loss compares a student with a teacher model's outputs"),
    (lambda cfg, losses: "GoogLeNetLoss" in losses,
     "GoogLeNetLoss needs GoogLeNet's three outputs (the main head and two auxiliary heads)"),
    (lambda cfg, losses: (cfg.get("Arch") or {}).get("input_image_channel", 3) != 3,
     "4-channel input (NormalizeImage channel_num 4) for ResNet's input_image_channel; "
     "MobileNeXt's stem takes 3 channels"),
)


def find_recipes(root):
    """``(name, path)`` of every YAML under ``root`` (a PaddleClas checkout: its
    ``ppcls/configs/ImageNet``), sorted; ``name`` is the path below that folder."""
    base = os.path.join(root, "ppcls", "configs", "ImageNet")
    base = base if os.path.isdir(base) else root
    if not os.path.isdir(base):
        raise SystemExit(f"Error: {root} is not a folder (a PaddleClas checkout or a folder of YAMLs)")
    found = []
    for folder, _, files in os.walk(base):
        for f in files:
            if f.endswith((".yaml", ".yml")):
                path = os.path.join(folder, f)
                found.append((os.path.relpath(path, base)[:-len(".yaml")], path))
    return sorted(found)


def _losses(cfg):
    names = []
    for part in ("Train", "Eval"):
        for item in (cfg.get("Loss") or {}).get(part) or []:
            names += list(item) if isinstance(item, dict) else [str(item)]
    return names


def listed_reason(cfg):
    """Why this file is not trained here (None: it is), from the file alone."""
    if not isinstance(cfg, dict) or "Optimizer" not in cfg or "Arch" not in cfg:
        return "not a training recipe (no Arch/Optimizer section)"
    for test, reason in NEEDS_ITS_MODEL:
        if test(cfg, _losses(cfg)):
            return reason
    return None


RA_IMAGES = 256  # RASampler keeps len // 256 * 256 images an epoch (DeiT's rule)


def prepare_data(root, size, train_images, eval_images):
    """The digits at ``size`` px plus short lists: ``{"root", "train", "eval", "ra" (256
    training images, for RASampler recipes), "train_images"}``."""
    import numpy as np

    from ppcls.data.digits import prepare_digits

    prepare_digits(root, size=size, progress=False)
    lists = []
    for split, count, pick in (("train", train_images, True), ("val", eval_images, False),
                               ("train", RA_IMAGES, True)):
        with open(os.path.join(root, f"{split}_list.txt")) as f:
            lines = [line for line in f.read().splitlines() if line]
        if pick:  # a fixed mix of classes (the list itself is sorted by folder)
            lines = [lines[i] for i in np.random.default_rng(0).permutation(len(lines))]
        path = os.path.join(root, f"check_{split}_{count}.txt")
        with open(path, "w") as f:
            f.write("\n".join(lines[:count]) + "\n")
        lists.append(path)
    return {"root": root, "train": lists[0], "eval": lists[1], "ra": lists[2],
            "train_images": train_images}


def switch_to(cfg, arch, batch_size, data, out, workers=None):
    """``cfg`` switched to ``arch`` on the digits, as a user would; changed in place."""
    cfg["Arch"] = {"name": arch, "class_num": 10}
    g = cfg.setdefault("Global", {}) or {}
    cfg["Global"] = g
    g.update(device="cpu", epochs=1, output_dir=out, eval_during_train=True, eval_interval=1)
    for mode, path in (("Train", data["train"]), ("Eval", data["eval"])):
        section = (cfg.get("DataLoader") or {}).get(mode)
        if not isinstance(section, dict):
            continue
        sampler = section.setdefault("sampler", {})
        if sampler.get("name") == "RASampler":  # 256 images listed, as many steps as the others
            path = data["ra"]
            g["max_iters_per_epoch"] = -(-data["train_images"] // batch_size)
        section.setdefault("dataset", {}).update(image_root=data["root"], cls_label_path=path)
        sampler["first_bs" if sampler.get("name") == "MultiScaleSampler" else "batch_size"] = \
            batch_size
        if workers is not None:
            section.setdefault("loader", {})["num_workers"] = workers
    return cfg


def run_recipe(path, arch, batch_size, data, out, workers=None, full=False):
    """Train (and with ``full`` evaluate + export) one recipe; returns its result dict."""
    from ppcls.engine import evaluate, train
    from ppcls.utils.config import load_config, validate_config

    cfg = load_config(path)
    reason = listed_reason(cfg)
    if reason:
        return {"status": "listed", "reason": reason}
    cfg = validate_config(switch_to(cfg, arch, batch_size, data, out, workers), source=path)
    best = train(cfg)
    result = {"status": "ok", "best": None if best is None else float(best),
              "optimizer": cfg["Optimizer"].get("name"),
              "lr": (cfg["Optimizer"].get("lr") or {}).get("name")
              if isinstance(cfg["Optimizer"].get("lr"), dict) else "Constant"}
    if full:
        from ppcls.inference.export import export_model

        prefix = os.path.join(out, arch, "latest")

        def again(**extra):  # the same switched recipe, reading the weights just trained
            cfg = switch_to(load_config(path), arch, batch_size, data, out, workers)
            cfg["Global"].update(pretrained_model=prefix, **extra)
            return validate_config(cfg, source=path)

        result["eval"] = {k: float(v) for k, v in evaluate(again()).items()}
        export_dir = os.path.join(out, "infer")
        export_model(again(save_inference_dir=export_dir))
        result["export"] = sorted(os.listdir(export_dir))
    return result


@contextlib.contextmanager
def _silenced():
    """The engine's log lines, paddle's C++ messages and warnings go nowhere (file
    descriptors 1 and 2 included) while one recipe runs; each run's train.log keeps them."""
    sys.stdout.flush(), sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, 1), os.dup2(null, 2)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        sys.stdout.flush(), sys.stderr.flush()
        os.dup2(saved[0], 1), os.dup2(saved[1], 2)
        for fd in saved + [null]:
            os.close(fd)


def _one_line(err):
    text = f"{type(err).__name__}: {err}".strip().splitlines()
    return text[0] if text else type(err).__name__


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("upstream", help="a PaddleClas checkout, or a folder of recipe YAMLs")
    parser.add_argument("--arch", default="MobileNeXt_x1_0")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--train-images", type=int, default=16)
    parser.add_argument("--eval-images", type=int, default=8)
    parser.add_argument("--size", type=int, default=32, help="digit image size before the recipe's ops")
    parser.add_argument("--workers", type=int, default=None,
                        help="DataLoader num_workers for every recipe (default: the recipe's)")
    parser.add_argument("--data", default=None, help="digits folder (made if missing)")
    parser.add_argument("--out", default=None, help="an empty or new folder for the runs")
    parser.add_argument("--only", default=None, help="regular expression on the recipe name")
    parser.add_argument("--full", default="", help="comma-separated names: also eval + export")
    parser.add_argument("--json", default=None, help="write every result to this file")
    parser.add_argument("--verbose", action="store_true", help="show each run's log")
    parser.add_argument("--keep-runs", action="store_true",
                        help="keep every run's folder (default: only failed runs')")
    args = parser.parse_args(argv)

    recipes = find_recipes(args.upstream)
    if args.only:
        recipes = [(n, p) for n, p in recipes if re.search(args.only, n)]
    out = args.out or tempfile.mkdtemp(prefix="check_recipes_")
    if os.path.isdir(out) and os.listdir(out):
        raise SystemExit(f"Error: --out {out} is not empty (runs are never written over)")
    os.makedirs(out, exist_ok=True)
    data = prepare_data(args.data or os.path.join(out, "digits"), args.size, args.train_images,
                        args.eval_images)
    full = {n for n in args.full.split(",") if n}
    from ppcls.utils import logger

    results, start = {}, time.time()
    print(f"{len(recipes)} recipes from {args.upstream}; model {args.arch}, batch "
          f"{args.batch_size}, {args.train_images} training / {args.eval_images} eval digits at "
          f"{args.size} px, 1 epoch; runs in {out}", flush=True)
    for name, path in recipes:
        run_out = os.path.join(out, "runs", name.replace(os.sep, "__"))
        t0 = time.time()
        try:
            with contextlib.ExitStack() as stack:
                if not args.verbose:
                    stack.enter_context(_silenced())
                result = run_recipe(path, args.arch, args.batch_size, data, run_out,
                                    args.workers, name.split(os.sep)[-1] in full or name in full)
        except Exception as err:  # one line per recipe; the sweep goes on
            result = {"status": "FAIL", "error": _one_line(err),
                      "trace": traceback.format_exc()[-3000:]}
        finally:
            logger.init_logger()  # back to the real stdout
            gc.collect()  # the last run's model, optimizer and loaders
        result.update(seconds=round(time.time() - t0, 1), out=run_out, path=path)
        results[name] = result
        if result["status"] == "ok":
            best = result["best"]
            detail = (f"top1 {best:.3f}" if best is not None and math.isfinite(best) else "top1 -") \
                + f"  {result['optimizer']}/{result['lr']}  {result['seconds']:.1f}s"
        else:
            detail = result.get("reason") or result.get("error")
        print(f"{result['status']:<6} {name}  {detail}", flush=True)
        if result["status"] != "FAIL" and not args.keep_runs:
            shutil.rmtree(run_out, ignore_errors=True)
    counts = {s: sum(r["status"] == s for r in results.values()) for s in ("ok", "FAIL", "listed")}
    trainable = counts["ok"] + counts["FAIL"]
    reasons = {}
    for r in results.values():
        if r["status"] == "listed":
            reasons[r["reason"]] = reasons.get(r["reason"], 0) + 1
    listed = "; ".join(f"{n} x {r}" for r, n in reasons.items())
    summary = (f"SUMMARY: {counts['ok']} of {trainable} trainable recipes trained and evaluated "
               f"with {args.arch}, {counts['FAIL']} failed; {counts['listed']} listed"
               + (f" ({listed})" if listed else "")
               + f"; {len(results)} files in {time.time() - start:.0f} s")
    print(summary, flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"summary": summary, "counts": counts, "results": results}, f, indent=1)
    return 1 if counts["FAIL"] else 0


if __name__ == "__main__":
    sys.exit(main())
