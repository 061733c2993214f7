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
