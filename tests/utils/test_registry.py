"""A new transform op, loss and LR schedule is one decorated class: the examples of
docs/design.md, registered here and built from YAML-like dicts by the real builders."""

import numpy as np
import paddle
import pytest

from ppcls.data.preprocess import OPS, create_operators, transform
from ppcls.loss import LOSSES, build_loss
from ppcls.optimizer import LR_SCHEDULES, build_lr
from ppcls.utils.errors import ConfigError


@pytest.fixture
def registered():
    """Register classes for one test and take them out again afterwards."""
    added = []

    def add(registry, cls):
        registry.register(cls)
        added.append((registry, cls.__name__))
        return cls

    yield add
    for registry, name in added:
        registry._items.pop(name)


def test_new_transform_op(registered):
    class AddConstant:
        """Add ``value`` to every pixel."""

        def __init__(self, value=1.0):
            self.value = float(value)

        def __call__(self, img, rng=None):
            return img + self.value

    registered(OPS, AddConstant)
    ops = create_operators([{"AddConstant": {"value": 2.5}}, "ToCHWImage"], where="Infer.transforms")
    out = transform(np.zeros((4, 6, 3), np.float32), ops)
    assert out.shape == (3, 4, 6) and np.all(out == 2.5)
    with pytest.raises(ConfigError, match=r"^Infer.transforms.0.AddConstant: op AddConstant does not "
                                          r"take key 'valeu' \(did you mean 'value'\?\); it takes: value$"):
        create_operators([{"AddConstant": {"valeu": 2}}], where="Infer.transforms")


def test_new_loss(registered):
    class SquaredError(paddle.nn.Layer):
        """Mean squared distance between the softmax and the one-hot label, times ``scale``."""

        def __init__(self, scale=1.0):
            super().__init__()
            self.scale = scale

        def forward(self, logits, labels):
            onehot = paddle.nn.functional.one_hot(labels.reshape([-1]), logits.shape[-1])
            return self.scale * ((paddle.nn.functional.softmax(logits) - onehot) ** 2).mean()

    registered(LOSSES, SquaredError)
    loss = build_loss([{"SquaredError": {"weight": 0.5, "scale": 2.0}}], "Loss.Train")
    logits = np.array([[2.0, 0.0, -1.0], [0.0, 1.0, 0.0]], np.float32)
    labels = np.array([0, 2])
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    expected = 2.0 * ((p - np.eye(3)[labels]) ** 2).mean()
    out = loss(paddle.to_tensor(logits), paddle.to_tensor(labels))
    assert float(out["SquaredError"]) == pytest.approx(expected, rel=1e-6)
    assert float(out["loss"]) == pytest.approx(0.5 * expected, rel=1e-6)
    with pytest.raises(ConfigError, match="Loss.Train.0.SquaredError: loss SquaredError does not take key 'scael'"):
        build_loss([{"SquaredError": {"scael": 2.0}}], "Loss.Train")


def test_new_lr_schedule(registered):
    class Straight(paddle.optimizer.lr.LRScheduler):  # (ppcls has its own Linear now)
        """Straight from ``learning_rate`` to ``end_lr`` over the run (after the warm-up)."""

        def __init__(self, learning_rate, end_lr=0.0, *, total_steps, warmup_steps):
            self.end_lr, self.steps = end_lr, total_steps - warmup_steps
            super().__init__(learning_rate)

        def get_lr(self):
            return self.base_lr + (self.end_lr - self.base_lr) * min(self.last_epoch, self.steps) / self.steps

    registered(LR_SCHEDULES, Straight)
    plan = build_lr({"name": "Straight", "learning_rate": 0.1, "end_lr": 0.0, "by_epoch": True,
                     "warmup_epoch": 1, "warmup_start_lr": 0.02}, epochs=5, step_each_epoch=7)
    rates = []
    for _ in range(5):
        rates.append(plan.get_lr())
        plan.scheduler.step()
    # one warm-up epoch from 0.02, then 0.1 falling by 0.1/4 an epoch (warm-up by build_lr)
    assert rates == pytest.approx([0.02, 0.1, 0.075, 0.05, 0.025])
    assert plan.name == "LinearWarmup"
    with pytest.raises(ConfigError, match=r"unknown config key 'Optimizer.lr.end_rl' \(did you mean 'end_lr'\?\)"):
        build_lr({"name": "Straight", "learning_rate": 0.1, "end_rl": 0.0}, epochs=5, step_each_epoch=7)
    with pytest.raises(ConfigError, match=r"Optimizer.lr.name: unknown LR schedule 'Linaer'.*did you mean 'Linear'"):
        build_lr({"name": "Linaer", "learning_rate": 0.1}, epochs=5, step_each_epoch=7)
