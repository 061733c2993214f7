"""Train a model: ``python tools/train.py -c config.yaml [-o Key.sub=value ...]``.

Multi-card: ``python -m paddle.distributed.launch --gpus="0,1,2,3" tools/train.py -c ...``.
"""

from ppcls.utils.cli import config_arg_parser, run_tool


def main(argv=None):
    args = config_arg_parser("Train a PaddleClas-style model").parse_args(argv)
    from ppcls.engine import train
    from ppcls.utils import profiler

    profiler.configure(args.profiler_options)
    from ppcls.utils.config import get_config

    train(get_config(args.config, args.override))
    return 0


if __name__ == "__main__":
    run_tool(main)
