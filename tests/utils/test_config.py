import pytest

from ppcls.utils.config import apply_override, get_config
from ppcls.utils.errors import ConfigError

RECIPE = "ppcls/configs/ImageNet/MobileNeXt/MobileNeXt_100.yaml"


def test_overrides_reach_nested_keys_and_list_items(monkeypatch):
    from tests.conftest import ROOT

    monkeypatch.chdir(ROOT)
    cfg = get_config(RECIPE, ["Global.epochs=3", "Optimizer.lr.learning_rate=1e-5",
                              "DataLoader.Train.dataset.transform_ops.1.RandCropImage.size=160"])
    assert cfg["Global"]["epochs"] == 3
    assert cfg["Optimizer"]["lr"]["learning_rate"] == pytest.approx(1e-5)
    assert cfg["DataLoader"]["Train"]["dataset"]["transform_ops"][1]["RandCropImage"]["size"] == 160


def test_override_may_open_a_known_section_but_not_an_unknown_one():
    cfg = {"Global": {"epochs": 1}}
    apply_override(cfg, "AMP.level=O2")
    assert cfg["AMP"] == {"level": "O2"}
    with pytest.raises(ConfigError, match="Foo.bar"):
        apply_override(cfg, "Foo.bar=1")


@pytest.mark.parametrize("override,words", [
    ("Global.epoch=3", ["Global.epoch", "did you mean 'epochs'"]),
    ("Global.epochs=abc", ["Global.epochs", "integer", "abc"]),
    ("Global.eval_during_train=7", ["Global.eval_during_train", "true/false"]),
    ("DataLoader.Train.dataset.transform_ops.9.X=1", ["transform_ops", "'9'"]),
    ("Global.epochs", ["Key.sub=value"]),
])
def test_bad_overrides_name_the_key(override, words):
    cfg = {"Global": {"epochs": 1, "eval_during_train": True},
           "DataLoader": {"Train": {"dataset": {"transform_ops": [{"DecodeImage": {}}]}}}}
    with pytest.raises(ConfigError) as err:
        apply_override(cfg, override)
    for word in words:
        assert word in str(err.value)
