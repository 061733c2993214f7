"""ppcls.loss on arrays: CELoss (label smoothing, hard and soft targets), SoftTargetCrossEntropy
and MixCELoss, against cross-entropy computed here with numpy."""

import numpy as np
import paddle
import pytest

from ppcls.loss import build_loss


def _log_softmax(z):
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def test_celoss_label_smoothing_matches_formula():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(6, 10)).astype("float32") * 3
    labels = rng.integers(0, 10, size=6)
    loss = build_loss([{"CELoss": {"weight": 1.0, "epsilon": 0.1}}])
    out = loss(paddle.to_tensor(logits), paddle.to_tensor(labels))
    target = np.full((6, 10), 0.1 / 10) + np.eye(10)[labels] * 0.9
    expected = -(target * _log_softmax(logits.astype("float64"))).sum(axis=1).mean()
    assert set(out) == {"CELoss", "loss"}
    assert float(out["CELoss"]) == pytest.approx(expected, rel=1e-5)
    plain = build_loss([{"CELoss": {"weight": 2.0}}])(paddle.to_tensor(logits), paddle.to_tensor(labels))
    expected_plain = -_log_softmax(logits.astype("float64"))[np.arange(6), labels].mean()
    assert float(plain["CELoss"]) == pytest.approx(expected_plain, rel=1e-5)
    assert float(plain["loss"]) == pytest.approx(2 * expected_plain, rel=1e-5)


def _logits():
    return paddle.to_tensor(np.random.default_rng(0).normal(size=(4, 5)).astype("float32"))


def _ref_ce(logits, targets):
    z = logits - logits.max(axis=1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return float(-(targets * logp).sum(axis=1).mean())


def test_losses_on_soft_targets():
    logits = _logits()
    soft = np.zeros((4, 5), np.float32)
    soft[np.arange(4), [0, 1, 2, 3]] = 0.7
    soft[np.arange(4), [4, 0, 1, 2]] += 0.3
    x = logits.numpy()
    got = build_loss([{"CELoss": {"weight": 1.0}}])(logits, paddle.to_tensor(soft))
    assert float(got["loss"]) == pytest.approx(_ref_ce(x, soft), rel=1e-5)
    smooth = soft * 0.9 + 0.1 / 5
    got = build_loss([{"CELoss": {"epsilon": 0.1}}])(logits, paddle.to_tensor(soft))
    assert float(got["CELoss"]) == pytest.approx(_ref_ce(x, smooth), rel=1e-5)
    got = build_loss([{"SoftTargetCrossEntropy": {"weight": 2.0}}])(logits, paddle.to_tensor(soft))
    assert float(got["loss"]) == pytest.approx(2 * _ref_ce(x, soft), rel=1e-5)
    got = build_loss([{"MixCELoss": {"weight": 1.0}}])(logits, paddle.to_tensor(soft))
    assert float(got["loss"]) == pytest.approx(_ref_ce(x, soft), rel=1e-5)
    # a one-hot soft target equals the hard label
    hard = paddle.to_tensor(np.array([0, 1, 2, 3]))
    onehot = np.eye(5, dtype=np.float32)[[0, 1, 2, 3]]
    ce = build_loss([{"CELoss": {}}])
    via_soft = float(ce(logits, paddle.to_tensor(onehot))["loss"])
    assert float(ce(logits, hard)["loss"]) == pytest.approx(via_soft, rel=1e-6)
