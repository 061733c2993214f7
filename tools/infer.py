"""Predict images with a training config and its weights, as PaddleClas's tools/infer.py:

    python tools/infer.py -c ppcls/configs/ImageNet/MobileNeXt/MobileNeXt_100.yaml \
        -o Infer.infer_imgs=IMG_OR_DIR -o Global.pretrained_model=output/MobileNeXt_100/best_model
"""

from ppcls.inference.dygraph import predict
from ppcls.utils.cli import config_arg_parser, run_tool
from ppcls.utils.config import get_config


def main(argv=None):
    args = config_arg_parser("Predict images with a trained model (the Infer section)").parse_args(argv)
    cfg = get_config(args.config, args.override, show=True)
    _, exit_code = predict(cfg)
    return exit_code


if __name__ == "__main__":
    run_tool(main)
