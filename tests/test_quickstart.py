"""The main job as a user runs it: ``bash scripts/quickstart.sh`` (2 epochs, see the
``quickstart_run`` fixture), and what it prints at the end."""

import re


def test_quickstart_export_top1_equals_eval_top1(quickstart_run):
    root, out = quickstart_run
    evaluated = re.findall(r"^validation top-1: ([0-9.]+)$", out, re.M)
    exported = re.findall(r"^exported model, validation top-1: ([0-9.]+) \((\d+)/(\d+) images\)$",
                          out, re.M)
    assert len(evaluated) == 1 and len(exported) == 1, out[-3000:]
    top1, (deploy_top1, right, images) = float(evaluated[0]), exported[0]
    assert int(images) == 360  # the whole validation list (tools/prepare_quickstart_data.py)
    assert int(right) == round(float(deploy_top1) * 360)
    # two epochs learn something (10 classes: chance is 0.1), and the export scores what the
    # checkpoint scores, within one of the 360 images
    assert top1 > 0.3, out[-3000:]
    assert abs(float(deploy_top1) - top1) <= 1 / 360 + 1e-9, out[-3000:]
