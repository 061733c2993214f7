"""GPU paths, second pass (issue 20), driven on CPU by forcing Paddle's branches:

- a CUDA build that sees no GPU runs train, eval and infer on CPU with one warning (Paddle's
  ``set_device("gpu:0")`` would exit the process there);
- EMA under AMP O2 reads the model's weights without O2's per-layer state-dict hooks;
- every rank saves and restores its own RNG state;
- the TensorRT conversion falls back to plain GPU with one warning, caches, and cleans up;
- the printed training loss is reduced across ranks only on the lines that print it.

The two-process parts (no_sync accumulation, per-rank RNG resume) share one launch each:
``tests/engine/dist_gpu20_worker.py``.
"""

import copy
import os
import sys
import tempfile

import numpy as np
import pytest

from helpers import QUICKSTART, tiny_data, tiny_overrides  # noqa: F401


# --------------------------------------------------------------------------- item 1: no visible GPU


@pytest.fixture
def cuda_build_without_gpu(monkeypatch):
    """paddlepaddle-gpu under ``CUDA_VISIBLE_DEVICES=""``: CUDA compiled in, 0 devices. Records
    every ``paddle.set_device`` call; a ``gpu`` one fails the test (Paddle would exit there)."""
    import paddle

    from ppcls.utils import global_config, logger

    calls, warnings = [], []
    real_set = paddle.set_device

    def set_device(device):
        calls.append(str(device))
        if str(device).startswith("gpu"):
            raise AssertionError(f"set_device({device!r}) on a machine without a GPU")
        return real_set(device)

    monkeypatch.setattr(paddle, "is_compiled_with_cuda", lambda: True)
    monkeypatch.setattr(paddle.device, "is_compiled_with_cuda", lambda: True)
    monkeypatch.setattr(paddle.device.cuda, "device_count", lambda: 0)
    monkeypatch.setattr(paddle.base.core, "get_cuda_device_count", lambda: 0, raising=False)
    monkeypatch.setattr(paddle, "set_device", set_device)
    monkeypatch.setattr(global_config, "_WARNED", [])
    real_warning = logger.warning
    monkeypatch.setattr(logger, "warning", lambda msg, *a: (warnings.append(msg), real_warning(msg, *a)))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    return calls, warnings


def _no_gpu_warnings(warnings):
    return [w for w in warnings if "sees no GPU" in w]


def test_gpu_build_without_visible_gpu_trains_evaluates_and_infers_on_cpu(
        cuda_build_without_gpu, tiny_data, tmp_path):  # noqa: F811
    from ppcls.engine.engine import Engine
    from ppcls.inference.dygraph import predict
    from ppcls.utils.config import get_config

    calls, warnings = cuda_build_without_gpu
    root = tiny_data[0]
    overrides = [o for o in tiny_overrides(root, str(tmp_path / "out"), epochs=1,
                                           max_iters_per_epoch=1, eval_during_train=False)
                 if not o.startswith("Global.device=")]
    cfg = get_config(QUICKSTART, overrides + ["Global.device=gpu"])  # asked for explicitly
    engine = Engine(copy.deepcopy(cfg), mode="train")
    assert engine.device == "cpu"
    engine.train()
    ckpt = os.path.join(str(tmp_path / "out"), "MobileNeXt_x0_35", "latest")
    assert os.path.isfile(ckpt + ".pdparams")

    ev = copy.deepcopy(cfg)
    ev["Global"]["pretrained_model"] = ckpt
    res = Engine(ev, mode="eval").evaluate()
    assert 0.0 <= res["top1"] <= 1.0

    inf = copy.deepcopy(cfg)
    inf["Global"]["pretrained_model"] = ckpt
    first_val = open(os.path.join(root, "val_small.txt")).readline().split()[0]
    inf["Infer"]["infer_imgs"] = os.path.join(root, first_val)
    inf["Infer"]["PostProcess"]["class_id_map_file"] = os.path.join(root, "label_list.txt")
    results, code = predict(inf, emit=lambda batch: None)
    assert code == 0 and len(results) == 1 and "class_ids" in results[0]

    assert calls and set(calls) == {"cpu"}  # never gpu:...
    found = _no_gpu_warnings(warnings)
    assert len(found) == 1, warnings  # one warning a process, not one per tool
    assert "CUDA_VISIBLE_DEVICES=''" in found[0] and "running on CPU" in found[0]


