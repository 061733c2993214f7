"""Unit tests of the engine's parts: optimizer and LR schedules, EMA,
checkpoint files, training curves. Numbers are checked against formulas computed here with
numpy/math, not against the code's own output."""

import math
import os
import shutil

import numpy as np
import paddle
import pytest

from ppcls.arch import build_model
from ppcls.loss import build_loss
from ppcls.metric import build_metrics
from ppcls.optimizer import build_optimizer
from ppcls.utils.config import get_config
from ppcls.utils.errors import CheckpointError, ConfigError, DataError
from ppcls.engine.checkpoint import load_checkpoint, save_checkpoint
from helpers import COOLDOWN, RECIPE


@pytest.mark.parametrize("builder, section, listed", [
    (lambda s: build_loss(s), [{"FocalLoss": {}}], "CELoss"),
    (lambda s: build_metrics(s), [{"Top1": {}}], "TopkAcc"),
    (lambda s: build_optimizer(s, 10, 5, paddle.nn.Linear(2, 2)), {"name": "Adamm", "lr": 0.1}, "Momentum"),
    (lambda s: build_optimizer(s, 10, 5, paddle.nn.Linear(2, 2)),
     {"name": "Momentum", "lr": {"name": "Cosin", "learning_rate": 0.1}}, "Cosine"),
    (lambda s: build_loss(s), [{"CELoss": {"epsilonn": 0.1}}], "epsilonn"),
])
def test_unknown_names_list_the_registered_ones(builder, section, listed):
    with pytest.raises(ConfigError) as err:
        builder(section)
    assert listed in str(err.value)


def test_recipe_lr_schedule_is_warmup_then_cosine_per_epoch():
    cfg = get_config(RECIPE)
    model = paddle.nn.Linear(2, 2)
    _, plan = build_optimizer(cfg["Optimizer"], cfg["Global"]["epochs"], 2502, model)
    assert plan.by_epoch and cfg["Global"]["epochs"] == 200
    for epoch in range(200):
        if epoch < 3:
            expected = 1e-4 + (0.1 - 1e-4) * epoch / 3
        else:
            expected = 1e-5 + (0.1 - 1e-5) * (1 + math.cos(math.pi * (epoch - 3) / 197)) / 2
        assert plan.get_lr() == pytest.approx(expected, rel=1e-9, abs=1e-12), epoch
        plan.scheduler.step()
    cool = get_config(COOLDOWN)
    _, cplan = build_optimizer(cool["Optimizer"], cool["Global"]["epochs"], 2502, model)
    assert cool["Global"]["epochs"] == 210
    assert cool["Global"]["checkpoints"] == "./output/MobileNeXt_100/epoch_200"
    for _ in range(12):
        assert cplan.get_lr() == 1e-5
        cplan.scheduler.step()


def test_recipe_weight_decay_skips_bn_and_biases():
    """One Momentum step with zero gradients: only the L2 term moves the weights."""
    cfg = get_config(RECIPE)
    opt_cfg = dict(cfg["Optimizer"], lr={"name": "Constant", "learning_rate": 1.0})
    model = build_model({"name": "MobileNeXt_x0_35", "class_num": 10})
    optimizer, _ = build_optimizer(opt_cfg, 200, 10, model)
    before = {n: p.numpy().copy() for n, p in model.named_parameters()}
    out = model(paddle.randn([2, 3, 32, 32]))
    (out * 0).sum().backward()
    optimizer.step()
    coeff, mu = cfg["Optimizer"]["regularizer"]["coeff"], cfg["Optimizer"]["momentum"]
    decayed = kept = 0
    for name, p in model.named_parameters():
        if p.stop_gradient:  # BN running statistics
            continue
        if len(p.shape) == 1:  # BN gamma/beta, classifier bias
            np.testing.assert_array_equal(p.numpy(), before[name], err_msg=name)
            kept += 1
        else:  # nesterov: w -= lr * (g + mu * v), v = g = coeff * w
            np.testing.assert_allclose(p.numpy(), before[name] * (1 - (1 + mu) * coeff), rtol=1e-6,
                                       err_msg=name)
            decayed += 1
    assert decayed > 0 and kept > 0


def test_ema_follows_the_formula():
    from ppcls.engine import ModelEMA

    model = paddle.nn.Linear(3, 2)
    ema = ModelEMA(model, 0.9)
    w0 = model.weight.numpy().copy()
    paddle.assign(model.weight * 0 + 1.0, model.weight)
    ema.update(model)
    np.testing.assert_allclose(ema.model.weight.numpy(), 0.9 * w0 + 0.1, rtol=1e-6)
    with pytest.raises(ConfigError, match="EMA.decay"):
        ModelEMA(model, 1.5)


