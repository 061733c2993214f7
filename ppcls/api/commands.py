"""``python -m ppcls <command>`` (and the ``ppcls`` console script).

::

    python -m ppcls predict --model_name MobileNeXt_x1_0 --infer_imgs img.jpg [--topk 5]
    python -m ppcls predict --inference_model_dir ./inference --infer_imgs images/
    python -m ppcls train  -c config.yaml [-o Key.sub=value ...]     # = tools/train.py
    python -m ppcls eval   -c config.yaml -o Global.pretrained_model=...   # = tools/eval.py
    python -m ppcls export -c config.yaml -o ...                          # = tools/export_model.py
    python -m ppcls infer  -c config.yaml -o ...                          # = tools/infer.py
    python -m ppcls config MobileNeXt_x1_0     # the recipe, each Global/Arch key commented
    python -m ppcls config --keys              # every Global key: default and meaning
    python -m ppcls models [PATTERN]           # the models and their facts

``predict`` prints predict_cls's lines (``file:\\tclass id(s): [...], score(s): [...],
label_name(s): [...]``); it exits 1 when some image could not be read, 2 on a bad argument or
when the weights cannot be downloaded (one line with the address and the cache path).
"""

import argparse
import os
import re
import sys

from ppcls.utils.cli import config_arg_parser, run_tool

COMMANDS = ("predict", "train", "eval", "export", "infer", "config", "models")


def _predict(argv):
    parser = argparse.ArgumentParser(
        prog="ppcls predict", description="Classify images with a published model or an export "
        "(the first use of --model_name downloads the weights and exports them once)")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--model_name", help="a model with published weights (python -m ppcls models)")
    source.add_argument("--inference_model_dir", help="an export of tools/export_model.py")
    parser.add_argument("--infer_imgs", required=True, help="an image file or a folder of images")
    parser.add_argument("--topk", type=int, default=5, help="classes per image (default 5)")
    parser.add_argument("--batch_size", type=int, default=1, help="images per batch (default 1)")
    parser.add_argument("--device", default="cpu", choices=("cpu", "gpu"), help="default cpu")
    parser.add_argument("--pretrained", default=None,
                        help="with --model_name: a weight file instead of the published weights")
    parser.add_argument("--class_num", type=int, default=1000,
                        help="with --model_name: the weights' class count (default 1000)")
    args = parser.parse_args(argv)
    from ppcls.api.predictor import Predictor
    from ppcls.inference.deploy import format_result

    predictor = Predictor(model_name=args.model_name, inference_model_dir=args.inference_model_dir,
                          topk=args.topk, batch_size=args.batch_size, device=args.device,
                          pretrained=args.pretrained or True, class_num=args.class_num)
    for results in predictor.predict(args.infer_imgs):
        for result in results:
            print(format_result(result), flush=True)
    return 1 if predictor.failed else 0


def _tool(description, run, show=False, keys=None):
    def main(argv):
        kwargs = {"keys": keys} if keys is not None else {}
        args = config_arg_parser(description, **kwargs).parse_args(argv)
        from ppcls.utils import profiler
        from ppcls.utils.config import get_config

        profiler.configure(args.profiler_options)
        return run(get_config(args.config, args.override, show=show))

    return main


def _train(cfg):
    from ppcls.engine import train

    train(cfg)
    return 0


def _eval(cfg):
    from ppcls.engine import evaluate

    evaluate(cfg)
    return 0


def _export(cfg):
    from ppcls.inference.export import export_model

    export_model(cfg)
    return 0


def _infer(cfg):
    from ppcls.inference.dygraph import predict

    return predict(cfg)[1]


