"""The fast CPU training path (ppcls/ops/fast_cpu) computes what Paddle's kernels compute.

* Whole network, float64: the fast path's forward output, every parameter's gradient and
  the BN running statistics equal the plain Paddle path's within 1e-4 relative (measured:
  ~1e-10). float64 because float32 cannot make that comparison meaningful: plain Paddle in
  float32 already differs from plain Paddle in float64 by up to ~1e-1 on single
  parameters of this network (a ReLU6 input within rounding of 0 or 6 flips its gradient,
  and 25 BN shifts have gradients that are exactly zero in exact arithmetic), so two
  float32 implementations never agree to 1e-4 everywhere; at this size even training is
  chaotic (in float64, scaling the weights by 1 + 1e-6 noise moves the loss after one SGD
  step by 3%). The kernels run the same code in both precisions (one C++ template).
* Each operator in float32 against Paddle's own float32 kernel: stride 1 and 2, odd sizes,
  1x1 maps, both batch-norm regimes, with and without ReLU6.
* The float32 network: same logits and running statistics.
* The official fixture logits through the fast layers; export under to_static falls back
  to Paddle's kernels; a missing compiler or a failed build means one warning and correct
  results on Paddle's kernels.

The first test run compiles the operators once (about 25 s on 2 cores) into the user cache.
"""

import copy
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import paddle
import paddle.nn.functional as F
import pytest
from paddle import _C_ops, nn

from conftest import ROOT
from ppcls.arch import build_model
from ppcls.ops import fast_cpu
from ppcls.ops.fast_cpu import runtime
from ppcls.utils.torch_weights import torch_state_dict_to_paddle
from ppcls.utils.weights import load_state_dict

TOL = 1e-4


@pytest.fixture(scope="module", autouse=True)
def ops():
    """Build (first run only) and load the operators; the fast path must be available here."""
    assert not runtime.disabled_by_env(), f"unset {runtime.ENV_SWITCH} to run these tests"
    assert runtime.load(), f"fast CPU operators failed to build: {runtime.last_error()}"
    runtime.set_threads(2)


def rel(a, b):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-30))


def mobilenext(dtype="float32", seed=0):
    paddle.seed(seed)
    model = build_model({"name": "MobileNeXt_x1_0", "class_num": 10, "dropout": 0.0})
    model.train()
    if dtype != "float32":
        model.to(dtype=dtype)
    return model


def step(model, x, y):
    """One forward/backward: (logits, {trainable parameter: grad}, {state name: value})."""
    logits = model(x)
    F.cross_entropy(logits, y).backward()
    grads = {n: p.grad.numpy() for n, p in model.named_parameters() if not p.stop_gradient}
    state = {k: v.numpy() for k, v in model.state_dict().items()}
    return logits.numpy(), grads, state


# ------------------------------------------------------------------ whole network, float64

@pytest.mark.parametrize("size,batch", [(37, 8), (32, 2)])
def test_network_gradients_equal_plain_path(size, batch):
    # 37: odd sizes at every stride (37-19-10-5-3-2), every layer big enough for two threads;
    # 32: maps down to 1x1.
    plain = mobilenext("float64")
    fast = copy.deepcopy(plain)
    switched = fast_cpu.enable(fast)
    assert switched == 147  # 33 depthwise + 40 pointwise convolutions + 74 batch norms
    rng = np.random.default_rng(0)
    x = paddle.to_tensor(rng.standard_normal((batch, 3, size, size)))
    y = paddle.to_tensor(rng.integers(0, 10, (batch, 1)))

    out_p, grads_p, state_p = step(plain, x, y)
    out_f, grads_f, state_f = step(fast, x, y)

    assert rel(out_f, out_p) < TOL
    assert grads_f.keys() == grads_p.keys() and len(grads_p) == 224  # 74 convs, 74 BN x 2, classifier x 2
    largest = max(np.abs(g).max() for g in grads_p.values())
    for name, g in grads_p.items():
        if np.abs(g).max() < 1e-9 * largest:
            # Exactly zero in exact arithmetic (a BN shift followed by a bias-free linear
            # conv and a training-mode BN): both must be rounding noise.
            assert np.abs(grads_f[name]).max() < 1e-9 * largest, name
        else:
            assert rel(grads_f[name], g) < TOL, name
    assert state_f.keys() == state_p.keys()
    for name, v in state_p.items():
        scale = max(np.abs(v).max(), 1.0) if name.endswith("_mean") else np.abs(v).max()
        assert np.abs(state_f[name] - v).max() <= TOL * scale, name


