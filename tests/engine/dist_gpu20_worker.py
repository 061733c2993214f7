"""Worker of tests/engine/test_gpu_second_pass.py, run on two CPU processes by
``python -m paddle.distributed.launch --nproc_per_node 2 tests/engine/dist_gpu20_worker.py DATA OUT``.

Several short trainings in one launch (a launch costs more than the trainings), each with its
own output folder; every rank writes what it saw to ``OUT/result.rank<R>.json``:

- ``straight``: 2 epochs, uninterrupted (dropout and drop-path on, Global.seed set);
- ``resumed``: a new Engine resumed from ``straight``'s epoch-1 checkpoint, trains epoch 2;
- ``resumed_rank0_rng``: the same, but every rank restores rank 0's random states (what
  resuming did before issue 20), to show the comparison can tell;
- ``no_sync`` / ``sync_every_batch``: one epoch, Global.update_freq=2 (one optimizer step of
  two micro-batches), the first micro-batch in ``DataParallel.no_sync()`` or all-reduced (the
  code before issue 20); the weights, the gradient the optimizer step got and this rank's
  gradient after the first micro-batch are recorded (``params.rank<R>.npz``, the json).
"""

import hashlib
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # tests/: helpers, conftest

from helpers import QUICKSTART, tiny_overrides  # noqa: E402


def _config(root, out, epochs=2, **global_keys):
    from ppcls.utils.config import get_config

    return get_config(QUICKSTART, tiny_overrides(root, out, epochs=epochs, max_iters_per_epoch=3,
                                                 eval_during_train=False, save_interval=1,
                                                 fast_cpu=False, **global_keys)
                      + ["Arch.drop_path_rate=0.1"])


def _params(engine):
    return {k: v.numpy() for k, v in engine.bare_model.named_parameters()}


def _digest(engine):
    from ppcls.engine.hooks import params_digest

    return params_digest(engine.bare_model)  # the trained weights (BN statistics are per rank)


def _train(cfg, rng_steps=None):
    from paddle.utils import unique_name

    from ppcls.engine.engine import Engine

    with unique_name.guard():  # Paddle's internal names as in a fresh process
        engine = Engine(cfg, mode="train")
        if rng_steps is not None:  # this rank's dropout stream: paddle's CPU state after a step
            engine.hooks.append(_RngTrace(rng_steps))
        engine.train()
    return engine


class _RngTrace:
    def __init__(self, out):
        self.out = out

    def after_step(self, engine, step):
        import paddle

        state = str(paddle.get_rng_state("cpu")[0]).split()
        state = " ".join(t for t in state if not t.startswith("0x"))  # drop the C++ address
        self.out.append(hashlib.sha256(state.encode()).hexdigest()[:16])


def main(root, out):
    import paddle.distributed as dist

    from ppcls.engine import checkpoint

    rank = dist.get_rank()
    result = {}
    trace = {}
    straight = _train(_config(root, os.path.join(out, "straight")), trace.setdefault("straight", []))
    result["straight"] = _digest(straight)
    ckpt = os.path.join(out, "straight", "MobileNeXt_x0_35", "epoch_1")
    resumed = _train(_config(root, os.path.join(out, "resumed"), checkpoints=ckpt),
                     trace.setdefault("resumed", []))
    result["resumed"] = _digest(resumed)
    result["resumed_start_epoch"] = resumed.start_epoch

    real = checkpoint.restore_rng

    def rank0_states(states, device, rank=0, world_size=1, source=""):
        return real({k: v for k, v in states.items() if k != "rng_ranks"}, device, 0, 1, source)

    checkpoint.restore_rng = rank0_states
    try:
        old = _train(_config(root, os.path.join(out, "old"), checkpoints=ckpt))
    finally:
        checkpoint.restore_rng = real
    result["resumed_rank0_rng"] = _digest(old)
    result["rng_trace"] = trace

    grads, params = {}, {}
    for name, every in (("no_sync", False), ("sync_every_batch", True)):
        from ppcls.engine.engine import Engine

        Engine.grad_sync_every_batch = every
        seen = grads.setdefault(name, {})
        real_bu = Engine._backward_and_update

        def backward_and_update(self, loss, update=True, _seen=seen, _real=real_bu):
            first = self.bare_model.parameters()[0]
            if update:  # the accumulated, all-reduced gradient the optimizer step gets
                real_step = self.optimizer.step

                def step():
                    _seen["update"] = {k: p.grad.numpy().copy()
                                       for k, p in self.bare_model.named_parameters()
                                       if p.grad is not None}
                    real_step()

                self.optimizer.step = step
            _real(self, loss, update)
            if update:
                del self.optimizer.step
            elif "first" not in _seen:  # this rank's gradient after the first micro-batch
                _seen["first"] = np.asarray(first.grad.numpy(), dtype="float64").ravel()[:64].tolist()

        Engine._backward_and_update = backward_and_update
        try:  # one epoch: 2 micro-batches, one optimizer step
            eng = _train(_config(root, os.path.join(out, name), update_freq=2, epochs=1))
        finally:
            Engine._backward_and_update = real_bu
            Engine.grad_sync_every_batch = False
        params[name] = _params(eng)
        params[name + "_grad"] = seen["update"]
    result["first_grad"] = {k: v["first"] for k, v in grads.items()}
    np.savez(os.path.join(out, f"params.rank{rank}.npz"),
             **{f"{name}/{k}": v for name, ps in params.items() for k, v in ps.items()})
    with open(os.path.join(out, f"result.rank{rank}.json"), "w") as f:
        json.dump(result, f)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