def test_gpu_select_device_counts_devices_and_keeps_the_cpu_build_rule(monkeypatch):
    import paddle

    from ppcls.utils import global_config
    from ppcls.utils.errors import ConfigError

    monkeypatch.setattr(global_config, "_WARNED", [])
    monkeypatch.setattr(paddle, "is_compiled_with_cuda", lambda: True)
    monkeypatch.setattr(paddle.device.cuda, "device_count", lambda: 2)
    monkeypatch.setenv("FLAGS_selected_gpus", "1")
    calls = []
    monkeypatch.setattr(paddle, "set_device", calls.append)
    assert global_config.select_device("gpu") == "gpu" and calls == ["gpu:1"]
    monkeypatch.setattr(paddle.device.cuda, "device_count", lambda: 0)
    assert global_config.select_device("gpu") == "cpu" and calls[-1] == "cpu"
    assert global_config.select_device(None) == "cpu" and calls[-1] == "cpu"  # the default
    # a CPU-only build asked explicitly for a GPU in training is still a config error
    monkeypatch.setattr(paddle, "is_compiled_with_cuda", lambda: False)
    with pytest.raises(ConfigError, match="no CUDA support"):
        global_config.select_device("gpu", set_it=False)
    assert global_config.select_device("gpu", fallback=True, set_it=False) == "cpu"


# --------------------------------------------------------------------------- item 2: EMA under O2


def _old_ema_update(ema, model):
    """The EMA update before issue 20 (hooked ``state_dict``), the reference for its numbers."""
    import paddle

    current = model.state_dict()
    for name, value in ema.model.state_dict().items():
        src = current[name]
        if paddle.is_floating_point(value):
            value.set_value(value * ema.decay + src.astype(value.dtype) * (1.0 - ema.decay))
        else:
            value.set_value(src)


def test_amp_o2_ema_update_casts_only_float16_weights_and_equals_the_hooked_update(monkeypatch):
    import paddle

    from test_amp_gpu_paths import force_gpu_amp

    from ppcls.arch import build_model
    from ppcls.engine.ema import ModelEMA

    force_gpu_amp(monkeypatch)
    paddle.seed(5)
    model = build_model({"Arch": {"name": "MobileNeXt_x1_0", "class_num": 1000}})
    ema = ModelEMA(model, 0.9)  # taken before decorate, as the engine does: float32
    model = paddle.amp.decorate(models=model, level="O2", save_dtype="float32")
    dtypes = {str(v.dtype) for v in model.state_dict(use_hook=False).values()}
    assert "paddle.float16" in dtypes  # O2 really cast the convolutions
    rng = np.random.default_rng(0)
    with paddle.no_grad():  # the trained model moved away from the average
        for p in model.parameters():
            noise = rng.normal(0, 0.05, p.shape).astype("float32")
            p.set_value((p.astype("float32") + paddle.to_tensor(noise)).astype(p.dtype))
    reference = copy.deepcopy(ema)
    start = {k: v.numpy().copy() for k, v in ema.model.state_dict(use_hook=False).items()}

    casts = []
    real_cast = paddle.cast
    monkeypatch.setattr(paddle, "cast", lambda x, dtype: (casts.append(1), real_cast(x, dtype))[1])
    _old_ema_update(reference, model)
    old_casts = len(casts)
    casts.clear()
    ema.update(model)
    new_casts = len(casts)
    n_fp16 = sum(str(v.dtype) == "paddle.float16" for v in model.state_dict(use_hook=False).values())
    assert old_casts > 10_000  # what the issue measured (44,225 on this model)
    assert new_casts == n_fp16 < 1000  # one cast per float16 weight, nothing else
    new = {k: v.numpy() for k, v in ema.model.state_dict(use_hook=False).items()}
    old = {k: v.numpy() for k, v in reference.model.state_dict(use_hook=False).items()}
    assert new.keys() == old.keys() and len(new) > 300
    for k in old:
        assert new[k].dtype == old[k].dtype, k
        np.testing.assert_array_equal(new[k], old[k], err_msg=k)  # bit for bit today's average
    moved = [k for k in new if k.endswith("weight") and not np.array_equal(new[k], start[k])]
    assert len(moved) > 100 and all(new[k].dtype == np.float32 for k in moved)


