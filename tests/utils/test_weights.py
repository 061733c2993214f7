"""Checkpoint import: official PyTorch state_dicts, PaddleClas .pdparams, safetensors, mismatches.

The reference is ../shared/fixtures: the official PyTorch MobileNeXt's state_dict and the
logits it produced, and the key/shape list of the checkpoint PaddleClas publishes.
"""

import os
import subprocess
import sys

import numpy as np
import paddle
import pytest

from conftest import FIXTURES, ROOT
from ppcls.arch import build_model
from ppcls.utils.errors import CheckpointError
from ppcls.utils.torch_weights import torch_state_dict_to_paddle
from ppcls.utils.weights import (load_pretrained, load_state_dict, read_state_dict,
                                 save_state_dict, state_dict_numpy)

TOL = 1e-4  # the fixture README: a faithful implementation matches within 1e-4
CONVERT = os.path.join(ROOT, "tools", "convert_weights.py")


def official_state(npz):
    """The official PyTorch state_dict stored in the fixture, PyTorch names."""
    prefix = "state_dict/"
    return {k[len(prefix):]: npz[k] for k in npz.files if k.startswith(prefix)}


def paddleclas_keys():
    """[(name, shape)] of PaddleClas's published MobileNeXt_x1_0 .pdparams, in file order."""
    path = os.path.join(FIXTURES, "paddleclas_pdparams_keys_w1_0.txt")
    assert os.path.isfile(path), f"reference fixture missing: {path}"
    keys = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                name, shape = line.strip().split(" ", 1)
                keys.append((name, [int(d) for d in shape.strip("[]").split(",")]))
    return keys


def logits_of(model, npz):
    model.eval()
    with paddle.no_grad():
        return model(paddle.to_tensor(npz["input"])).numpy()


def max_diff(model, npz):
    return float(np.abs(logits_of(model, npz) - npz["logits"]).max())


def run_tool(*args):
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=ROOT,
                          timeout=300)


def error_lines(stderr):
    return [line for line in stderr.splitlines() if line.startswith("Error:")]


def test_official_state_dict_reproduces_official_logits(official_npz):
    # the layout of a real training checkpoint: wrapped, DataParallel prefixes
    wrapped = {"state_dict": {"module." + k: v for k, v in official_state(official_npz).items()}}
    model = build_model({"name": "MobileNeXt_x1_0"})
    load_state_dict(model, torch_state_dict_to_paddle(wrapped), source="fixture")
    assert max_diff(model, official_npz) < TOL


def test_model_names_and_shapes_are_paddleclas_format():
    model = build_model({"name": "MobileNeXt_x1_0", "class_num": 1000})
    ours = [(name, list(value.shape)) for name, value in model.state_dict().items()]
    assert ours == paddleclas_keys()


def test_paddleclas_pdparams_loads_and_reproduces_logits(official_npz, tmp_path):
    # Build PaddleClas's file from its published key list: Paddle BN names, Linear [in, out],
    # saved as paddle.save(state_dict of Tensors) does (it adds its structured-name map).
    torch_names = official_state(official_npz)
    state = {}
    for name, shape in paddleclas_keys():
        source = name.replace("._mean", ".running_mean").replace("._variance", ".running_var")
        value = torch_names[source]
        if name == "classifier.1.weight":
            value = value.T
        assert list(value.shape) == shape, name
        state[name] = paddle.to_tensor(np.ascontiguousarray(value))
    path = tmp_path / "MobileNeXt_x1_0_pretrained.pdparams"
    paddle.save(state, str(path))

    # Global.pretrained_model style: no suffix
    model = build_model({"name": "MobileNeXt_x1_0"})
    load_pretrained(model, str(tmp_path / "MobileNeXt_x1_0_pretrained"))
    assert max_diff(model, official_npz) < TOL
    # Arch.pretrained style, through the constructor
    model = build_model({"name": "MobileNeXt_x1_0", "pretrained": str(path)})
    assert max_diff(model, official_npz) < TOL


def _torch_checkpoint(state, path):
    """Write ``state`` (PyTorch names) as an official-style training checkpoint with torch."""
    import torch

    tensors = {}
    for name, value in state.items():
        tensors["module." + name] = torch.from_numpy(np.ascontiguousarray(value))
        if name.endswith(".running_var"):  # real PyTorch BN state has this counter too
            tensors["module." + name[: -len("running_var")] + "num_batches_tracked"] = \
                torch.tensor(1000, dtype=torch.long)
    torch.save({"state_dict": tensors, "epoch": 200, "best_prec1": 74.0}, str(path))