def test_switch_keeps_names_and_reverts():
    model = mobilenext()
    keys = list(model.state_dict().keys())
    kinds = {type(layer).__name__ for layer in model.sublayers()}
    assert fast_cpu.enable(model) == 147
    assert list(model.state_dict().keys()) == keys
    assert isinstance(model.features[1].conv[0], nn.Conv2D)  # still a Conv2D for user code
    assert fast_cpu.disable(model) == 147 + 36  # and the 36 fused ReLU6 layers
    assert {type(layer).__name__ for layer in model.sublayers()} == kinds


# ------------------------------------------------------------------ operators, float32

def grads_of(out, inputs, g):
    return [t.numpy() for t in paddle.grad([out], inputs, [g])]


def leaf(array):
    t = paddle.to_tensor(array)
    t.stop_gradient = False
    return t


@pytest.mark.parametrize("shape,stride", [
    ((2, 3, 5, 7), 1), ((2, 3, 5, 7), 2), ((2, 4, 6, 6), 2), ((1, 2, 1, 1), 1), ((1, 2, 1, 1), 2),
    ((1, 2, 2, 3), 2), ((3, 5, 9, 4), 1), ((2, 8, 56, 56), 2), ((4, 16, 33, 17), 1),
])
def test_depthwise_conv_equals_paddle(shape, stride):
    rng = np.random.default_rng(1)
    xn = rng.standard_normal(shape).astype("float32")
    wn = rng.standard_normal((shape[1], 1, 3, 3)).astype("float32")
    x, w = leaf(xn), leaf(wn)
    out = _C_ops._run_custom_op("fast_dwconv3x3", x, w, stride, 2)[0]
    x2, w2 = leaf(xn), leaf(wn)
    ref = F.conv2d(x2, w2, stride=stride, padding=1, groups=shape[1])
    assert out.shape == ref.shape
    assert rel(out.numpy(), ref.numpy()) < TOL
    g = paddle.to_tensor(rng.standard_normal(ref.shape).astype("float32"))
    for a, b in zip(grads_of(out, [x, w], g), grads_of(ref, [x2, w2], g)):
        assert rel(a, b) < TOL


@pytest.mark.parametrize("shape,out_ch", [
    ((2, 3, 1, 1), 5), ((3, 16, 2, 3), 8), ((2, 32, 15, 15), 48), ((1, 5, 13, 17), 7),
])
def test_pointwise_conv_equals_paddle(shape, out_ch):
    # 1x1 maps, channel-major small maps, per-sample GEMM for large ones (>= 196 pixels).
    rng = np.random.default_rng(2)
    xn = rng.standard_normal(shape).astype("float32")
    wn = rng.standard_normal((out_ch, shape[1], 1, 1)).astype("float32")
    x, w = leaf(xn), leaf(wn)
    out = _C_ops._run_custom_op("fast_conv1x1", x, w, 2)[0]
    x2, w2 = leaf(xn), leaf(wn)
    ref = F.conv2d(x2, w2)
    assert rel(out.numpy(), ref.numpy()) < TOL
    g = paddle.to_tensor(rng.standard_normal(ref.shape).astype("float32"))
    for a, b in zip(grads_of(out, [x, w], g), grads_of(ref, [x2, w2], g)):
        assert rel(a, b) < TOL


