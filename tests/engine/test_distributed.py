"""Two CPU processes under paddle.distributed.launch: disjoint shards, identical parameters after
every step, one writer; and evaluation across ranks counts every validation image once."""

import json
import os
import re
import sys

import pytest

from helpers import (EVAL, QUICKSTART, TRAIN, N_TRAIN, command, run_ok, tiny_data,  # noqa: F401
                               tiny_overrides)

ARCH = "MobileNeXt_x0_35"


def _launch(tool, overrides, log_dir, **env_extra):
    cmd = [sys.executable, "-m", "paddle.distributed.launch", "--nproc_per_node", "2",
           "--log_dir", str(log_dir)] + command(tool, QUICKSTART, overrides)[1:]
    return run_ok(cmd, **env_extra)


def _trace(folder, rank):
    with open(os.path.join(folder, f"trace.rank{rank}.jsonl")) as f:
        return [json.loads(line) for line in f]


def _top1(text):
    return float(re.findall(r"\[Eval\]\[Epoch \d+\]\[Avg\].*top1: ([0-9.]+)", text)[-1])


def test_two_processes_train_in_step_and_rank0_writes(tiny_data, tmp_path):
    root, train_labels, _ = tiny_data
    out, trace, logs = tmp_path / "out", tmp_path / "trace", tmp_path / "launch"
    _launch(TRAIN, tiny_overrides(root, str(out), epochs=2, save_interval=1), logs,
            PPCLS_TRACE_DIR=trace)
    r0, r1 = _trace(trace, 0), _trace(trace, 1)
    steps = N_TRAIN // 16  # 48 images, 8 a batch on each of 2 ranks
    assert len(r0) == len(r1) == 2 * steps
    for epoch in (1, 2):
        seen = {}
        for rank, records in ((0, r0), (1, r1)):
            mine = [i for r in records if r["epoch"] == epoch for i in r["indices"]]
            assert len(mine) == len(set(mine)) == N_TRAIN // 2
            seen[rank] = set(mine)
            for r in records:  # the batch really held those samples
                assert r["labels"] == [train_labels[i] for i in r["indices"]]
        assert not seen[0] & seen[1]
        assert seen[0] | seen[1] == set(range(N_TRAIN))
    digests = [r["params"] for r in r0]
    assert digests == [r["params"] for r in r1]  # identical parameters after every step
    assert len(set(digests)) == len(digests)  # and they do change every step
    assert [r["indices"] for r in r0 if r["epoch"] == 1] != [r["indices"] for r in r0 if r["epoch"] == 2]

    run_dir = out / ARCH
    expected = {f"{n}.{s}" for n in ("latest", "best_model", "epoch_1", "epoch_2")
                for s in ("pdparams", "pdopt", "pdstates")} | {"config.yaml", "train.log"}
    assert set(os.listdir(run_dir)) == expected
    log = (run_dir / "train.log").read_text()
    assert log.count("[Train][Epoch 1/2][Iter: 0/3]") == 1
    assert log.count(f"Already save model in {run_dir / 'latest'}\n") == 2  # once an epoch, not per rank
    worker0 = (logs / "workerlog.0").read_text()
    worker1 = (logs / "workerlog.1").read_text()
    assert "[Train][Epoch 2/2][Avg]" in worker0 and "Already save model" in worker0
    assert "[Train]" not in worker1 and "Already save model" not in worker1 and "[Eval]" not in worker1

    # The 2-rank evaluation during training (27 images: one padded duplicate) and a 2-rank
    # tools/eval.py both give exactly what one process gives on the saved model.
    train_top1 = _top1(worker0)
    weights = f"Global.pretrained_model={run_dir / 'latest'}"
    single = run_ok(command(EVAL, QUICKSTART, tiny_overrides(root, str(tmp_path / "e1")) + [weights]))
    _launch(EVAL, tiny_overrides(root, str(tmp_path / "e2")) + [weights], tmp_path / "launch_eval")
    multi = (tmp_path / "launch_eval" / "workerlog.0").read_text()
    assert _top1(single.stdout) == _top1(multi) == pytest.approx(train_top1, abs=1e-9)
    assert "[Eval][Epoch 0][Iter: 0/2]" in multi  # 14 images a rank, 8 a batch
