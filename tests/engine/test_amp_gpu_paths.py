"""The GPU paths (AMP O1/O2 train, eval, save, resume, export; resume on another GPU count),
driven on CPU through the same engine code.

Paddle switches its AMP machinery off on CPU (``auto_cast``, ``decorate`` and ``GradScaler``
check the tracer's place), so these tests switch it back on: the tracer reports a GPU place to
``paddle.amp``'s checks, and the two CUDA-only kernels the GPU branch needs for float16 on CPU
(``check_finite_and_unscale``, ``momentum`` with master weights) get a numpy-level stand-in that
computes what the CUDA kernel computes. Everything else (casting, master weights, the scaler's
state machine, our engine and checkpoint code) is Paddle's and ours, unchanged.
"""

import copy
import os
import sys
import types

import numpy as np
import pytest

from helpers import QUICKSTART, tiny_data, tiny_overrides  # noqa: F401


# --------------------------------------------------------------------------- forcing Paddle's GPU branch


class _GpuPlace:
    def __init__(self, real):
        self._real = real

    def is_gpu_place(self):
        return True

    def is_xpu_place(self):
        return False

    def is_custom_place(self):
        return False

    def __getattr__(self, name):
        return getattr(self._real, name)

    def __repr__(self):
        return "Place(gpu:0, forced by the test)"


class _Tracer:
    """The real tracer, except that its expected place says GPU."""

    def __init__(self, real):
        object.__setattr__(self, "_real", real)

    def __getattr__(self, name):
        if name == "_expected_place":
            return _GpuPlace(self._real._expected_place)
        return getattr(self._real, name)

    def __setattr__(self, name, value):
        setattr(self._real, name, value)


def _check_finite_and_unscale(xs, scale, outs, found_inf):
    """CPU stand-in for the CUDA kernel (Paddle registers no float16 CPU kernel for it)."""
    import paddle

    inv = 1.0 / float(scale.numpy().reshape(-1)[0])
    bad = False
    for x, out in zip(xs, outs):
        v = x.astype("float32")
        bad = bad or not bool(paddle.isfinite(v).all())
        paddle.assign((v * inv).astype(x.dtype), output=out)
    paddle.assign(paddle.to_tensor([bad]), output=found_inf)


def _momentum_stand_in(real_ops):
    """``_C_ops.momentum_`` for float16 parameters with float32 master weights on CPU (the CUDA
    kernel's arithmetic: l2 decay and momentum on the master weight, then the cast)."""
    import paddle

    def momentum_(param, grad, velocity, lr, master, mu, nesterov, reg_method, reg_coeff,
                  multi_precision, rescale_grad):
        if param.dtype == paddle.float32:
            return real_ops.momentum_(param, grad, velocity, lr, master, mu, nesterov, reg_method,
                                      reg_coeff, multi_precision, rescale_grad)
        assert multi_precision and master is not None
        g = grad.astype("float32") * rescale_grad
        if reg_method == "l2_decay":
            g = g + reg_coeff * master
        v = mu * velocity + g
        step = (g + mu * v) if nesterov else v
        new_master = master - lr.astype("float32") * step
        paddle.assign(v, output=velocity)
        paddle.assign(new_master, output=master)
        paddle.assign(new_master.astype(param.dtype), output=param)
        return param, velocity, master

    return momentum_


def force_gpu_amp(monkeypatch):
    """Paddle's and our AMP code take their GPU branch on this CPU."""
    import paddle
    from paddle.base import framework

    import ppcls.engine.amp as amp

    auto_cast = sys.modules["paddle.amp.auto_cast"]
    grad_scaler = sys.modules["paddle.amp.grad_scaler"]
    momentum = sys.modules["paddle.optimizer.momentum"]
    real = framework._dygraph_tracer
    for mod in (auto_cast, grad_scaler):
        monkeypatch.setattr(mod, "_dygraph_tracer", lambda: _Tracer(real()))
    monkeypatch.setattr(auto_cast, "_is_gpu_float16_supported", lambda: True)
    monkeypatch.setattr(grad_scaler, "_legacy_C_ops",
                        types.SimpleNamespace(check_finite_and_unscale=_check_finite_and_unscale))
    real_ops = momentum._C_ops
    ops = types.SimpleNamespace(momentum_=_momentum_stand_in(real_ops))
    monkeypatch.setattr(momentum, "_C_ops", ops)
    monkeypatch.setattr(amp, "amp_available", lambda device: True)
    steps = []  # (inf/nan found, loss scale after the update) of every step
    real_update = paddle.amp.GradScaler.update

    def update(self):
        found = self._cache_found_inf
        found = bool(np.asarray(found.numpy() if hasattr(found, "numpy") else found).any())
        real_update(self)
        steps.append((found, float(self._scale.numpy().reshape(-1)[0])))

    monkeypatch.setattr(paddle.amp.GradScaler, "update", update)
    amp.test_steps = steps
    return amp


