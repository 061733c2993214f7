"""ppcls.metric on arrays: TopkAcc against numpy's argsort."""

import numpy as np
import paddle
import pytest

from ppcls.metric import build_metrics


def test_topk_accuracy_matches_argsort():
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(50, 10)).astype("float32")
    labels = rng.integers(0, 10, size=50)
    hits = build_metrics([{"TopkAcc": {"topk": [1, 5]}}])(paddle.to_tensor(logits), paddle.to_tensor(labels))
    order = np.argsort(-logits, axis=1)
    assert float(hits["top1"].mean()) == pytest.approx((order[:, 0] == labels).mean())
    assert float(hits["top5"].mean()) == pytest.approx((order[:, :5] == labels[:, None]).any(1).mean())