# --------------------------------------------------------------------------- items 3 and 5: two processes

WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "dist_gpu20_worker.py")


@pytest.fixture(scope="module")
def two_ranks(tiny_data, tmp_path_factory):  # noqa: F811
    """One ``--nproc_per_node 2`` launch of tests/engine/dist_gpu20_worker.py (several short trainings)."""
    import json

    from helpers import run_ok

    out = tmp_path_factory.mktemp("gpu20_two_ranks")
    run_ok([sys.executable, "-m", "paddle.distributed.launch", "--nproc_per_node", "2",
            "--log_dir", str(out / "log"), WORKER, tiny_data[0], str(out)], timeout=400)
    results = []
    for rank in (0, 1):
        with open(out / f"result.rank{rank}.json") as f:
            results.append(json.load(f))
        results[rank]["arrays"] = dict(np.load(out / f"params.rank{rank}.npz"))
    return results, out


def test_rng_two_process_resume_is_bit_identical_on_both_ranks(two_ranks):
    results, out = two_ranks
    r0, r1 = results
    # the ranks draw different dropout / drop-path streams (seed + rank, as PaddleClas) ...
    assert r0["rng_trace"]["straight"] != r1["rng_trace"]["straight"]
    for r in results:
        assert r["resumed_start_epoch"] == 1
        # ... and after resuming each continues its own, step for step (3 steps an epoch)
        assert r["rng_trace"]["resumed"] == r["rng_trace"]["straight"][3:]
        assert r["resumed"] == r["straight"]  # trained weights, bit for bit
        # restoring rank 0's states on every rank (before issue 20) gives other weights
        assert r["resumed_rank0_rng"] != r["straight"]
    assert r0["straight"] == r1["straight"]
    from ppcls.engine.checkpoint import load_checkpoint

    states = load_checkpoint(str(out / "straight" / "MobileNeXt_x0_35" / "epoch_1"))["pdstates"]
    assert len(states["rng_ranks"]) == 2 and "rng" in states and states["epoch"] == 1
    log = (out / "log" / "workerlog.0").read_text()
    assert "Set random seed to (7 + rank) for each of the 2 ranks" in log


def test_no_sync_accumulation_on_two_processes_equals_all_reduce_every_batch(two_ranks):
    results, _ = two_ranks
    r0, r1 = results
    # inside no_sync the first micro-batch's gradient stays on its rank (no all-reduce) ...
    assert not np.array_equal(r0["first_grad"]["no_sync"], r1["first_grad"]["no_sync"])
    # ... while all-reducing every micro-batch (before issue 20) made them equal there
    assert np.array_equal(r0["first_grad"]["sync_every_batch"], r1["first_grad"]["sync_every_batch"])
    for r in results:
        arrays = r["arrays"]
        names = [k.split("/", 1)[1] for k in arrays if k.startswith("no_sync/")]
        grads = [k.split("/", 1)[1] for k in arrays if k.startswith("no_sync_grad/")]
        assert len(names) > 300 and len(grads) > 200
        for k in grads:  # the gradient of the optimizer step: the same up to float rounding
            a, b = arrays["no_sync_grad/" + k], arrays["sync_every_batch_grad/" + k]
            np.testing.assert_allclose(a, b, rtol=0, atol=1e-6 * max(1.0, np.abs(b).max()), err_msg=k)
        for k in names:  # and the weights after it
            a, b = arrays["no_sync/" + k], arrays["sync_every_batch/" + k]
            np.testing.assert_allclose(a, b, rtol=0, atol=1e-6, err_msg=k)
        assert any(np.abs(arrays["no_sync_grad/" + k]).max() > 0 for k in grads)
    for k in (k for k in r0["arrays"] if k.startswith("no_sync/")):  # one model on both ranks
        if "_mean" not in k and "_variance" not in k:
            np.testing.assert_array_equal(r0["arrays"][k], r1["arrays"][k], err_msg=k)


