"""INT8 post-training quantization, as PaddleClas's deploy/slim/quant_post_static.py:

    python deploy/slim/quant_post_static.py -c configs/quickstart/MobileNeXt_x1_0_digits.yaml \
        -o Global.pretrained_model=output/MobileNeXt_x1_0/best_model \
        -o Global.save_inference_dir=inference/MobileNeXt_x1_0_digits_int8

exports the weights, calibrates on images of the training list through the export's own
preprocessing and writes the INT8 model (inference.onnx for ONNX Runtime, inference.yml with
precision int8) to Global.save_inference_dir. Without Global.pretrained_model it quantizes the
fp32 export already in Global.save_inference_dir into its quant_post_static_model/ folder
(PaddleClas's layout). Options (this tool only):

    -o Quant.calib_images=300      calibration images, evenly spread over the training list
    -o Quant.method=minmax         activation ranges: minmax | percentile | entropy
    -o Quant.batch_size=16         calibration batch size
    -o Quant.reduce_range=True     7-bit weights (no u8s8 saturation on CPUs without VNNI)
"""

from ppcls.inference.quantize import quant_post_static
from ppcls.utils.cli import config_arg_parser, run_tool
from ppcls.utils.config import get_config, parse_value
from ppcls.utils.errors import ConfigError


def split_quant_overrides(overrides):
    """``(config overrides, {Quant key: value})``: the ``Quant.*`` options belong to this tool."""
    rest, quant = [], {}
    for override in overrides:
        key, sep, value = override.partition("=")
        if key.startswith("Quant."):
            if not sep or key.count(".") != 1:
                raise ConfigError(f"-o {override}: expected Quant.<key>=<value>")
            quant[key[len("Quant."):]] = parse_value(value)
        else:
            rest.append(override)
    return rest, quant


def main(argv=None):
    args = config_arg_parser("INT8 post-training quantization of a model").parse_args(argv)
    overrides, quant = split_quant_overrides(args.override)
    cfg = get_config(args.config, overrides, show=True)
    quant_post_static(cfg, quant)
    return 0


if __name__ == "__main__":
    run_tool(main)
