"""One clear line, never a silent wrong answer (issue 12, items 7 and 10):

- a weights-only load (``Global.pretrained_model=.../latest``) of a modified checkpoint file
  is refused by the hash in the ``.pdstates`` beside it;
- momentum -5, an L2 coeff of -1 and ``topk: [1, 50]`` with 10 classes are refused;
- a DataLoader worker that is killed, or stops answering, stops the run with one line.
"""

import os
import signal
import subprocess
import time

import numpy as np
import pytest

from helpers import (QUICKSTART, ROOT, TRAIN, command, env, tiny_data,  # noqa: F401
                               tiny_overrides)

ARCH = "MobileNeXt_x0_35"


@pytest.fixture(scope="module")
def small_model():
    from ppcls.arch import build_model

    return build_model({"Arch": {"name": ARCH, "class_num": 10}})


def test_weights_only_load_checks_the_hash_recorded_beside_the_file(small_model, tmp_path):
    from ppcls.engine.checkpoint import save_checkpoint
    from ppcls.utils.errors import CheckpointError
    from ppcls.utils.weights import load_pretrained

    prefix = str(tmp_path / "latest")
    save_checkpoint([prefix], small_model.state_dict(), {}, {"epoch": 1})
    load_pretrained(small_model, prefix)  # the untouched file loads

    with open(prefix + ".pdparams", "r+b") as f:  # flip 64 bytes inside a weight tensor
        f.seek(os.path.getsize(prefix + ".pdparams") // 2)
        data = f.read(64)
        f.seek(-64, os.SEEK_CUR)
        f.write(bytes(b ^ 0xFF for b in data))
    before = {k: v.numpy().copy() for k, v in small_model.state_dict().items()}
    with pytest.raises(CheckpointError, match=r"latest\.pdparams does not match the SHA-256 "
                                              r"recorded in .*latest\.pdstates"):
        load_pretrained(small_model, prefix)
    after = small_model.state_dict()
    assert all(np.array_equal(before[k], after[k].numpy()) for k in before)  # nothing loaded

    # The same file without a .pdstates beside it (shared weights) loads as before.
    os.remove(prefix + ".pdstates")
    load_pretrained(small_model, prefix)


@pytest.mark.parametrize("section,message", [
    ({"name": "Momentum", "momentum": -5}, r"Optimizer\.momentum must be in \[0, 1\), got -5"),
    ({"name": "Momentum", "momentum": 0.9, "regularizer": {"name": "L2", "coeff": -1}},
     r"Optimizer\.regularizer\.coeff must be in \[0, inf\), got -1"),
    ({"name": "AdamW", "beta1": 1.5}, r"Optimizer\.beta1 must be in \[0, 1\), got 1\.5"),
])
def test_out_of_range_optimizer_values_are_refused(small_model, section, message):
    from ppcls.optimizer import build_optimizer
    from ppcls.utils.errors import ConfigError

    section = dict(section, lr={"name": "Constant", "learning_rate": 0.1})
    with pytest.raises(ConfigError, match=message):
        build_optimizer(section, 1, 1, small_model)


def test_a_topk_above_the_class_count_is_refused(tmp_path):
    from ppcls.engine.engine import Engine
    from ppcls.metric import build_metrics
    from ppcls.utils.errors import ConfigError

    assert build_metrics([{"TopkAcc": {"topk": [1, 5]}}], "Metric.Eval", 10).names == ["top1", "top5"]
    cfg = {"Global": {"device": "cpu", "output_dir": str(tmp_path)},
           "Arch": {"name": ARCH, "class_num": 10},
           "Loss": {"Train": [{"CELoss": {"weight": 1.0}}]},
           "Metric": {"Eval": [{"TopkAcc": {"topk": [1, 50]}}]},
           "Optimizer": {"name": "Momentum", "momentum": 0.9,
                         "lr": {"name": "Constant", "learning_rate": 0.1}}}
    with pytest.raises(ConfigError, match=r"Metric\.Eval\.0\.TopkAcc: topk 50 exceeds the 10 classes"):
        Engine(cfg, mode="eval")


# --------------------------------------------------------------------------- loader workers


def _children(pid):
    path = f"/proc/{pid}/task/{pid}/children"
    try:
        with open(path) as f:
            return [int(p) for p in f.read().split()]
    except FileNotFoundError:  # the process has ended
        return []


def _train_with_workers(root, tmp_path, **env_extra):
    log = open(tmp_path / "stdout.txt", "w")
    overrides = tiny_overrides(root, str(tmp_path / "out"), epochs=50) + [
        "DataLoader.Train.loader.num_workers=2", "Global.eval_during_train=False"]
    proc = subprocess.Popen(command(TRAIN, QUICKSTART, overrides), cwd=ROOT, env=env(**env_extra),
                            stdout=log, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 240
    while "[Train][Epoch 1/50][Iter: 1/" not in (tmp_path / "stdout.txt").read_text():
        assert proc.poll() is None, proc.stderr.read()[-3000:]
        assert time.time() < deadline
        time.sleep(0.2)
    return proc


def test_a_killed_loader_worker_is_one_line(tiny_data, tmp_path):
    root, _, _ = tiny_data
    proc = _train_with_workers(root, tmp_path)
    try:
        workers = []
        deadline = time.time() + 60
        while not workers and time.time() < deadline:
            workers = _children(proc.pid)
        assert workers, "no worker process found"
        # A worker killed once it has handed over all of its epoch's batches (6 batches, 2
        # workers, each prefetching) loses nothing: the epoch ends, the next one forks new
        # workers and training goes on (seen when the kill landed at an epoch's end). So kill a
        # worker every half second until one dies with batches still to give.
        while proc.poll() is None and time.time() < deadline + 120:
            for pid in _children(proc.pid)[:1]:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.5)
        _, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 2, stderr[-3000:]
    errors = [line for line in stderr.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1 and "Traceback" not in stderr, stderr[-3000:]
    assert "DataLoader worker process died" in errors[0], errors[0]


class _HangsAtThree:
    """A dataset whose sample 3 never finishes loading (a stuck worker)."""

    cls_label_path = "hang_list.txt"

    def __len__(self):
        return 8

    def __getitem__(self, index):
        if int(index) == 3:
            time.sleep(3600)
        return np.zeros((3, 4, 4), np.float32), 0


def test_a_stuck_loader_worker_is_stopped_with_one_line(monkeypatch):
    import paddle

    from ppcls.data.loader import ImageDataLoader
    from ppcls.utils.cli import loader_worker_error
    from ppcls.utils.errors import DataError

    monkeypatch.setenv("PPCLS_LOADER_TIMEOUT", "3")
    dataset = _HangsAtThree()
    sampler = paddle.io.BatchSampler(dataset=dataset, batch_size=2)
    loader = ImageDataLoader(dataset, sampler, num_workers=2, use_shared_memory=False)
    start = time.time()
    try:
        with pytest.raises((DataError, SystemError)) as caught:
            for _ in loader:
                pass
            time.sleep(5)  # (a SIGCHLD-raised error may arrive just after the loop)
    finally:
        from paddle.base import core

        for _ in range(20):  # drain paddle's record of the stopped workers (no later surprise)
            try:
                core._throw_error_if_process_failed()
            except SystemError:
                pass
            time.sleep(0.1)
    err = caught.value
    line = loader_worker_error(err) if isinstance(err, SystemError) else str(err)
    assert "gave no batch of hang_list.txt for 3 s and were stopped" in line, line
    assert time.time() - start < 60
