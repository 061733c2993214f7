"""Classify images with an exported model on Paddle Inference, ONNX Runtime (.onnx, .ort) or
LiteRT (.tflite, docs/mobile.md), as PaddleClas's deploy/python/predict_cls.py:

    cd deploy
    python python/predict_cls.py -c configs/inference_cls.yaml \
        -o Global.infer_imgs=IMG_OR_DIR -o Global.inference_model_dir=MODEL_DIR
"""

from ppcls.inference.deploy import predict_cls
from ppcls.utils.cli import DEPLOY_KEYS, config_arg_parser, run_tool
from ppcls.utils.config import get_config


def main(argv=None):
    args = config_arg_parser("Classify images with an exported model", keys=DEPLOY_KEYS).parse_args(argv)
    cfg = get_config(args.config, args.override, show=True)
    _, exit_code = predict_cls(cfg)
    return exit_code


if __name__ == "__main__":
    run_tool(main)