def test_pytorch_checkpoint_converted_by_the_tool(official_npz, tmp_path):
    src = tmp_path / "mobilenext_1.0.pth.tar"
    _torch_checkpoint(official_state(official_npz), src)
    dst = tmp_path / "out" / "MobileNeXt_x1_0_pretrained.pdparams"
    result = run_tool(CONVERT, "--src", str(src), "--dst", str(dst), "--arch", "MobileNeXt_x1_0")
    assert result.returncode == 0, result.stderr
    assert sorted(os.listdir(dst.parent)) == [dst.name]  # no temp file left
    model = build_model({"name": "MobileNeXt_x1_0", "pretrained": str(dst)})
    assert max_diff(model, official_npz) < TOL


def _torch_names(state):
    """Our names back to PyTorch's, to fake an official checkpoint of another width."""
    out = {}
    for name, value in state.items():
        name = name.replace("._mean", ".running_mean").replace("._variance", ".running_var")
        out[name] = value.T if value.ndim == 2 else value
    return out


def test_converting_a_checkpoint_of_another_width_fails_whole(tmp_path):
    x0_75 = build_model({"name": "MobileNeXt_x0_75"})
    src = tmp_path / "mobilenext_0.75.pth"
    _torch_checkpoint(_torch_names(state_dict_numpy(x0_75)), src)
    dst = tmp_path / "MobileNeXt_x1_0.pdparams"
    result = run_tool(CONVERT, "--src", str(src), "--dst", str(dst), "--arch", "MobileNeXt_x1_0")
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    errors = error_lines(result.stderr)
    assert len(errors) == 1, result.stderr
    assert "shape differences" in errors[0]
    # stem conv: 24 channels at width 0.75, 32 at width 1.0
    assert "features.0.0.weight: checkpoint [24, 3, 3, 3] vs model [32, 3, 3, 3]" in errors[0]
    assert not dst.exists()
    assert sorted(os.listdir(tmp_path)) == [src.name]  # and no temp file


def test_mismatch_lists_missing_unexpected_and_shapes_and_loads_nothing(official_npz, tmp_path):
    state = torch_state_dict_to_paddle(official_state(official_npz))
    del state["features.3.conv.1._mean"]
    state["features.99.weight"] = np.zeros([3], "float32")
    state["classifier.1.bias"] = np.zeros([10], "float32")
    path = tmp_path / "bad.pdparams"
    save_state_dict(state, str(path))

    model = build_model({"name": "MobileNeXt_x1_0"})
    before = state_dict_numpy(model)
    with pytest.raises(CheckpointError) as info:
        load_pretrained(model, str(path))
    message = str(info.value)
    assert str(path) in message and "\n" not in message
    assert "1 missing keys (features.3.conv.1._mean)" in message
    assert "1 unexpected keys (features.99.weight)" in message
    assert "classifier.1.bias: checkpoint [10] vs model [1000]" in message
    after = state_dict_numpy(model)
    assert all(np.array_equal(before[k], after[k]) for k in before)


def test_finetuning_head_can_be_skipped_explicitly(official_npz, tmp_path):
    path = tmp_path / "imagenet.pdparams"
    save_state_dict(torch_state_dict_to_paddle(official_state(official_npz)), str(path))
    model = build_model({"name": "MobileNeXt_x1_0", "class_num": 10})
    with pytest.raises(CheckpointError, match="classifier.1.weight"):
        load_pretrained(model, str(path))
    head = model.classifier[1].weight.numpy().copy()
    load_pretrained(model, str(path), skip_mismatched_head=True)
    loaded = state_dict_numpy(model)
    reference = read_state_dict(str(path))
    assert np.array_equal(loaded["features.5.conv.3.weight"], reference["features.5.conv.3.weight"])
    assert np.array_equal(loaded["classifier.1.weight"], head)