def test_rng_forced_per_device_lists_each_rank_restores_its_own_card(monkeypatch):
    """Two ranks on a 2-GPU node: ``paddle.get_rng_state("gpu")`` lists both visible cards in
    each process, but rank r only ever draws from card r. Each rank saves its own card's state
    and, resumed, restores exactly that one, leaving the other card's generator alone."""
    import paddle

    from ppcls.engine import checkpoint
    from ppcls.utils import logger

    cards = {}  # the simulated process's GPU generators: card -> state
    sets = []
    real_get, real_set = paddle.get_rng_state, paddle.set_rng_state

    def get_rng_state(device=None):
        return [cards[i] for i in sorted(cards)] if device == "gpu" else real_get(device)

    def set_rng_state(states, device=None):
        if device != "gpu":
            return real_set(states, device)
        sets.append(list(states))
        cards.update(enumerate(states))

    monkeypatch.setattr(paddle, "get_rng_state", get_rng_state)
    monkeypatch.setattr(paddle, "set_rng_state", set_rng_state)
    monkeypatch.setattr(checkpoint, "gpu_count", lambda: 2)
    warnings = []
    monkeypatch.setattr(logger, "warning", lambda msg, *a: warnings.append(msg))

    saved = []
    for rank in (0, 1):  # each process: its own card moved, the other at the seed's state
        monkeypatch.setenv("FLAGS_selected_gpus", str(rank))
        cards.clear()
        cards.update({0: "seeded", 1: "seeded"})
        cards[rank] = f"rank{rank}-after-epoch-1"
        saved.append(checkpoint.own_rng_state("gpu"))
    assert [s["paddle_gpu_own"] for s in saved] == [["rank0-after-epoch-1"], ["rank1-after-epoch-1"]]
    monkeypatch.setenv("FLAGS_selected_gpus", "0")
    cards.update({0: "rank0-after-epoch-1", 1: "seeded"})
    states = {"rng": checkpoint.rng_state("gpu"), "rng_ranks": saved, "epoch": 1}
    assert states["rng"]["paddle_gpu"] == ["rank0-after-epoch-1", "seeded"]  # rank 0's view

    for rank in (0, 1):  # resumed: fresh processes
        monkeypatch.setenv("FLAGS_selected_gpus", str(rank))
        cards.clear()
        cards.update({0: "fresh", 1: "fresh"})
        assert checkpoint.restore_rng(states, "gpu", rank=rank, world_size=2)
        expected = ["fresh", "fresh"]
        expected[rank] = f"rank{rank}-after-epoch-1"
        assert sets[-1] == expected
    assert warnings == []

    # an older checkpoint of ours (one set of states): as before, every rank restores rank 0's
    # list, and one warning says so; rank 1's card then restarts from the seeded state
    old = {k: v for k, v in states.items() if k != "rng_ranks"}
    for rank in (0, 1):
        monkeypatch.setenv("FLAGS_selected_gpus", str(rank))
        assert checkpoint.restore_rng(old, "gpu", rank=rank, world_size=2)
    assert sets[-1] == ["rank0-after-epoch-1", "seeded"]
    assert len(warnings) == 1 and "ranks >= 1 restore rank 0's" in warnings[0]
    # resumed on another number of cards: those with a saved state restore it, one warning
    warnings.clear()
    assert checkpoint.restore_rng(states, "gpu", rank=0, world_size=4)
    assert not checkpoint.restore_rng(states, "gpu", rank=3, world_size=4)
    assert len(warnings) == 1 and "2 rank(s); this run has 4" in warnings[0]


