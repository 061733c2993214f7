import numpy as np
import pytest

from ppcls.arch import MODELS, build_model
from ppcls.utils.errors import ConfigError

# Published parameter counts of the official code at 1000 classes.
OFFICIAL_PARAMS = {
    "MobileNeXt_x0_35": 1_913_976,
    "MobileNeXt_x0_5": 2_152_304,
    "MobileNeXt_x0_75": 2_766_168,
    "MobileNeXt_x1_0": 3_535_416,
    "MobileNeXt_x1_4": 6_126_168,
}


def trainable(model):
    return sum(int(np.prod(p.shape)) for p in model.parameters() if not p.stop_gradient)


@pytest.mark.parametrize("name,count", sorted(OFFICIAL_PARAMS.items()))
def test_parameter_counts_match_official(name, count):
    assert trainable(build_model({"Arch": {"name": name, "class_num": 1000}})) == count


def test_aliases_build_the_same_network():
    for alias, name in [("MobileNeXt_35", "MobileNeXt_x0_35"), ("MobileNeXt_100", "MobileNeXt_x1_0"),
                        ("MobileNeXt_140", "MobileNeXt_x1_4")]:
        assert MODELS.get(alias) is MODELS.get(name)


def test_fixture_parameter_count(official_npz):
    assert trainable(build_model({"name": "MobileNeXt_x1_0"})) == int(official_npz["num_params"])


def test_unknown_model_lists_registered_names():
    with pytest.raises(ConfigError, match="MobileNeXt_x1_0"):
        build_model({"Arch": {"name": "MobileNeXt_x9"}})


def test_unknown_constructor_key_is_named():
    with pytest.raises(ConfigError, match="widht"):
        build_model({"Arch": {"name": "MobileNeXt_x1_0", "widht": 2}})


# ---------------------------------------------------------------- tools/model_info.py

PUBLISHED_MADDS_X1_0 = 311.3e6  # the paper, MobileNeXt 1.0x at 224x224


def _model_info(tmp_path, yaml_text, *overrides):
    import os
    import re
    import subprocess
    import sys

    from conftest import ROOT

    cfg = tmp_path / "model.yaml"
    cfg.write_text(yaml_text)
    args = [sys.executable, os.path.join(ROOT, "tools", "model_info.py"), "-c", str(cfg)]
    for override in overrides:
        args += ["-o", override]
    result = subprocess.run(args, capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert result.returncode == 0, result.stderr
    numbers = {}
    for key, label in (("trainable", r"Params \(trainable\)"), ("madds", "MAdds"),
                       ("total", r"Params \(total[^)]*\)")):
        found = re.search(label + r": ([\d,]+)", result.stdout)
        assert found, result.stdout
        numbers[key] = int(found.group(1).replace(",", ""))
    numbers["input"] = re.search(r"Input: (\S+)", result.stdout).group(1)
    return numbers


def test_model_info_matches_published_params_and_madds(tmp_path):
    info = _model_info(tmp_path, "Arch:\n  name: MobileNeXt_x1_0\n  class_num: 1000\n")
    assert info["input"] == "3x224x224"
    assert info["trainable"] == OFFICIAL_PARAMS["MobileNeXt_x1_0"]
    assert info["total"] > info["trainable"]  # BN running statistics on top
    assert abs(info["madds"] - PUBLISHED_MADDS_X1_0) / PUBLISHED_MADDS_X1_0 < 0.01


def test_model_info_takes_arch_override_and_crop_size(tmp_path):
    yaml_text = ("Arch:\n  name: MobileNeXt_x1_0\n"
                 "DataLoader:\n  Eval:\n    dataset:\n      transform_ops:\n"
                 "        - ResizeImage:\n            resize_short: 146\n"
                 "        - CropImage:\n            size: 128\n")
    info = _model_info(tmp_path, yaml_text, "Arch.name=MobileNeXt_x0_35")
    assert info["input"] == "3x128x128"
    assert info["trainable"] == OFFICIAL_PARAMS["MobileNeXt_x0_35"]