@pytest.fixture
def gpu_amp(monkeypatch):
    return force_gpu_amp(monkeypatch)


# --------------------------------------------------------------------------- the cycle

AMP = {"O1": {"level": "O1", "scale_loss": 1024.0, "use_dynamic_loss_scaling": True,
              "incr_every_n_steps": 2},
       "O2": {"level": "O2", "scale_loss": 1024.0, "use_dynamic_loss_scaling": True,
              "incr_every_n_steps": 2}}
ITERS = 2  # steps an epoch; 2 epochs


def _config(root, out, level, **global_keys):
    from ppcls.utils.config import get_config

    cfg = get_config(QUICKSTART, tiny_overrides(root, out, epochs=2, max_iters_per_epoch=ITERS,
                                                fast_cpu=False, save_interval=1, **global_keys))
    cfg["AMP"] = copy.deepcopy(AMP[level])
    return cfg


def _weights(engine, hook=False):
    return {k: v.numpy().copy() for k, v in engine.bare_model.state_dict(use_hook=hook).items()}


def _dtypes(engine):
    return {str(v.dtype) for v in engine.bare_model.state_dict(use_hook=False).values()}


def _master(engine):
    state = engine.optimizer.state_dict().get("master_weights", {})
    names = {p.name: n for n, p in engine.bare_model.named_parameters()}
    return {names[k]: v.numpy().copy() for k, v in state.items()}


def _cycle(root, tmp, level):
    from ppcls.engine.engine import Engine
    from ppcls.inference.export import export_model

    from paddle.utils import unique_name

    out = {}
    with unique_name.guard():  # Paddle's internal names as in a fresh process
        straight = Engine(_config(root, str(tmp / "straight"), level), mode="train")
        out["init"] = _weights(straight)
        straight.train()
    out["straight"] = straight
    ckpt = os.path.join(str(tmp / "straight"), "MobileNeXt_x0_35")
    with unique_name.guard():
        resumed = Engine(_config(root, str(tmp / "resumed"), level,
                                 checkpoints=os.path.join(ckpt, "epoch_1")), mode="train")
        out["resumed_start_epoch"] = resumed.start_epoch
        resumed.train()
    out["resumed"] = resumed
    ev = _config(root, str(tmp / "eval"), level, pretrained_model=os.path.join(ckpt, "latest"))
    out["eval"] = Engine(ev, mode="eval").evaluate()
    ev["Global"]["save_inference_dir"] = str(tmp / "export")
    ev["Infer"]["PostProcess"]["class_id_map_file"] = os.path.join(root, "label_list.txt")
    out["export"] = export_model(ev)
    return out


@pytest.fixture(scope="module", params=["O1", "O2"])
def amp_cycle(request, tiny_data, tmp_path_factory):  # noqa: F811
    mp = pytest.MonkeyPatch()
    try:
        steps = force_gpu_amp(mp).test_steps
        result = _cycle(tiny_data[0], tmp_path_factory.mktemp(f"amp_{request.param}"),
                        request.param)
    finally:
        mp.undo()
    result["steps"] = list(steps)
    return request.param, result


def test_amp_cycle_trains_with_loss_scaling_and_changes_weights(amp_cycle):
    level, r = amp_cycle
    eng = r["straight"]
    assert eng.scaler is not None and eng.scaler.is_enable()
    # The scale follows the configured rule over the 6 steps of the uninterrupted run: halved
    # on a step with inf/nan gradients, doubled after every 2 finite steps in a row.
    steps = r["steps"][:2 * ITERS]
    assert len(steps) == 2 * ITERS
    scale, good = 1024.0, 0
    for found, after in steps:
        if found:
            scale, good = scale * 0.5, 0
        else:
            good += 1
            if good == 2:
                scale, good = scale * 2.0, 0
        assert after == scale, steps
    assert sum(not f for f, _ in steps) >= 3 and scale > 1024.0 * (0.5 if level == "O2" else 1)
    assert float(eng.scaler.state_dict()["scale"][0]) == scale
    after = _weights(eng, hook=True)
    changed = [k for k in after if k.endswith("weight") and not np.array_equal(after[k], r["init"][k])]
    assert len(changed) > 10
    if level == "O2":
        assert "paddle.float16" in _dtypes(eng)      # decorate cast the convolutions
        assert len(_master(eng)) > 10                 # and the optimizer keeps fp32 masters
    else:
        assert _dtypes(eng) == {"paddle.float32"}


