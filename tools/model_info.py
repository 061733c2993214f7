"""Print a model's parameters and multiply-adds at the configured input size.

    python tools/model_info.py -c ppcls/configs/ImageNet/MobileNeXt/MobileNeXt_100.yaml
    python tools/model_info.py -c config.yaml -o Arch.name=MobileNeXt_x0_5 -o Global.image_shape=[3,192,192]

The input size is ``Global.image_shape``, else the Eval/Train crop size, else 3x224x224.
Weights are not loaded (``Arch.pretrained`` is ignored): the counts do not depend on them.
"""

from ppcls.arch import build_model
from ppcls.utils.cli import config_arg_parser, run_tool
from ppcls.utils.config import apply_override, load_config, validate_config
from ppcls.utils.model_summary import format_summary, image_shape_from_config, summarize


def main(argv=None):
    parser = config_arg_parser(__doc__.split("\n")[0])
    parser.add_argument("--per_layer", action="store_true",
                        help="also list the multiply-adds of every conv and linear layer")
    args = parser.parse_args(argv)

    cfg = load_config(args.config)
    cfg.setdefault("Arch", {})  # so that -o Arch.name=... works on a config without one
    for override in args.override:
        apply_override(cfg, override)
    validate_config(cfg, source=args.config)

    arch = dict(cfg["Arch"])
    arch["pretrained"] = False
    model = build_model(arch)
    summary = summarize(model, image_shape_from_config(cfg))
    if args.per_layer:
        for name, kind, madds in summary["per_layer"]:
            print(f"{name:<28} {kind:<8} {madds:>14,}")
    for line in format_summary(arch["name"], summary, arch.get("class_num")):
        print(line)
    return 0


if __name__ == "__main__":
    run_tool(main)
