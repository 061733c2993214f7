"""The one Global table and select_device."""

import paddle
import pytest

from ppcls.utils.config import GLOBAL_SCHEMA, validate_config
from ppcls.utils.errors import ConfigError
from ppcls.utils.global_config import GLOBAL, global_value, select_device, selected_gpu


def test_every_default_passes_its_own_type_check():
    for key, (types, default, doc) in GLOBAL.items():
        assert doc and GLOBAL_SCHEMA[key] == types
        if default is not None:
            validate_config({"Global": {key: default}}, source="table")
    assert global_value({"Global": {}}, "output_dir") == "./output/"
    assert global_value({"Global": {"epochs": 7}}, "epochs") == 7


def test_selected_gpu_reads_the_launcher_flag(monkeypatch):
    monkeypatch.setenv("FLAGS_selected_gpus", "3,4")
    assert selected_gpu() == 3
    monkeypatch.delenv("FLAGS_selected_gpus")
    assert selected_gpu() == 0


@pytest.mark.skipif(paddle.device.is_compiled_with_cuda(), reason="checks the CPU-only build")
def test_select_device_on_a_cpu_build():
    assert GLOBAL["device"][1] == "gpu"  # PaddleClas's default
    assert select_device(None, set_it=False) == "cpu"  # the default falls back, with a warning
    assert select_device("gpu", fallback=True, set_it=False) == "cpu"  # prediction
    with pytest.raises(ConfigError, match="Global.device is 'gpu' but this PaddlePaddle build has no CUDA"):
        select_device("gpu", set_it=False)  # training asked for it explicitly
    with pytest.raises(ConfigError, match="Global.device expects 'gpu' or 'cpu', got 'tpu'"):
        select_device("tpu", set_it=False)


def test_the_keys_the_engine_reads_are_marked_in_the_one_table():
    import os
    import re

    from ppcls.utils.global_config import ENGINE_KEYS

    from conftest import ROOT

    folder = os.path.join(ROOT, "ppcls", "engine")
    read = set()
    for name in os.listdir(folder):
        if name.endswith(".py"):
            with open(os.path.join(folder, name), encoding="utf-8") as f:
                read |= set(re.findall(r"\bg\[[\"'](\w+)[\"']\]", f.read()))
    assert {"checkpoints", "epochs", "save_best_model"} <= read  # the scan sees the engine's reads
    assert read <= set(ENGINE_KEYS) <= set(GLOBAL)  # each has its default in the table, filled