def test_rng_single_card_checkpoint_keeps_its_format(monkeypatch):
    """One card: ``.pdstates`` keeps ``rng`` only (no ``rng_ranks``), as before, and
    :func:`restore_rng` puts back numpy, python and paddle's generators from it."""
    import random

    import paddle

    from ppcls.engine import checkpoint

    assert checkpoint.gather_rng_states("cpu", 1) is None
    np.random.seed(11)
    random.seed(11)
    paddle.seed(11)
    states = {"rng": checkpoint.rng_state("cpu"), "epoch": 1}
    expected = (np.random.rand(), random.random(), float(paddle.rand([1]).numpy()[0]))
    assert checkpoint.restore_rng(states, "cpu")
    assert (np.random.rand(), random.random(), float(paddle.rand([1]).numpy()[0])) == expected
    assert not checkpoint.restore_rng({"epoch": 1, "metric": 0.5}, "cpu")  # PaddleClas's file


# --------------------------------------------------------------------------- item 4: TensorRT


@pytest.fixture(scope="module")
def trt_export(tmp_path_factory):
    from helpers import random_export

    return random_export(tmp_path_factory.mktemp("trt_export"), [3, 32, 32])


@pytest.fixture
def trt_gpu(monkeypatch, tmp_path, trt_export):
    """A CUDA + TensorRT build as far as predictor.py can tell; paddle.inference's Config and
    create_predictor record instead of loading; temp folders go to a private dir (checked empty);
    every run starts from a fresh copy of the export (no cache)."""
    from paddle import inference

    from helpers import FakeTensorRT, RecordingConfig

    from ppcls.inference import predictor as backends
    from ppcls.utils import logger

    monkeypatch.setattr(backends, "_cuda_available", lambda: True)
    monkeypatch.setattr(backends, "_tensorrt_available", lambda: True)
    monkeypatch.setattr(inference, "Config", RecordingConfig)
    created = []
    monkeypatch.setattr(inference, "create_predictor", lambda config: created.append(config) or _FakePredictor())
    temp = tmp_path / "tmp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    warnings = []
    monkeypatch.setattr(logger, "warning", lambda msg, *a: warnings.append(msg))
    import shutil

    model_dir = str(tmp_path / "model")
    shutil.copytree(trt_export, model_dir)
    fake = FakeTensorRT()
    return types_ns(backends=backends, fake=fake, created=created, warnings=warnings,
                    temp=temp, model_dir=model_dir, monkeypatch=monkeypatch)


def types_ns(**kw):
    import types

    return types.SimpleNamespace(**kw)


class _FakePredictor:
    def get_input_names(self):
        return ["x"]

    def get_output_names(self):
        return ["out"]

    def get_input_handle(self, name):
        return None

    get_output_handle = get_input_handle


def _in_process(t, fake):
    t.monkeypatch.setattr(t.backends, "_import_tensorrt", lambda: fake)
    t.monkeypatch.setattr(t.backends, "_run_conversion",
                          lambda plan, gpu_id: (t.fake_gpu_ids.append(gpu_id), t.backends.convert_in_process(plan))[1])
    t.fake_gpu_ids = []


def _leftovers(t):
    trt_root = os.path.join(t.model_dir, "_tensorrt")
    tmp = [n for n in os.listdir(trt_root) if n.startswith("ppcls_trt_")] if os.path.isdir(trt_root) else []
    return tmp + os.listdir(t.temp)


