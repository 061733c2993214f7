"""Evaluate weights: ``python tools/eval.py -c config.yaml -o Global.pretrained_model=PATH``.

Multi-card: ``python -m paddle.distributed.launch --gpus="0,1" tools/eval.py -c ...``.
"""

from ppcls.utils.cli import config_arg_parser, run_tool


def main(argv=None):
    args = config_arg_parser("Evaluate a model on DataLoader.Eval").parse_args(argv)
    from ppcls.engine import evaluate
    from ppcls.utils.config import get_config

    evaluate(get_config(args.config, args.override))
    return 0


if __name__ == "__main__":
    run_tool(main)