def test_amp_resume_equals_the_uninterrupted_run(amp_cycle):
    level, r = amp_cycle
    a, b = r["straight"], r["resumed"]
    assert r["resumed_start_epoch"] == 1
    assert float(b.scaler.state_dict()["scale"][0]) == float(a.scaler.state_dict()["scale"][0])
    wa, wb = _weights(a), _weights(b)
    assert set(wa) == set(wb)
    for k in wa:
        assert wa[k].dtype == wb[k].dtype, k
        if level == "O2":
            np.testing.assert_array_equal(wa[k], wb[k], err_msg=k)
        else:
            np.testing.assert_allclose(wa[k], wb[k], rtol=0, atol=1e-6, err_msg=k)
    if level == "O2":
        ma, mb = _master(a), _master(b)
        assert ma and set(ma) == set(mb)
        for k in ma:
            assert ma[k].dtype == np.float32
            np.testing.assert_array_equal(ma[k], mb[k], err_msg=k)


def test_amp_eval_and_export_after_training(amp_cycle):
    level, r = amp_cycle
    res = r["eval"]
    assert 0.0 <= res["top1"] <= 1.0 and np.isfinite(res["loss"])
    assert os.path.isfile(os.path.join(r["export"], "inference.json")) or \
        os.path.isfile(os.path.join(r["export"], "inference.pdmodel"))
    # the checkpoint is PaddleClas's float32 format whatever the level
    from helpers import load_params

    params, _ = load_params(os.path.join(os.path.dirname(r["export"]), "straight",
                                         "MobileNeXt_x0_35", "latest"))
    assert {v.dtype for v in params.values()} == {np.dtype("float32")}


# --------------------------------------------------------------------------- smaller rules


def test_gpu_rng_resume_on_another_device_count_warns_once_and_continues(monkeypatch, caplog):
    import random

    import paddle

    from ppcls.engine import checkpoint
    from ppcls.utils import logger

    np.random.seed(3)
    random.seed(3)
    state = checkpoint.rng_state("cpu")
    expected = (np.random.rand(), random.random(), float(paddle.rand([1]).numpy()[0]))
    state["paddle_gpu"] = ["state-of-card-%d" % i for i in range(4)]  # a 4-card run
    calls = []
    real_set = paddle.set_rng_state
    monkeypatch.setattr(paddle, "set_rng_state",
                        lambda s, device=None: calls.append(device) if device == "gpu" else real_set(s, device))
    monkeypatch.setattr(checkpoint, "gpu_count", lambda: 1)  # CUDA_VISIBLE_DEVICES=0
    warnings = []
    monkeypatch.setattr(logger, "warning", lambda msg, *a: warnings.append(msg))
    checkpoint.set_rng_state(state, "gpu", source="latest.pdstates")
    assert len(warnings) == 1 and "4 device(s)" in warnings[0] and "sees 1" in warnings[0]
    assert calls == []  # Paddle's set_rng_state would raise ValueError on the length
    assert (np.random.rand(), random.random(), float(paddle.rand([1]).numpy()[0])) == expected
    monkeypatch.setattr(checkpoint, "gpu_count", lambda: 4)  # same count: restored, no warning
    checkpoint.set_rng_state(state, "gpu")
    assert calls == ["gpu"] and len(warnings) == 1


def test_amp_section_on_cpu_trains_in_float32_with_one_warning(monkeypatch):
    from ppcls.engine import amp
    from ppcls.utils import logger

    warnings = []
    monkeypatch.setattr(logger, "warning", lambda msg, *a: warnings.append(msg))
    cfg = {"AMP": {"scale_loss": 65536, "use_dynamic_loss_scaling": True, "level": "O2"}}
    assert amp.amp_settings(cfg, "cpu") is None
    assert len(warnings) == 1 and "float32" in warnings[0] and "cpu" in warnings[0]
    with pytest.raises(Exception, match="AMP.level"):  # a typo is still an error on CPU
        amp.amp_settings({"AMP": {"level": "O3"}}, "cpu")