def test_tensorrt_convert_that_raises_gives_one_warning_and_a_plain_gpu_predictor(trt_gpu):
    t = trt_gpu

    class Failing(type(t.fake)):
        def convert(self, model_path, config):
            super().convert(model_path, config)  # half-written output, then the failure
            raise RuntimeError("TensorRT 10.1 cannot convert pd_op.unsupported_op (out of memory)")

    _in_process(t, Failing())
    pred = t.backends.PaddlePredictor(t.model_dir, {"use_gpu": True, "use_tensorrt": True,
                                                   "gpu_id": 1, "batch_size": 2})
    assert len(t.warnings) == 1 and "TensorRT conversion failed" in t.warnings[0]
    assert "pd_op.unsupported_op" in t.warnings[0] and "without TensorRT" in t.warnings[0]
    (config,) = t.created  # the export itself, on the asked card, no TensorRT
    assert config.files == (os.path.join(t.model_dir, "inference.json"),
                            os.path.join(t.model_dir, "inference.pdiparams"))
    assert ("enable_use_gpu", (8000, 1), {}) in config.calls
    assert not [c for c in config.calls if "tensorrt" in c[0]]
    assert t.fake_gpu_ids == [1]
    info = pred.describe()
    assert info["device"] == "gpu" and info["precision"] == "fp32"
    assert _leftovers(t) == []  # the half-written conversion is gone, nothing cached
    assert os.listdir(os.path.join(t.model_dir, "_tensorrt")) == []


def test_tensorrt_conversion_is_cached_beside_the_export_and_reports_subgraphs(trt_gpu):
    t = trt_gpu

    class TwoEngines(type(t.fake)):
        def convert(self, model_path, config):
            super().convert(model_path, config)
            prefix = config.kwargs["save_model_dir"]
            with open(prefix + ".json") as f:
                text = f.read()
            with open(prefix + ".json", "w") as f:  # two TensorRT subgraphs in the program
                f.write(text.replace('"#":"1.relu6"', '"#":"1.tensorrt_engine"', 2))

    fake = TwoEngines()
    _in_process(t, fake)
    options = {"use_gpu": True, "use_tensorrt": True, "use_fp16": True, "batch_size": 4}
    first = t.backends.PaddlePredictor(t.model_dir, options)
    assert len(fake.calls) == 1
    note = first.describe()["precision"]
    assert note.startswith("fp16 (TensorRT: 2 subgraph(s), ") and "op(s) on Paddle kernels" in note
    paddle_ops = int(note.split(", ")[1].split()[0])
    assert paddle_ops > 50  # the rest of MobileNeXt stays on Paddle kernels
    cached = t.created[-1].files
    assert os.path.dirname(os.path.dirname(cached[0])) == os.path.join(t.model_dir, "_tensorrt")
    # the same export, shapes and precision: no conversion, the cached program
    again = t.backends.PaddlePredictor(t.model_dir, options)
    assert len(fake.calls) == 1 and t.created[-1].files == cached
    assert again.describe()["precision"] == note
    # another shape range or precision: converted again, under another key
    t.backends.PaddlePredictor(t.model_dir, dict(options, batch_size=8))
    t.backends.PaddlePredictor(t.model_dir, dict(options, use_fp16=False))
    assert len(fake.calls) == 3 and len(set(c.files for c in t.created)) == 3
    # other weights in the export: another key
    with open(os.path.join(t.model_dir, "inference.pdiparams"), "ab") as f:
        f.write(b"\0")
    t.backends.PaddlePredictor(t.model_dir, options)
    assert len(fake.calls) == 4
    assert len(os.listdir(os.path.join(t.model_dir, "_tensorrt"))) == 4
    assert _leftovers(t) == [] and t.warnings == []


