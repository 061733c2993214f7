"""Export a trained model for deployment, as PaddleClas's tools/export_model.py:

    python tools/export_model.py -c ppcls/configs/ImageNet/MobileNeXt/MobileNeXt_100.yaml \
        -o Global.pretrained_model=output/MobileNeXt_100/best_model \
        -o Global.save_inference_dir=./deploy/models/class_MobileNeXt_100_ImageNet_infer

writes inference.json + inference.pdiparams + inference.yml (+ the label file, and
inference.onnx with -o Global.export_onnx=True). -o Global.export_format=tflite,ort,legacy (or
mobile: all three) adds the phone formats as sub-folders (docs/mobile.md).
"""

from ppcls.inference.mobile import export_with_formats
from ppcls.utils.cli import config_arg_parser, run_tool
from ppcls.utils.config import get_config


def main(argv=None):
    args = config_arg_parser("Export a model to Paddle Inference format").parse_args(argv)
    cfg = get_config(args.config, args.override, show=True)
    export_with_formats(cfg)
    return 0


if __name__ == "__main__":
    run_tool(main)
