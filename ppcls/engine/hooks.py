"""Hooks the training loop calls after each step (``hook.after_step(engine, step)``).

``TraceHook`` (on when ``PPCLS_TRACE_DIR`` names a folder; a test and debug aid): each rank
appends one JSON line a training step to ``trace.rank<R>.jsonl`` with the sample indices and
labels of its batch and a SHA-256 of the trainable parameters after the update. With
``PPCLS_TRACE_HOLD=<rank>:<n>`` that rank, after its n-th record, writes ``hold.rank<R>`` beside
the trace and waits while the file exists (a test kills the process there, at a known step).
"""

import hashlib
import json
import os
import time

import numpy as np

TRACE_ENV = "PPCLS_TRACE_DIR"
HOLD_ENV = "PPCLS_TRACE_HOLD"


def params_digest(model):
    """SHA-256 of the trainable parameters (not the BN running statistics, which are per rank)."""
    h = hashlib.sha256()
    for name, p in model.named_parameters():
        if p.stop_gradient:
            continue
        h.update(name.encode())
        h.update(np.ascontiguousarray(p.numpy()).tobytes())
    return h.hexdigest()


class TraceHook:
    def __init__(self, folder, hold=None):
        self.folder, self.written = folder, 0
        self.hold = tuple(int(v) for v in hold.split(":")) if hold else None

    def after_step(self, engine, step):
        os.makedirs(self.folder, exist_ok=True)
        record = {"rank": engine.rank, "epoch": step["epoch"], "iter": step["iter"],
                  "indices": [int(i) for i in step["indices"]],
                  "labels": step["labels"].numpy().reshape(-1).tolist(),
                  "params": params_digest(engine.bare_model)}
        with open(os.path.join(self.folder, f"trace.rank{engine.rank}.jsonl"), "a") as f:
            f.write(json.dumps(record) + "\n")
        self.written += 1
        if self.hold == (engine.rank, self.written):
            marker = os.path.join(self.folder, f"hold.rank{engine.rank}")
            with open(marker, "w") as f:
                f.write(str(os.getpid()))
            while os.path.exists(marker):
                time.sleep(0.1)


def default_hooks():
    """The hooks the environment asks for."""
    folder = os.environ.get(TRACE_ENV)
    return [TraceHook(folder, os.environ.get(HOLD_ENV))] if folder else []