def test_tensorrt_real_child_process_failure_falls_back_and_honours_gpu_id(trt_gpu, monkeypatch):
    """Not mocked: the conversion child process runs; on this CPU build it cannot import
    paddle.tensorrt, and the predictor falls back with one warning naming what to install."""
    t = trt_gpu
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,6")
    assert t.backends._visible_card(1) == "6"  # the child's GPU 0 is this process's card 1
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert t.backends._visible_card(1) == "1"
    seen = []
    real = t.backends.run_conversion
    monkeypatch.setattr(t.backends, "_run_conversion",
                        lambda plan, gpu_id: (seen.append(gpu_id), real(plan, gpu_id))[1])
    t.backends.PaddlePredictor(t.model_dir, {"use_gpu": True, "use_tensorrt": True, "gpu_id": 1})
    assert seen == [1]
    assert len(t.warnings) == 1 and "TensorRT conversion failed" in t.warnings[0]
    assert "paddle.tensorrt" in t.warnings[0] and "GPU build with TensorRT" in t.warnings[0]
    assert ("enable_use_gpu", (8000, 1), {}) in t.created[-1].calls
    assert _leftovers(t) == []


def test_tensorrt_missing_pip_package_says_pip_install_tensorrt(monkeypatch):
    import importlib.abc
    import importlib.machinery

    from ppcls.inference import predictor as backends

    class NoTensorRT(importlib.abc.MetaPathFinder, importlib.abc.Loader):
        """paddle.tensorrt as on a GPU build without the tensorrt pip package."""

        def find_spec(self, name, path, target=None):
            if name == "paddle.tensorrt":
                return importlib.machinery.ModuleSpec(name, self)
            return None

        def create_module(self, spec):
            return None

        def exec_module(self, module):
            raise ModuleNotFoundError("No module named 'tensorrt'", name="tensorrt")

    monkeypatch.delitem(sys.modules, "paddle.tensorrt", raising=False)
    monkeypatch.setattr(sys, "meta_path", [NoTensorRT()] + sys.meta_path)
    with pytest.raises(backends.TensorRTFailed, match="pip install tensorrt"):
        backends._import_tensorrt()
    monkeypatch.setattr(sys, "meta_path", sys.meta_path[1:])
    with pytest.raises(backends.TensorRTFailed, match="PaddlePaddle GPU build with TensorRT"):
        backends._import_tensorrt()  # this CPU build: no paddle.tensorrt at all


# --------------------------------------------------------------------------- item 6: the printed loss