def _tiny_checkpoint(prefixes, epoch, seed):
    paddle.seed(seed)
    model = paddle.nn.Linear(4, 3)
    opt = paddle.optimizer.Momentum(0.1, parameters=model.parameters())
    model(paddle.ones([1, 4])).sum().backward()
    opt.step()
    save_checkpoint(prefixes, model.state_dict(), opt.state_dict(), {"epoch": epoch, "best_metric": 0.5})
    return model.weight.numpy().copy()


def test_checkpoint_roundtrip_and_mixed_files_are_refused(tmp_path):
    a, b = str(tmp_path / "latest"), str(tmp_path / "epoch_1")
    w1 = _tiny_checkpoint([a, b], 1, seed=1)
    ckpt = load_checkpoint(a + ".pdparams")  # with or without a suffix
    assert ckpt["pdstates"]["epoch"] == 1
    np.testing.assert_array_equal(ckpt["pdparams"]["weight"].numpy(), w1)
    assert not [f for f in os.listdir(tmp_path) if ".tmp" in f or f.endswith(".commit")]
    _tiny_checkpoint([a], 2, seed=2)
    shutil.copy(b + ".pdopt", a + ".pdopt")  # a mix of two checkpoints
    with pytest.raises(CheckpointError, match="latest.pdopt does not belong"):
        load_checkpoint(a)
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        load_checkpoint(str(tmp_path / "nothing"))


def test_paddleclas_checkpoint_without_hashes_loads(tmp_path):
    """PaddleClas writes .pdstates as {"metric": best, "epoch": n}; it can be resumed from."""
    model = paddle.nn.Linear(4, 3)
    opt = paddle.optimizer.Momentum(0.1, parameters=model.parameters())
    prefix = str(tmp_path / "epoch_3")
    paddle.save(model.state_dict(), prefix + ".pdparams")
    paddle.save(opt.state_dict(), prefix + ".pdopt")
    paddle.save({"metric": 0.61, "epoch": 3}, prefix + ".pdstates")
    ckpt = load_checkpoint(prefix)
    assert ckpt["pdstates"]["epoch"] == 3
    np.testing.assert_array_equal(ckpt["pdparams"]["weight"].numpy(), model.weight.numpy())
    os.remove(prefix + ".pdopt")
    with pytest.raises(CheckpointError, match="epoch_3.pdopt is missing"):
        load_checkpoint(prefix)


def test_curves_from_a_log(tmp_path):
    from ppcls.engine.curves import parse_log, plot_log

    log = tmp_path / "train.log"
    lines = []
    for epoch in (1, 2, 3):
        for it in (0, 5):
            lines.append(f"[2026/01/01 00:00:00] ppcls INFO: [Train][Epoch {epoch}/3][Iter: {it}/10]"
                         f"lr(LinearWarmup): {0.1 / epoch:.8f}, top1: 0.5, top5: 0.9, CELoss: 1.0, "
                         "loss: 1.0, batch_cost: 0.1s, reader_cost: 0.01, ips: 10.0 samples/s, eta: 0:00:01")
        lines.append(f"[2026/01/01 00:00:00] ppcls INFO: [Train][Epoch {epoch}/3][Avg]top1: {0.3 * epoch:.5f}, "
                     f"top5: 0.9, CELoss: {2.0 / epoch:.5f}, loss: {2.0 / epoch:.5f}")
        lines.append(f"[2026/01/01 00:00:00] ppcls INFO: [Eval][Epoch {epoch}][Avg]CELoss: 1.0, loss: 1.0, "
                     f"top1: {0.25 * epoch:.5f}, top5: 0.9")
    log.write_text("\n".join(lines) + "\n")
    data = parse_log(str(log))
    assert [x for x, _ in data["lr"]] == [0.0, 0.5, 1.0, 1.5, 2.0, 2.5]
    assert data["eval"][3]["top1"] == 0.75 and data["train"][2]["loss"] == 1.0
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        with pytest.raises(ConfigError, match="needs matplotlib"):
            plot_log(str(log), str(tmp_path / "c.png"))
        return
    png = plot_log(str(log), str(tmp_path / "c.png"))
    with open(png, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    (tmp_path / "empty.log").write_text("nothing here\n")
    with pytest.raises(DataError, match="no \\[Train\\]"):
        parse_log(str(tmp_path / "empty.log"))


@pytest.mark.parametrize("key,value", [("eval_mode", "retrieval")])  # use_dali: tests/optimizer/test_vocabulary.py
def test_paddleclas_global_keys_we_cannot_honour_are_refused(tmp_path, key, value):
    from ppcls.engine.engine import Engine
    from ppcls.utils.errors import ConfigError

    cfg = {"Global": {"device": "cpu", "output_dir": str(tmp_path), key: value},
           "Arch": {"name": "MobileNeXt_x0_35", "class_num": 10},
           "Loss": {"Train": [{"CELoss": {"weight": 1.0}}]},
           "Optimizer": {"name": "Momentum", "momentum": 0.9, "lr": {"name": "Constant", "learning_rate": 0.1}}}
    with pytest.raises(ConfigError, match=f"Global.{key}"):
        Engine(cfg, mode="train")