@pytest.mark.parametrize("suffix", [".safetensors", ".pdparams"])
def test_round_trip_is_bit_exact(suffix, tmp_path):
    paddle.seed(7)
    model = build_model({"name": "MobileNeXt_x0_5", "class_num": 10})
    # non-trivial BN statistics, so they are part of what must survive
    model.train()
    model(paddle.randn([2, 3, 32, 32]))
    original = state_dict_numpy(model)
    path = tmp_path / ("weights" + suffix)
    save_state_dict(model.state_dict(), str(path))
    assert sorted(os.listdir(tmp_path)) == [path.name]

    read = read_state_dict(str(path))
    assert sorted(read) == sorted(original)
    for name, value in original.items():
        assert read[name].dtype == value.dtype and np.array_equal(read[name], value), name
    fresh = build_model({"name": "MobileNeXt_x0_5", "class_num": 10, "pretrained": str(path)})
    for name, value in state_dict_numpy(fresh).items():
        assert value.tobytes() == original[name].tobytes(), name


def test_save_replaces_an_existing_file_atomically(tmp_path):
    path = tmp_path / "w.safetensors"
    save_state_dict({"a": np.ones([2], "float32")}, str(path))
    save_state_dict({"a": np.full([3], 2.0, "float32")}, str(path))
    assert np.array_equal(read_state_dict(str(path))["a"], np.full([3], 2.0, "float32"))
    assert os.listdir(tmp_path) == ["w.safetensors"]
    with pytest.raises(CheckpointError, match="w.bin"):
        save_state_dict({"a": np.ones([2], "float32")}, str(tmp_path / "w.bin"))


def test_missing_file_and_pretrained_true_are_clear_errors(tmp_path):
    model = build_model({"name": "MobileNeXt_x0_35"})
    missing = str(tmp_path / "output" / "best_model")
    with pytest.raises(CheckpointError, match="not found: .*best_model"):
        load_pretrained(model, missing)
    with pytest.raises(CheckpointError, match="pass the path"):
        build_model({"name": "MobileNeXt_x0_35", "pretrained": True})
    garbage = tmp_path / "garbage.pdparams"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="garbage.pdparams"):
        load_pretrained(model, str(garbage))


def test_torch_mapping_renames_transposes_and_drops_counters():
    weight = np.arange(6, dtype="float32").reshape(3, 2)  # [out, in]
    mapped = torch_state_dict_to_paddle({"model": {
        "module.features.0.1.running_mean": np.zeros(4, "float32"),
        "module.features.0.1.running_var": np.ones(4, "float32"),
        "module.features.0.1.num_batches_tracked": np.array(5),
        "module.classifier.1.weight": weight,
        "module.classifier.1.bias": np.zeros(3, "float32"),
    }})
    assert sorted(mapped) == ["classifier.1.bias", "classifier.1.weight", "features.0.1._mean",
                              "features.0.1._variance"]
    assert np.array_equal(mapped["classifier.1.weight"], weight.T)


def test_head_skipping_follows_the_declared_classifier_layer(tmp_path):
    # weights.py knows no layer names: a model declaring another head gets that head skipped
    class Tiny(paddle.nn.Layer):
        classifier_layer = "head"

        def __init__(self, classes):
            super().__init__()
            self.body = paddle.nn.Linear(4, 3)
            self.head = paddle.nn.Linear(3, classes)

    source, target = Tiny(5), Tiny(2)
    path = tmp_path / "tiny.pdparams"
    save_state_dict(source.state_dict(), str(path))
    with pytest.raises(CheckpointError, match="head.weight: checkpoint \\[3, 5\\] vs model \\[3, 2\\]"):
        load_pretrained(target, str(path))
    head = target.head.weight.numpy().copy()
    load_pretrained(target, str(path), skip_mismatched_head=True)
    assert np.array_equal(target.body.weight.numpy(), source.body.weight.numpy())
    assert np.array_equal(target.head.weight.numpy(), head)
    Tiny.classifier_layer = None  # no declaration: nothing may be skipped
    with pytest.raises(CheckpointError, match="head.bias"):
        load_pretrained(target, str(path), skip_mismatched_head=True)


def test_pytorch_named_file_is_refused_with_the_conversion_command(official_npz, tmp_path):
    path = tmp_path / "torch_names.pdparams"
    save_state_dict(official_state(official_npz), str(path))
    model = build_model({"name": "MobileNeXt_x1_0"})
    with pytest.raises(CheckpointError, match="torch_names.pdparams uses PyTorch names.*"
                                              "tools/convert_weights.py"):
        load_pretrained(model, str(path))
