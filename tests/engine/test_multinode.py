"""Two nodes on loopback (``paddle.distributed.launch --nnodes 2 --master 127.0.0.1:PORT``, one
process each, two launch commands) train exactly as ``--nproc_per_node 2`` does; one node killed
mid-epoch stops both, and a resume on both continues exactly.

Every process gets a timeout and a tag in its environment; whatever is left is SIGKILLed at the
end, workers included (the launcher starts each worker in a session of its own).

On a slow or loaded machine: the timeouts are bounds for a hang, never expectations (10 min for
a run, 3 min for node 0 to notice the killed node), and a two-node start that fails before its
first step (the master port taken by another process between choosing it and the launcher's
bind, a rendezvous timeout) is retried on a new port, up to twice.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid

import numpy as np

from helpers import (QUICKSTART, TRAIN, command, env, paused, tiny_data,  # noqa: F401
                               tiny_overrides)

ARCH = "MobileNeXt_x0_35"
EPOCHS = 2
STEPS = 3  # 48 images, 8 a batch on each of 2 ranks
TIMEOUT = 600        # a bound for a hang; a loaded 2-core machine can take minutes to start
NOTICE_TIMEOUT = 180  # node 0 stopping after node 1 was killed (7 s measured on a quiet machine)
START_ATTEMPTS = 3


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tagged(tag):
    """PIDs whose environment holds ``tag``: the launchers and their workers."""
    pids = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                if tag.encode() in f.read():
                    pids.append(int(pid))
        except OSError:
            pass
    return pids


def _kill(tag):
    for pid in _tagged(tag):
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass


class _Job:
    """Launch commands (one per node), each tagged so that its whole tree can be killed."""

    def __init__(self, tmp, name, root, extra=(), nodes=2, hold=None):
        self.tmp, self.procs, self.tags = tmp, [], []
        self.trace = tmp / f"trace_{name}"
        overrides = tiny_overrides(root, str(tmp / "out"), epochs=EPOCHS, save_interval=1,
                                   eval_during_train=False) + list(extra)
        tool = (paused(command(TRAIN, QUICKSTART, overrides)) if hold else
                command(TRAIN, QUICKSTART, overrides))[1:]
        port = _free_port()
        for node in range(nodes):
            tag = f"PPCLS_TEST_NODE={uuid.uuid4().hex}"
            if nodes == 1:
                launch = ["--nproc_per_node", "2"]
            else:
                launch = ["--nnodes", "2", "--nproc_per_node", "1", "--master", f"127.0.0.1:{port}",
                          "--rank", str(node)]
            cmd = [sys.executable, "-m", "paddle.distributed.launch", *launch,
                   "--log_dir", str(tmp / f"log_{name}_{node}")] + tool
            e = env(PPCLS_TRACE_DIR=self.trace, **dict([tag.split("=")]))
            if hold:  # e.g. "1:4": rank 1 waits after its 4th step until the test kills it
                e["PPCLS_TRACE_HOLD"] = hold
            self.procs.append(subprocess.Popen(cmd, cwd=os.path.dirname(os.path.dirname(TRAIN)), env=e,
                                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                               text=True, start_new_session=True))
            self.tags.append(tag)

    def wait(self, timeout=TIMEOUT):
        codes, outputs = [], []
        for proc in self.procs:
            out, _ = proc.communicate(timeout=timeout)
            codes.append(proc.returncode)
            outputs.append(out)
        return codes, outputs

    def kill_node(self, node):
        _kill(self.tags[node])

    def records(self, rank):
        path = self.trace / f"trace.rank{rank}.jsonl"
        if not path.exists():
            return []
        with open(path) as f:
            return [json.loads(line) for line in f if line.endswith("\n")]

    def cleanup(self):
        for tag in self.tags:
            _kill(tag)


def _params(prefix):
    from ppcls.engine.checkpoint import load_checkpoint

    return {k: v.numpy() for k, v in load_checkpoint(prefix)["pdparams"].items()}


def _steps(records):
    return [(r["epoch"], r["iter"], r["indices"], r["params"]) for r in records]


def test_two_nodes_train_as_two_processes_and_survive_a_killed_node(tiny_data, tmp_path):
    root, _, _ = tiny_data
    jobs = []
    try:
        # The reference: one node, two processes, uninterrupted.
        ref = _Job(tmp_path / "ref", "ref", root, nodes=1)
        jobs.append(ref)
        codes, outs = ref.wait()
        assert codes == [0], outs[0][-3000:]

        # Two nodes; node 1 (launcher and worker) is SIGKILLed in the middle of epoch 2.
        for attempt in range(START_ATTEMPTS):
            # rank 1 holds after its first step of epoch 2 (a fast machine would otherwise
            # finish the run between two polls)
            job = _Job(tmp_path / f"two{attempt}", "two", root, hold=f"1:{STEPS + 1}")
            jobs.append(job)
            deadline = time.time() + TIMEOUT
            started = True
            while not (job.trace / "hold.rank1").exists():
                assert time.time() < deadline, "timed out waiting for the two nodes' steps"
                if any(p.poll() is not None for p in job.procs):
                    started = False
                    break
                time.sleep(0.2)
            if started:
                break
            # a start that died before its first step (port taken, rendezvous timeout): retry
            assert not job.records(0) and not job.records(1), [p.poll() for p in job.procs]
            job.cleanup()
        else:
            raise AssertionError(f"the two-node job did not start in {START_ATTEMPTS} attempts")
        job.kill_node(1)
        killed = time.time()
        codes, outs = job.wait(timeout=NOTICE_TIMEOUT)  # raises TimeoutExpired if node 0 hangs
        assert time.time() - killed < NOTICE_TIMEOUT
        assert codes[0] != 0, outs[0][-3000:]  # node 0 noticed: it did not finish alone
        for rank in (0, 1):  # until the kill: step for step what the two processes did
            done = _steps(job.records(rank))
            assert STEPS < len(done) < EPOCHS * STEPS
            assert done == _steps(ref.records(rank))[:len(done)]
        ckpt = tmp_path / f"two{attempt}" / "out" / ARCH
        assert not os.path.exists(ckpt / "epoch_2.pdstates")  # the kill came before epoch 2 ended
        assert os.path.exists(ckpt / "epoch_1.pdstates")

        # Resume on both nodes from latest (epoch 1): the rest is the reference's, exactly.
        resumed = _Job(tmp_path / f"two{attempt}", "resumed", root,
                       [f"Global.checkpoints={ckpt / 'latest'}"])
        jobs.append(resumed)
        codes, outs = resumed.wait()
        assert codes == [0, 0], outs[0][-3000:] + outs[1][-3000:]
        for rank in (0, 1):
            assert _steps(resumed.records(rank)) == _steps(ref.records(rank))[STEPS:]
        final, expected = _params(str(ckpt / "latest")), _params(str(tmp_path / "ref" / "out" / ARCH / "latest"))
        assert final.keys() == expected.keys()
        for name in expected:
            np.testing.assert_array_equal(final[name], expected[name], err_msg=name)
    finally:
        for j in jobs:
            j.cleanup()
