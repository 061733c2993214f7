"""Train, evaluate and export configs in one process (used by tests/test_vocabulary.py).

    python tests/recipe_run.py SPEC.json

``SPEC.json``: ``{"runs": [{"config": PATH, "out": DIR, "overrides": ["Key=value", ...],
"full": true}, ...]}``. Each run trains (its eval during training included); a ``full`` run
then evaluates the saved ``latest`` weights (tools/eval.py's path) and exports them
(tools/export_model.py's path). Each run writes ``DIR/result.json``: ``{"ok": true, "best":
..., "eval": {...}, "export": [file names]}`` or ``{"ok": false, "error": "<one line>"}``.
One process for every run keeps the parametrized recipe test fast (paddle is imported once).
"""

import json
import os
import sys
import traceback


def run_one(config_path, out, overrides, full):
    from ppcls.engine import evaluate, train
    from ppcls.inference.export import export_model
    from ppcls.utils.config import get_config

    base = list(overrides) + [f"Global.output_dir={out}"]
    result = {"ok": True, "best": train(get_config(config_path, base))}
    if full:
        arch = get_config(config_path, base)["Arch"]["name"]
        prefix = os.path.join(out, arch, "latest")
        results = evaluate(get_config(config_path, base + [f"Global.pretrained_model={prefix}"]))
        result["eval"] = {k: float(v) for k, v in results.items()}
        export_dir = os.path.join(out, "infer")
        export_model(get_config(config_path, base + [f"Global.pretrained_model={prefix}",
                                                     f"Global.save_inference_dir={export_dir}"]))
        result["export"] = sorted(os.listdir(export_dir))
    return result


def main(spec_path):
    with open(spec_path) as f:
        spec = json.load(f)
    for run in spec["runs"]:
        os.makedirs(run["out"], exist_ok=True)
        try:
            result = run_one(run["config"], run["out"], run.get("overrides", []), run.get("full"))
        except BaseException as err:  # recorded per run; the next run still goes
            if isinstance(err, KeyboardInterrupt):
                raise
            result = {"ok": False, "error": f"{type(err).__name__}: {err}",
                      "trace": traceback.format_exc()[-2000:]}
        with open(os.path.join(run["out"], "result.json"), "w") as f:
            json.dump(result, f)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
