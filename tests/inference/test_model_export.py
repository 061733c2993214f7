"""The partial shortcut (identity_tensor_multiplier < 1) trains and exports with paddle.jit.save."""

import os

import numpy as np
import paddle
import pytest
from paddle.static import InputSpec

from ppcls.arch import build_model
from ppcls.utils.weights import state_dict_numpy

SIZE = 64  # small input: the network is fully convolutional, the export is the same


def test_identity_multiplier_half_trains_and_exports(tmp_path):
    paddle.seed(0)
    np.random.seed(0)
    model = build_model({"name": "MobileNeXt_x1_0", "class_num": 10,
                         "identity_tensor_multiplier": 0.5})

    # one SGD step on random data
    model.train()
    images = paddle.to_tensor(np.random.rand(4, 3, SIZE, SIZE).astype("float32"))
    labels = paddle.to_tensor(np.random.randint(0, 10, size=[4, 1]).astype("int64"))
    before = state_dict_numpy(model)
    optimizer = paddle.optimizer.SGD(learning_rate=0.1, parameters=model.parameters())
    loss = paddle.nn.functional.cross_entropy(model(images), labels)
    loss.backward()
    optimizer.step()
    optimizer.clear_grad()
    assert np.isfinite(float(loss))
    after = state_dict_numpy(model)
    assert not np.array_equal(before["features.0.0.weight"], after["features.0.0.weight"])
    assert not np.array_equal(before["classifier.1.weight"], after["classifier.1.weight"])

    # export, load the exported program, compare with dygraph
    model.eval()
    prefix = str(tmp_path / "inference")
    paddle.jit.save(model, prefix, input_spec=[InputSpec([None, 3, SIZE, SIZE], "float32", "x")])
    assert os.path.isfile(prefix + ".pdiparams")
    assert os.path.isfile(prefix + ".json") or os.path.isfile(prefix + ".pdmodel")
    x = np.random.rand(3, 3, SIZE, SIZE).astype("float32")  # another batch size than in training
    with paddle.no_grad():
        expected = model(paddle.to_tensor(x)).numpy()
    loaded = paddle.jit.load(prefix)
    loaded.eval()
    got = loaded(paddle.to_tensor(x)).numpy()
    assert got.shape == (3, 10)
    assert np.abs(got - expected).max() < 1e-5


def test_identity_multiplier_changes_what_the_shortcut_adds():
    """Same weights, multiplier 1 vs 0.5: the half shortcut must give another output."""
    paddle.seed(1)
    full = build_model({"name": "MobileNeXt_x0_5", "class_num": 10})
    half = build_model({"name": "MobileNeXt_x0_5", "class_num": 10,
                        "identity_tensor_multiplier": 0.5})
    half.set_state_dict(full.state_dict())
    full.eval()
    half.eval()
    x = paddle.rand([1, 3, 32, 32])
    with paddle.no_grad():
        a, b = full.features(x).numpy(), half.features(x).numpy()
    assert np.abs(a - b).max() > 1e-3 * np.abs(a).max()


@pytest.mark.parametrize("multiplier", [1 / 3, 0.5])
def test_partial_shortcut_adds_to_the_first_channels_only(multiplier):
    """Official rule: the shortcut adds the first C // div input channels (m = 1 / div)."""
    paddle.seed(2)
    # x0_35: 104-channel blocks, where round(104 / 3) = 35 but the official 104 // 3 = 34
    model = build_model({"name": "MobileNeXt_x0_35", "identity_tensor_multiplier": multiplier})
    model.eval()
    block = next(b for b in model.features
                 if getattr(b, "use_shortcut", False) and b.conv[0]._in_channels == 104)
    div = round(1 / multiplier)
    x = paddle.rand([1, 104, 8, 8])
    with paddle.no_grad():
        out = block(x).numpy()
        body = block.conv(x).numpy()
    reference = body.copy()
    reference[:, : 104 // div] += x.numpy()[:, : 104 // div]
    assert np.abs(out - reference).max() < 1e-6