def test_amp_gpu_settings_force_fp16_eval_under_o2_and_name_scaler_defaults(monkeypatch):
    import paddle

    from ppcls.engine import amp
    from ppcls.utils import logger

    msgs = []
    monkeypatch.setattr(logger, "warning", lambda msg, *a: msgs.append(("W", msg)))
    monkeypatch.setattr(logger, "info", lambda msg, *a: msgs.append(("I", msg)))
    o2 = amp.amp_settings({"AMP": {"level": "o2", "use_fp16_test": False}}, "gpu")
    assert o2["level"] == "O2" and o2["use_fp16_test"] is True
    assert sum("use_fp16_test" in m for _, m in msgs) == 1
    assert amp.amp_settings({"AMP": {"level": "O1"}}, "gpu")["use_fp16_test"] is False
    msgs.clear()
    kwargs, line = amp.scaler_arguments({"level": "O1"})
    defaults = paddle.amp.GradScaler.__init__.__defaults__
    assert kwargs == {} and "init_loss_scaling=65536.0 (Paddle default)" in line
    assert 65536.0 in defaults
    kwargs, line = amp.scaler_arguments({"scale_loss": 128.0, "use_dynamic_loss_scaling": False})
    assert kwargs == {"init_loss_scaling": 128.0, "use_dynamic_loss_scaling": False}
    assert "init_loss_scaling=128.0 (config)" in line and "incr_ratio=2.0 (Paddle default)" in line
    amp.build_scaler({"level": "O1"})  # on CPU Paddle disables it; the warning is ours
    assert [k for k, m in msgs if "names no loss-scaling key" in m] == ["W"]


def test_gpu_to_static_asks_for_paddle_kernels_not_cinn(monkeypatch, tiny_data, tmp_path):  # noqa: F811
    import paddle
    from paddle.jit.dy2static import utils as d2s
    from paddle.jit.api import Backend

    from ppcls.engine.engine import Engine
    from ppcls.utils.config import get_config

    # On a CUDA build with CINN, 3.3.1's default backend ("CINN") compiles with CINN; None does not.
    monkeypatch.setattr(d2s, "cinn_is_available", lambda: True)
    strategy = paddle.static.BuildStrategy()
    assert d2s.infer_use_cinn_backend(Backend.from_arg("CINN"), strategy)
    assert not d2s.infer_use_cinn_backend(Backend.from_arg(None), strategy)
    calls = []
    monkeypatch.setattr(paddle.jit, "to_static", lambda model, **kw: calls.append(kw) or model)
    cfg = get_config(QUICKSTART, tiny_overrides(tiny_data[0], str(tmp_path), to_static=True))
    Engine(cfg, mode="train")
    assert calls and all("backend" in kw and kw["backend"] is None for kw in calls)


def test_gpu_worker_wait_limit_setting(monkeypatch):
    """The bound on the wait for loader workers (the shared-memory deadlock the GPU path may
    hit): PPCLS_LOADER_TIMEOUT seconds, 0 for none, anything else one clear error. The stuck
    worker itself is tested in tests/engine/test_failures.py (stopped with one line)."""
    from ppcls.data.loader import wait_limit
    from ppcls.utils.errors import ConfigError

    monkeypatch.delenv("PPCLS_LOADER_TIMEOUT", raising=False)
    assert wait_limit() == 600
    monkeypatch.setenv("PPCLS_LOADER_TIMEOUT", "2")
    assert wait_limit() == 2
    monkeypatch.setenv("PPCLS_LOADER_TIMEOUT", "soon")
    with pytest.raises(ConfigError, match="PPCLS_LOADER_TIMEOUT"):
        wait_limit()
    monkeypatch.setenv("PPCLS_LOADER_TIMEOUT", "0")
    assert wait_limit() is None


def test_amp_bfloat16_on_cpu_is_not_offered_by_paddle_3_3():
    """Why the cycle above forces the GPU branch instead of using bfloat16 on CPU: Paddle 3.3.1's
    auto_cast is a no-op on a CPU place for both dtypes (if this fails, Paddle gained CPU AMP and
    the CPU warning in ppcls/engine/amp.py should be revisited)."""
    import warnings

    import paddle

    layer = paddle.nn.Linear(4, 4)
    x = paddle.ones([2, 4])
    for dtype in ("bfloat16", "float16"):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with paddle.amp.auto_cast(level="O1", dtype=dtype):
                out = layer(x)
        assert out.dtype == paddle.float32
        assert any("can only be enabled on" in str(w.message) for w in caught)
