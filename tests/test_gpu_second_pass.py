"""GPU paths, second pass (issue 20), driven on CPU by forcing Paddle's branches:

- a CUDA build that sees no GPU runs train, eval and infer on CPU with one warning (Paddle's
  ``set_device("gpu:0")`` would exit the process there);
- EMA under AMP O2 reads the model's weights without O2's per-layer state-dict hooks;
- every rank saves and restores its own RNG state;
- the TensorRT conversion falls back to plain GPU with one warning, caches, and cleans up;
- the printed training loss is reduced across ranks only on the lines that print it.

The two-process parts (no_sync accumulation, per-rank RNG resume) share one launch each:
``tests/dist_gpu20_worker.py``.
"""

import copy
import glob
import os
import sys
import tempfile

import numpy as np
import pytest

from test_engine_utils import QUICKSTART, tiny_data, tiny_overrides  # noqa: F401


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
    inf["Infer"]["infer_imgs"] = os.path.join(root, "val")
    inf["Infer"]["PostProcess"]["class_id_map_file"] = os.path.join(root, "label_list.txt")
    inf["Infer"]["batch_size"] = 64
    results, code = predict(inf, emit=lambda batch: None)
    assert code == 0 and len(results) > 0 and "class_ids" in results[0]

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
    """One ``--nproc_per_node 2`` launch of tests/dist_gpu20_worker.py (several short trainings)."""
    import json

    from test_engine_utils import run_ok

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