def test_gpu_step_loss_is_read_and_reduced_only_on_logged_iterations(monkeypatch, tiny_data, tmp_path):  # noqa: F811
    import re

    import paddle

    from ppcls.engine import distributed
    from ppcls.engine.engine import Engine, TrainingDiverged
    from ppcls.utils.config import get_config

    cfg = get_config(QUICKSTART, tiny_overrides(tiny_data[0], str(tmp_path / "a"), epochs=1,
                                                print_batch_step=4, eval_during_train=False,
                                                fast_cpu=False))
    eng = Engine(copy.deepcopy(cfg), mode="train")
    step_losses, nan_at = [], []
    real_loss = eng.train_loss

    def train_loss(logits, labels):
        d = real_loss(logits, labels)
        step_losses.append(d["loss"].detach())
        if len(step_losses) in nan_at:
            d = dict(d, loss=d["loss"] * float("nan"))
        return d

    eng.train_loss = train_loss
    reads, counting = [], []  # device-to-host reads of a tensor inside train_epoch
    real_numpy, real_float = paddle.Tensor.numpy, paddle.Tensor.__float__
    import traceback

    def caller():  # the reading file; the loader's sample indices are host data, not counted
        return os.path.relpath(traceback.extract_stack()[-3].filename, os.path.dirname(distributed.__file__))

    def numpy(self, *a, **k):
        if counting:
            reads.append(caller())
        return real_numpy(self, *a, **k)

    def to_float(self):
        if counting:
            reads.append(caller())
        return real_float(self)

    monkeypatch.setattr(paddle.Tensor, "numpy", numpy)
    monkeypatch.setattr(paddle.Tensor, "__float__", to_float)
    means = []
    real_means = distributed.RunningSums.means
    monkeypatch.setattr(distributed.RunningSums, "means", lambda self, ws: (means.append(ws), real_means(self, ws))[1])
    real_epoch = eng.train_epoch
    eng.train_epoch = lambda epoch: (counting.append(1), real_epoch(epoch), counting.clear())[1]
    eng.train()
    monkeypatch.undo()
    assert len(step_losses) == 6  # 48 images, 8 a batch
    assert len(means) == 3  # iterations 0 and 4, and the epoch's summary
    # host data: the loader's indices, and (on CPU only) the uint8 batch device_normalize looks up
    host = {os.path.join("..", "data", name) for name in ("loader.py", "device_normalize.py")}
    reads = [r for r in reads if r not in host]
    assert reads == ["distributed.py"] * 3  # one read each, no float(loss) per step
    log = open(tmp_path / "a" / "MobileNeXt_x0_35" / "train.log").read()
    line = re.compile(r"\[Train\]\[Epoch 1/1\]\[Iter: 4/6\]lr\(\w+\): [0-9.]+, top1: [0-9.]+, "
                      r"top5: [0-9.]+, CELoss: ([0-9.]+), loss: ([0-9.]+), batch_cost: [0-9.]+s, "
                      r"reader_cost: [0-9.]+, ips: [0-9.]+ samples/s, eta: \d+:\d\d:\d\d$")
    (celoss, loss), = [m.groups() for m in map(line.search, log.splitlines()) if m]
    expected = float(np.mean([float(v) for v in step_losses[:5]]))  # the epoch so far
    assert float(loss) == pytest.approx(expected, abs=1e-5) and celoss == loss
    assert "[Train][Epoch 1/1][Iter: 1/6]" not in log and "[Train][Epoch 1/1][Avg]" in log
    # the log says once what the values average
    assert log.count(distributed.LOSS_LOG_NOTE) == 1 and "all ranks' samples" in distributed.LOSS_LOG_NOTE

    # a NaN between two logged iterations is caught at the next one, and the error says where
    step_losses.clear()
    nan_at.append(2)  # iteration 1
    with pytest.raises(TrainingDiverged, match=r"the loss is nan at epoch 1, iteration 4 "
                                               r"\(non-finite first in iterations 1\.\.4"):
        eng.train_epoch(1)

    # two ranks: the loss entry is reduced over ranks (one call), the others stay this rank's
    seen = []
    monkeypatch.setattr(distributed, "global_weighted_mean", lambda total, count: seen.append((total, count)) or 9.0)
    sums = distributed.RunningSums().add({"loss": paddle.to_tensor(2.0), "CELoss": paddle.to_tensor(2.0)}, 8)
    assert sums.means(2) == {"loss": 9.0, "CELoss": 2.0} and seen == [(16.0, 8)]


def test_nan_weights_after_a_finite_loss_are_never_saved(tmp_path):
    """The loss is read only on logged lines and a backward can turn the weights NaN while the
    loss stays finite (BatchNorm over 2 values at 1 x 1): the save refuses them, naming them."""
    import types

    import paddle

    from ppcls.engine.engine import Engine, TrainingDiverged

    model = paddle.nn.Sequential(paddle.nn.Linear(3, 4), paddle.nn.BatchNorm1D(4))
    fake = types.SimpleNamespace(bare_model=model, output_dir=str(tmp_path), rank=0,
                                 _last_checkpoint_note=lambda: "no checkpoint was written before it")
    Engine._check_params(fake, 3)  # finite: nothing to say
    weight = model[0].weight.numpy()
    weight[1, 2] = np.nan
    model[0].weight.set_value(weight)
    with pytest.raises(TrainingDiverged, match=r"the weights hold NaN/Inf after epoch 3 \(0\.weight\) "
                                               r"although the logged loss was finite"):
        Engine._check_params(fake, 3)
    # the real save path checks first: nothing is written
    fake._check_params = lambda epoch: Engine._check_params(fake, epoch)
    with pytest.raises(TrainingDiverged):
        Engine._save(fake, ["latest"], 3)
    assert os.listdir(tmp_path) == []
