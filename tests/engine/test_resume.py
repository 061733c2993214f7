"""Resuming is exact, a SIGKILL during a checkpoint write never leaves a partial checkpoint, and a
NaN loss stops training with the epoch and iteration while the last checkpoint stays loadable."""

import hashlib
import os
import re
import shutil
import signal
import subprocess
import time

import numpy as np
import pytest

from helpers import (QUICKSTART, ROOT, TRAIN, command, env, load_params, paused, run,
                               run_ok, tiny_data, tiny_overrides)  # noqa: F401

ARCH = "MobileNeXt_x0_35"


def _start(overrides, **env_extra):
    cmd = command(TRAIN, QUICKSTART, overrides)
    return subprocess.Popen(paused(cmd) if env_extra else cmd, cwd=ROOT, env=env(**env_extra),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _kill_when_paused(proc, marker, timeout=300):
    deadline = time.time() + timeout
    while not os.path.exists(marker):
        assert proc.poll() is None, f"training ended before pausing:\n{proc.stdout.read()[-3000:]}"
        assert time.time() < deadline, "training never reached the checkpoint pause"
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL


def _assert_same(a, b, atol):
    assert a.keys() == b.keys()
    worst = max(float(np.abs(a[k].astype("float64") - b[k]).max()) for k in a)
    assert worst <= atol, worst


@pytest.fixture(scope="module")
def runs(tiny_data, tmp_path_factory):
    """One straight 2-epoch run and two runs SIGKILLed while saving the epoch-2 checkpoint."""
    root, _, _ = tiny_data
    tmp = tmp_path_factory.mktemp("resume")
    dirs = {k: str(tmp / k) for k in ("straight", "killed_write", "killed_commit")}
    only_latest = {"save_interval": 0, "save_best_model": False}
    straight = _start(tiny_overrides(root, dirs["straight"], epochs=2, save_interval=1))
    killed = {
        "write": _start(tiny_overrides(root, dirs["killed_write"], epochs=2, **only_latest),
                        PPCLS_TEST_SAVE_PAUSE="write@2"),
        "after_commit": _start(tiny_overrides(root, dirs["killed_commit"], epochs=2, **only_latest),
                               PPCLS_TEST_SAVE_PAUSE="after_commit@2"),
    }
    _kill_when_paused(killed["write"], os.path.join(dirs["killed_write"], ARCH, ".paused-write"))
    _kill_when_paused(killed["after_commit"], os.path.join(dirs["killed_commit"], ARCH, ".paused-after_commit"))
    out, _ = straight.communicate(timeout=300)
    assert straight.returncode == 0, out[-3000:]
    return root, dirs, out


def test_kill_during_write_keeps_the_old_checkpoint_and_resume_is_exact(runs):
    root, dirs, straight_log = runs
    run_dir = os.path.join(dirs["killed_write"], ARCH)
    assert any(".latest.pdparams.tmp" in f for f in os.listdir(run_dir))  # killed mid-write
    _, ckpt = load_params(os.path.join(run_dir, "latest"))
    assert ckpt["pdstates"]["epoch"] == 1  # the old checkpoint, whole

    # Resume the killed run from its epoch-1 checkpoint: same result as never stopping.
    resumed = run_ok(command(TRAIN, QUICKSTART, tiny_overrides(
        root, dirs["killed_write"], epochs=2, save_interval=0,
        checkpoints=os.path.join(run_dir, "latest"))))
    assert "[Train][Epoch 1/" not in resumed.stdout
    final, ckpt = load_params(os.path.join(run_dir, "latest"))
    assert ckpt["pdstates"]["epoch"] == 2
    reference, ref_ckpt = load_params(os.path.join(dirs["straight"], ARCH, "latest"))
    _assert_same(final, reference, atol=1e-6)
    # same LR position, same losses in the resumed epoch
    epoch2 = re.compile(r"\[Train\]\[Epoch 2/2\]\[Iter: \d+/\d+\]lr\(\w+\): [0-9.]+, .*?loss: [0-9.]+")
    assert epoch2.findall(resumed.stdout) == epoch2.findall(straight_log)
    assert ckpt["pdstates"]["best_metric"] == ref_ckpt["pdstates"]["best_metric"]
    assert not [f for f in os.listdir(run_dir) if ".tmp" in f]  # the next save cleaned up


def test_kill_after_commit_point_gives_the_new_checkpoint(runs):
    _, dirs, _ = runs
    run_dir = os.path.join(dirs["killed_commit"], ARCH)
    assert os.path.exists(os.path.join(run_dir, "latest.pdstates.commit"))  # killed mid-rename
    params, ckpt = load_params(os.path.join(run_dir, "latest"))  # finishes the renames
    assert ckpt["pdstates"]["epoch"] == 2
    reference, _ = load_params(os.path.join(dirs["straight"], ARCH, "latest"))
    _assert_same(params, reference, atol=0)
    assert sorted(f for f in os.listdir(run_dir) if f.startswith("latest")) == [
        "latest.pdopt", "latest.pdparams", "latest.pdstates"]


def test_nan_loss_names_epoch_and_iteration_and_keeps_the_checkpoint(runs, tmp_path):
    root, dirs, _ = runs
    run_dir = tmp_path / "out" / ARCH
    run_dir.mkdir(parents=True)
    for suffix in ("pdparams", "pdopt", "pdstates"):  # a good epoch-1 checkpoint as 'latest'
        shutil.copy(os.path.join(dirs["straight"], ARCH, f"epoch_1.{suffix}"), run_dir / f"latest.{suffix}")

    def digests():
        return {f: hashlib.sha256((run_dir / f).read_bytes()).hexdigest()
                for f in os.listdir(run_dir) if f.startswith("latest")}

    before = digests()
    proc = run(command(TRAIN, QUICKSTART, tiny_overrides(
        root, str(tmp_path / "out"), epochs=2, checkpoints=str(run_dir / "latest")) + [
        "Optimizer.lr.learning_rate=1e30", "Optimizer.lr.warmup_start_lr=1e30"]))
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert re.search(r"the loss is (nan|inf|-inf) at epoch 2, iteration \d+", errors[0]), errors[0]
    assert "latest" in errors[0]
    assert digests() == before
    _, ckpt = load_params(str(run_dir / "latest"))
    assert ckpt["pdstates"]["epoch"] == 1


def test_save_and_resume_take_components_not_an_engine(tmp_path):
    """ppcls.engine.checkpoint works on a model, optimizer, LR plan and EMA of their own (no
    Engine): after a resume each component is where the saved one was, and the run's record
    comes back as the return value."""
    import paddle

    from ppcls.engine import checkpoint
    from ppcls.engine.ema import ModelEMA
    from ppcls.optimizer import build_optimizer

    section = {"name": "Momentum", "momentum": 0.9,
               "lr": {"name": "Cosine", "learning_rate": 0.1, "by_epoch": False}}

    def parts():
        paddle.seed(1)
        model = paddle.nn.Linear(3, 2)
        optimizer, lr = build_optimizer(section, 4, 5, model)
        return model, optimizer, lr, ModelEMA(model, 0.5)

    model, optimizer, lr, ema = parts()
    for _ in range(3):  # three steps: momentum buffers, LR position and the average all move
        model(paddle.ones([4, 3])).sum().backward()
        optimizer.step()
        optimizer.clear_grad()
        lr.scheduler.step()
        ema.update(model)
    meta = {"epoch": 1, "best_metric": 0.5, "best_epoch": 1, "metric_history": [(1, 0.5)],
            "arch": "Tiny"}
    prefix = str(tmp_path / "latest")
    checkpoint.save_training([prefix], meta, model=model, optimizer=optimizer, lr=lr,
                             device="cpu", ema=ema)
    model2, optimizer2, lr2, ema2 = parts()
    got = checkpoint.resume_training(prefix, model=model2, optimizer=optimizer2, lr=lr2,
                                     device="cpu", config={"Arch": {"name": "Tiny"}}, ema=ema2)
    assert got == meta, got
    assert lr2.scheduler.last_epoch == 3 and lr2.get_lr() == lr.get_lr()
    for a, b in ((model, model2), (ema.model, ema2.model)):
        for (k, v), v2 in zip(a.state_dict().items(), b.state_dict().values()):
            np.testing.assert_array_equal(v.numpy(), v2.numpy(), err_msg=k)
    # momentum buffers (the second model's parameters have other names: matched in order)
    buffers = [[v.numpy() for k, v in o.state_dict().items() if k != "LR_Scheduler"]
               for o in (optimizer, optimizer2)]
    assert len(buffers[0]) == len(buffers[1]) == 2 and np.abs(buffers[0][0]).max() > 0
    for a, b in zip(*buffers):
        np.testing.assert_array_equal(a, b)
    assert checkpoint.complete_checkpoint(prefix)