@pytest.mark.parametrize("relu6", [True, False])
@pytest.mark.parametrize("shape", [(4, 3, 1, 1), (3, 5, 2, 3), (2, 7, 9, 9), (3, 4, 16, 16)])
def test_batch_norm_equals_paddle(shape, relu6):
    # HW < 64 runs the row-wise regime, HW >= 64 the channel-wise one. Mean 1, spread 3.
    rng = np.random.default_rng(3)
    c = shape[1]
    xn = (rng.standard_normal(shape) * 3 + 1).astype("float32")
    gamma, beta = rng.uniform(0.5, 1.5, c).astype("float32"), rng.standard_normal(c).astype("float32")
    mean0, var0 = rng.standard_normal(c).astype("float32"), rng.uniform(0.5, 2, c).astype("float32")

    x, gm, bt = leaf(xn), leaf(gamma), leaf(beta)
    out, _, _, mean, var = _C_ops._run_custom_op(
        "fast_bn_act_train", x, gm, bt, paddle.to_tensor(mean0), paddle.to_tensor(var0), 0.9, 1e-5,
        relu6, 2)
    bn = nn.BatchNorm2D(c)
    bn.weight.set_value(gamma)
    bn.bias.set_value(beta)
    bn._mean.set_value(mean0)
    bn._variance.set_value(var0)
    x2 = leaf(xn)
    ref = bn(x2)
    ref = F.relu6(ref) if relu6 else ref
    assert rel(out.numpy(), ref.numpy()) < TOL
    assert rel(mean.numpy(), bn._mean.numpy()) < TOL and rel(var.numpy(), bn._variance.numpy()) < TOL
    g = paddle.to_tensor(rng.standard_normal(shape).astype("float32"))
    for a, b in zip(grads_of(out, [x, gm, bt], g), grads_of(ref, [x2, bn.weight, bn.bias], g)):
        assert rel(a, b) < TOL


# ------------------------------------------------------------------ float32 network

def test_float32_forward_and_running_statistics_match():
    # What a float32 training step computes before the backward pass: the loss it reports
    # and the running statistics it leaves behind. (Per-parameter float32 gradients are
    # not compared here, see the module docstring; the float64 test above covers them.)
    plain = mobilenext(seed=1)
    fast = copy.deepcopy(plain)
    fast_cpu.enable(fast)
    rng = np.random.default_rng(4)
    x = paddle.to_tensor(rng.standard_normal((8, 3, 48, 48)).astype("float32"))
    y = paddle.to_tensor(rng.integers(0, 10, (8, 1)))
    out_p, _, state_p = step(plain, x, y)
    out_f, _, state_f = step(fast, x, y)
    assert rel(out_f, out_p) < TOL
    for name, v in state_p.items():
        scale = max(np.abs(v).max(), 1.0) if name.endswith("_mean") else np.abs(v).max()
        assert np.abs(state_f[name] - v).max() <= TOL * scale, name


# ------------------------------------------------------------------ model-level behaviour

def test_official_logits_through_fast_layers(official_npz):
    prefix = "state_dict/"
    state = torch_state_dict_to_paddle(
        {k[len(prefix):]: official_npz[k] for k in official_npz.files if k.startswith(prefix)})
    model = build_model({"name": "MobileNeXt_x1_0", "class_num": 1000})
    load_state_dict(model, state)
    assert fast_cpu.enable(model) == 147
    model.eval()
    with paddle.no_grad():
        logits = model(paddle.to_tensor(official_npz["input"])).numpy()
    assert np.abs(logits - official_npz["logits"]).max() < TOL


def test_to_static_export_uses_paddle_kernels(tmp_path):
    model = mobilenext()
    fast_cpu.enable(model)
    model.eval()
    x = paddle.to_tensor(np.random.default_rng(5).standard_normal((2, 3, 40, 40)).astype("float32"))
    with paddle.no_grad():
        expected = model(x).numpy()
    static = paddle.jit.to_static(model, input_spec=[paddle.static.InputSpec([None, 3, 40, 40], "float32")],
                                  full_graph=True)
    paddle.jit.save(static, str(tmp_path / "inference"))
    saved = " ".join(p.read_text(errors="replace") for p in tmp_path.glob("inference.json"))
    assert saved and "fast_" not in saved  # no custom operator in the exported program
    loaded = paddle.jit.load(str(tmp_path / "inference"))
    loaded.eval()
    assert rel(loaded(x).numpy(), expected) < TOL


def test_wanted_follows_config_env_and_device(monkeypatch):
    monkeypatch.delenv(runtime.ENV_SWITCH, raising=False)
    assert fast_cpu.wanted({"fast_cpu": True, "device": "cpu"})
    assert fast_cpu.wanted({})  # on by default
    assert not fast_cpu.wanted({"fast_cpu": False})
    assert not fast_cpu.wanted({"device": "gpu"})
    assert not fast_cpu.wanted({"device": "gpu:0"}, device="gpu")
    monkeypatch.setenv(runtime.ENV_SWITCH, "0")
    assert not fast_cpu.wanted({"fast_cpu": True})
    model = mobilenext()
    assert fast_cpu.enable(model) == 0  # the environment switch wins over a direct call