def commented_recipe(name):
    """The shipped recipe of ``name`` with each uncommented ``Global`` and ``Arch`` key followed
    by its meaning and default (from the Global table), and the model's facts on top."""
    from ppcls.api.models import RECIPES, canonical_name, model_meta
    from ppcls.utils.cli import ARCH_KEYS
    from ppcls.utils.errors import ConfigError
    from ppcls.utils.global_config import GLOBAL

    canonical = canonical_name(name)
    path = os.path.join(RECIPES, f"{name}.yaml")
    if not os.path.isfile(path):
        path = os.path.join(RECIPES, f"{canonical}.yaml")
    if not os.path.isfile(path):
        raise ConfigError(f"{name}: no shipped recipe ({path})")
    meta = model_meta(canonical)
    out = [f"# {name}: {meta.get('params', 0):,} parameters, {meta.get('madds', 0) / 1e6:.1f}M MAdds "
           f"at {'x'.join(map(str, meta['input_size']))}, published top-1 {meta.get('top1')}%",
           f"# from {os.path.relpath(path)}; train with: python tools/train.py -c <this file> "
           "-o Global.device=cpu ...", ""]
    section = None
    with open(path, encoding="utf-8") as f:
        for line in f.read().splitlines():
            top = re.match(r"^(\w+):\s*(#.*)?$", line)
            if top:
                section = top.group(1)
            key = re.match(r"^  (\w+):", line)
            if key and "#" not in line:
                table = {"Global": {k: (d, m) for k, (_, d, m) in GLOBAL.items()},
                         "Arch": ARCH_KEYS}.get(section, {})
                if key.group(1) in table:
                    default, meaning = table[key.group(1)]
                    default = "null" if default is None else default
                    default = "required" if default == "(required)" else f"default {default}"
                    line = f"{line:<40}# {meaning} ({default})"
            out.append(line)
    return "\n".join(out)


def _config(argv):
    parser = argparse.ArgumentParser(prog="ppcls config",
                                     description="Print a model's recipe with its keys commented")
    parser.add_argument("model_name", nargs="?", help="e.g. MobileNeXt_x1_0")
    parser.add_argument("--keys", action="store_true", help="list every Global key instead")
    args = parser.parse_args(argv)
    if args.keys or not args.model_name:
        from ppcls.utils.global_config import GLOBAL

        for key, (types, default, meaning) in GLOBAL.items():
            kinds = "/".join("null" if t is type(None) else t.__name__ for t in types)
            print(f"Global.{key:<22} {kinds:<10} {'null' if default is None else default!s:<16} "
                  f"{meaning}")
        return 0
    print(commented_recipe(args.model_name))
    return 0


def _models(argv):
    parser = argparse.ArgumentParser(prog="ppcls models", description="List the models")
    parser.add_argument("pattern", nargs="?", default="*", help="shell pattern, e.g. '*x1*'")
    args = parser.parse_args(argv)
    from ppcls.api.models import list_models, model_meta

    print(f"{'model':<18} {'alias':<16} {'params':>10} {'MAdds':>8} {'top-1':>6}  weights")
    for name in list_models(args.pattern):
        meta = model_meta(name, class_num=None)
        print(f"{name:<18} {meta.get('alias', ''):<16} {meta.get('params', 0):>10,} "
              f"{meta.get('madds', 0) / 1e6:>7.1f}M {meta.get('top1', 0):>5}%  "
              f"{'published' if meta['pretrained_url'] else '-'}")
    return 0


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    import textwrap

    examples = textwrap.dedent(__doc__.split("::", 1)[1].split("``predict``")[0]).strip("\n")
    usage = f"usage: python -m ppcls {{{','.join(COMMANDS)}}} ...\n\n{examples}"
    if not argv or argv[0] in ("-h", "--help"):
        print(usage)
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    handlers = {
        "predict": _predict,
        "train": _tool("Train a PaddleClas-style model", _train),
        "eval": _tool("Evaluate a model on DataLoader.Eval", _eval),
        "export": _tool("Export a model to Paddle Inference format", _export, show=True),
        "infer": _tool("Predict images with a trained model (the Infer section)", _infer, show=True),
        "config": _config,
        "models": _models,
    }
    if command not in handlers:
        from ppcls.utils.registry import suggest

        print(f"Error: unknown command {command!r}{suggest(command, COMMANDS)}; commands: "
              f"{', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    return handlers[command](rest)


def console():
    """The ``ppcls`` console script."""
    run_tool(main)


__all__ = ["COMMANDS", "commented_recipe", "console", "main"]
