"""Train, evaluate and export one config in one process (used by tests/test_vocabulary.py).

    python tests/recipe_run.py CONFIG OUT -o Key=value ...

Writes ``OUT/result.json``: the eval results and the export's file names. One process for the
three steps keeps the parametrized recipe test fast (paddle is imported once).
"""

import json
import os
import sys

from ppcls.utils.cli import run_tool


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    config_path, out = argv[0], argv[1]
    overrides = [argv[i + 1] for i in range(2, len(argv) - 1) if argv[i] == "-o"]
    from ppcls.engine import evaluate, train
    from ppcls.inference.export import export_model
    from ppcls.utils.config import get_config

    base = overrides + [f"Global.output_dir={out}"]
    train(get_config(config_path, base))
    cfg = get_config(config_path, base)
    prefix = os.path.join(out, cfg["Arch"]["name"], "latest")
    results = evaluate(get_config(config_path, base + [f"Global.pretrained_model={prefix}"]))
    export_dir = os.path.join(out, "infer")
    export_model(get_config(config_path, base + [f"Global.pretrained_model={prefix}",
                                                 f"Global.save_inference_dir={export_dir}"]))
    with open(os.path.join(out, "result.json"), "w") as f:
        json.dump({"eval": {k: float(v) for k, v in results.items()},
                   "export": sorted(os.listdir(export_dir))}, f)
    return 0


if __name__ == "__main__":
    run_tool(main)
