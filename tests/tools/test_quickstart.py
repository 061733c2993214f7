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


def _names_numpy_core(path):
    """Whether the pickle at ``path`` names ``numpy._core`` (which numpy 1.x cannot import)."""
    import pickletools

    with open(path, "rb") as f:
        data = f.read()
    return any(isinstance(arg, str) and "numpy._core" in arg for _, arg, _ in pickletools.genops(data))


def test_quickstart_pickles_load_under_numpy_1(quickstart_run):
    """Every pickle the training and the export wrote names ``numpy.core``, never ``numpy._core``
    (PaddleClas pins numpy 1.24.4; benchmark/numpy1_load.py loads them there)."""
    import os

    root, _ = quickstart_run
    pickles = []
    for folder in ("output", "inference"):
        for dirpath, _, names in os.walk(root / folder):
            for name in names:
                path = os.path.join(dirpath, name)
                with open(path, "rb") as f:
                    if f.read(1) == b"\x80":  # a pickle (protocol 2+)
                        pickles.append(path)
    suffixes = {os.path.splitext(p)[1] for p in pickles}
    assert {".pdparams", ".pdopt", ".pdstates"} <= suffixes, pickles
    assert [p for p in pickles if _names_numpy_core(p)] == []