# ------------------------------------------------------------------ fallback

FALLBACK = textwrap.dedent("""
    import json, os, sys, warnings
    import numpy as np, paddle
    import paddle.nn.functional as F
    from ppcls.arch import build_model
    from ppcls.ops import fast_cpu
    from ppcls.ops.fast_cpu import build

    if sys.argv[1] == "broken":
        build.SOURCE = sys.argv[2]  # a source file that does not compile
    if sys.argv[1] == "readonly" and os.geteuid() == 0:
        # root writes through file modes: refuse writes under the cache as a read-only mount does
        import builtins, errno, os, tempfile
        root = os.environ["PPCLS_FAST_CPU_CACHE"]
        def refuse(path):
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        real_open, real_makedirs, real_mkdtemp = builtins.open, os.makedirs, tempfile.mkdtemp
        def ro_open(file, mode="r", *a, **k):
            if str(file).startswith(root) and any(c in mode for c in "wax+"):
                refuse(file)
            return real_open(file, mode, *a, **k)
        def ro_makedirs(name, *a, **k):
            if str(name).startswith(root) and not os.path.isdir(name):
                refuse(name)
            return real_makedirs(name, *a, **k)
        def ro_mkdtemp(*a, dir=None, **k):
            if dir is not None and str(dir).startswith(root):
                refuse(dir)
            return real_mkdtemp(*a, dir=dir, **k)
        builtins.open, os.makedirs, tempfile.mkdtemp = ro_open, ro_makedirs, ro_mkdtemp
    paddle.seed(0)
    plain = build_model({"name": "MobileNeXt_x0_35", "class_num": 10, "dropout": 0.0})
    model = build_model({"name": "MobileNeXt_x0_35", "class_num": 10, "dropout": 0.0})
    model.set_state_dict(plain.state_dict())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        counts = [fast_cpu.enable(model), fast_cpu.enable(model)]
    ours = [str(w.message) for w in caught if issubclass(w.category, fast_cpu.FastCPUWarning)]
    x = paddle.to_tensor(np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype("float32"))
    y = paddle.to_tensor(np.array([[1], [2]]))
    grads = []
    for m in (plain, model):
        F.cross_entropy(m(x), y).backward()
        grads.append({n: p.grad.numpy() for n, p in m.named_parameters() if not p.stop_gradient})
    diff = max(float(np.abs(grads[0][k] - grads[1][k]).max()) for k in grads[0])
    print(json.dumps({"counts": counts, "warnings": ours, "grad_diff": diff}))
""")


def run_fallback(tmp_path, env_update, *args):
    env = dict(os.environ, PPCLS_FAST_CPU_CACHE=str(tmp_path / "cache"), **env_update)
    env.pop(runtime.ENV_SWITCH, None)
    proc = subprocess.run([sys.executable, "-c", FALLBACK, *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_missing_compiler_falls_back_with_one_warning(tmp_path):
    result = run_fallback(tmp_path, {"CXX": str(tmp_path / "no-such-compiler")}, "missing")
    assert result["counts"] == [0, 0]
    assert len(result["warnings"]) == 1 and "no C++ compiler" in result["warnings"][0]
    assert result["grad_diff"] == 0.0  # Paddle's own kernels: bit-identical to the plain model
    assert not any((tmp_path / "cache").glob("*/ppcls_fast_cpu_ops"))


def test_failed_build_falls_back_with_one_warning(tmp_path):
    broken = tmp_path / "broken.cc"
    broken.write_text('#include "paddle/extension.h"\nthis is not C++;\n')
    result = run_fallback(tmp_path, {}, "broken", str(broken))
    assert result["counts"] == [0, 0]
    assert len(result["warnings"]) == 1 and "compiling" in result["warnings"][0]
    assert result["grad_diff"] == 0.0


def assert_one_cache_warning(result, cache):
    assert result["counts"] == [0, 0]
    assert len(result["warnings"]) == 1, result["warnings"]
    assert str(cache) in result["warnings"][0]
    assert result["grad_diff"] == 0.0  # ran on Paddle's kernels


def test_read_only_empty_cache_falls_back_with_one_warning(tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    cache.chmod(0o555)
    try:
        result = run_fallback(tmp_path, {}, "readonly")
    finally:
        cache.chmod(0o755)
    assert_one_cache_warning(result, cache)
    assert "Permission denied" in result["warnings"][0]
    assert list(cache.iterdir()) == []


def test_cache_path_that_is_a_file_falls_back_with_one_warning(tmp_path):
    cache = tmp_path / "cache"
    cache.write_text("not a folder")
    result = run_fallback(tmp_path, {}, "file")
    assert_one_cache_warning(result, cache)
    assert cache.read_text() == "not a folder"


def test_truncated_cached_library_is_refused_not_loaded(tmp_path):
    # A cached .so cut to 5% crashed every run with SIGBUS inside the loader; now its
    # recorded hash is checked first, and the corrupt build is removed for the next run.
    import shutil

    from ppcls.ops.fast_cpu import build

    key = build.build_key()
    built = os.path.join(build.cache_root(), key)
    assert os.path.isfile(build._library_path(built)), "the ops fixture built the library"
    cache = tmp_path / "cache"
    shutil.copytree(built, cache / key)
    lib = build._library_path(str(cache / key))
    data = open(lib, "rb").read()
    with open(lib, "wb") as f:
        f.write(data[: len(data) // 20])
    result = run_fallback(tmp_path, {}, "truncated")
    assert_one_cache_warning(result, cache)
    assert "corrupt" in result["warnings"][0]
    assert not (cache / key).exists()


# ------------------------------------------------------------------ the CPU deployment default

def test_cpu_deployment_default_is_onnx_runtime_with_equal_outputs(tmp_path):
    # deploy/configs/inference_cls.yaml says use_onnx: auto: ONNX Runtime on CPU when the
    # export has inference.onnx (the fastest CPU back-end, docs/benchmarks.md), else Paddle.
    import shutil

    from ppcls.inference.export import build_eval_model, export_model, export_onnx
    from ppcls.inference.predictor import OnnxPredictor, PaddlePredictor, choose_backend, cpu_threads
    from ppcls.utils.config import get_config
    from ppcls.utils.errors import ConfigError

    out = str(tmp_path / "export")
    cfg = {"Global": {"save_inference_dir": out, "image_shape": [3, 32, 32], "export_softmax": False},
           "Arch": {"name": "MobileNeXt_x0_35", "class_num": 10}}
    paddle.seed(0)
    weights = str(tmp_path / "w.pdparams")
    paddle.save(build_model(cfg["Arch"]).state_dict(), weights)
    cfg["Global"]["pretrained_model"] = weights
    export_model(cfg)
    export_onnx(out)
    g = dict(get_config(os.path.join(ROOT, "deploy", "configs", "inference_cls.yaml"), show=False)["Global"])
    assert g["use_onnx"] == "auto"
    g.update(inference_model_dir=out, cpu_num_threads=2)

    from ppcls.inference.predictor import create_predictor

    predictor = create_predictor(g)
    assert isinstance(predictor, OnnxPredictor) and choose_backend(g) == "onnxruntime"
    x = np.random.default_rng(6).standard_normal((2, 3, 32, 32)).astype("float32")
    with paddle.no_grad():
        expected = build_eval_model(cfg)(paddle.to_tensor(x)).numpy()
    assert np.abs(predictor.run(x) - expected).max() < TOL
    paddle_out = PaddlePredictor(out, enable_mkldnn=True, cpu_num_threads=2).run(x)
    assert np.abs(paddle_out - expected).max() < TOL

    assert choose_backend(dict(g, use_onnx=False)) == "paddle_inference"
    assert choose_backend(dict(g, use_gpu=True)) == "paddle_inference"
    no_onnx = str(tmp_path / "no_onnx")
    shutil.copytree(out, no_onnx, ignore=shutil.ignore_patterns("*.onnx"))
    assert choose_backend(dict(g, inference_model_dir=no_onnx)) == "paddle_inference"
    with pytest.raises(ConfigError, match="use_onnx expects True, False or auto, got 'yes'"):
        choose_backend(dict(g, use_onnx="yes"))
    available = len(os.sched_getaffinity(0))
    assert cpu_threads(10) == min(10, available) and cpu_threads(None) is None
