"""Training checkpoints: ``<prefix>.pdparams`` / ``.pdopt`` / ``.pdstates`` (+ ``.pdema``), atomic.

A checkpoint is one prefix (``output/MobileNeXt_100/latest``) and three or four files:

- ``.pdparams``  the model ``state_dict`` (PaddleClas format; loadable as pretrained weights);
- ``.pdopt``     the optimizer ``state_dict`` (momentum buffers, and the LR scheduler state);
- ``.pdema``     the EMA weights, when the config has an ``EMA`` section (same format as
                 ``.pdparams``);
- ``.pdstates``  a dict: ``epoch``, ``best_metric``, ``lr_state``, ``lr_signature``, ``rng``, and
                 ``files``: the SHA-256 of each of the other files of this checkpoint.

Writing is crash-safe. Every file is first written to a temp file in the same folder
(``.<name>.tmp``) and flushed to disk. Then the ``.pdstates`` temp file is renamed to
``<prefix>.pdstates.commit``: that rename is the commit point. Then each temp file is renamed
over its final name (``os.replace``), ``.pdstates`` last. A process killed before the commit
point leaves the old checkpoint untouched (stray temp files are ignored and cleaned up); one
killed after it leaves a complete commit record, and :func:`load_checkpoint` (or the next save)
finishes the renames first. Loading checks every file against the hashes in ``.pdstates``, so
a mix of two checkpoints is never loaded.
"""

import hashlib
import io
import os
import time

from ppcls.utils.errors import CheckpointError

PARTS = ("pdparams", "pdopt", "pdema")
COMMIT_SUFFIX = ".pdstates.commit"
# Test hook: pause at a named stage (write, before_commit, after_commit) of a save, so a test
# can SIGKILL the process there: PPCLS_TEST_SAVE_PAUSE=write@2 pauses half-way through writing
# the first file of the second save_checkpoint call.
PAUSE_ENV = "PPCLS_TEST_SAVE_PAUSE"


def _serialize(obj):
    import paddle

    buf = io.BytesIO()
    paddle.save(obj, buf)
    return buf.getvalue()


def _tmp_name(final):
    folder, base = os.path.split(final)
    return os.path.join(folder, f".{base}.tmp")


_SAVES = [0]  # save_checkpoint calls in this process


def _pause_wanted(stage):
    """``PPCLS_TEST_SAVE_PAUSE=<stage>[@<n>]``: pause at ``stage`` of the n-th save (default 1st)."""
    value = os.environ.get(PAUSE_ENV)
    if not value:
        return False
    name, _, nth = value.partition("@")
    return name == stage and _SAVES[0] == int(nth or 1)


def _maybe_pause(stage, folder):
    """If ``PPCLS_TEST_SAVE_PAUSE`` names this stage, say so in a marker file and wait forever."""
    if not _pause_wanted(stage):
        return
    with open(os.path.join(folder, f".paused-{stage}"), "w") as f:
        f.write(str(os.getpid()))
    while True:
        time.sleep(1)


def _write_file(path, data, pause_stage=None):
    with open(path, "wb") as f:
        if pause_stage:
            half = len(data) // 2
            f.write(data[:half])
            f.flush()
            _maybe_pause(pause_stage, os.path.dirname(path))
            f.write(data[half:])
        else:
            f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _fsync_dir(folder):
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _finish_commit(prefix):
    """Complete an interrupted save of ``prefix`` if its commit record exists; drop stray temps."""
    folder = os.path.dirname(os.path.abspath(prefix))
    commit = prefix + COMMIT_SUFFIX
    if os.path.exists(commit):
        for part in PARTS:
            tmp = _tmp_name(f"{prefix}.{part}")
            if os.path.exists(tmp):
                os.replace(tmp, f"{prefix}.{part}")
        os.replace(commit, prefix + ".pdstates")
        _fsync_dir(folder)
    for part in PARTS + ("pdstates",):
        tmp = _tmp_name(f"{prefix}.{part}")
        if os.path.exists(tmp):
            os.remove(tmp)


def save_checkpoint(prefixes, model_state, opt_state, states, ema_state=None):
    """Write one checkpoint under each prefix in ``prefixes`` (e.g. latest and epoch_5).

    ``states`` is the ``.pdstates`` dict without ``files``; each object is serialized once.
    """
    _SAVES[0] += 1
    blobs = {"pdparams": _serialize(model_state), "pdopt": _serialize(opt_state)}
    if ema_state is not None:
        blobs["pdema"] = _serialize(ema_state)
    files = {part: hashlib.sha256(data).hexdigest() for part, data in blobs.items()}
    states_blob = _serialize(dict(states, files=files))
    for prefix in prefixes:
        folder = os.path.dirname(os.path.abspath(prefix))
        os.makedirs(folder, exist_ok=True)
        _finish_commit(prefix)
        for i, (part, data) in enumerate(blobs.items()):
            stage = "write" if (i == 0 and _pause_wanted("write")) else None
            _write_file(_tmp_name(f"{prefix}.{part}"), data, pause_stage=stage)
        _write_file(_tmp_name(f"{prefix}.pdstates"), states_blob)
        _maybe_pause("before_commit", folder)
        os.replace(_tmp_name(f"{prefix}.pdstates"), prefix + COMMIT_SUFFIX)  # commit point
        _fsync_dir(folder)
        for i, part in enumerate(blobs):
            os.replace(_tmp_name(f"{prefix}.{part}"), f"{prefix}.{part}")
            if i == 0:
                _maybe_pause("after_commit", folder)
        os.replace(prefix + COMMIT_SUFFIX, prefix + ".pdstates")
        _fsync_dir(folder)
        if "pdema" not in blobs and os.path.exists(f"{prefix}.pdema"):
            os.remove(f"{prefix}.pdema")  # left from an older checkpoint; not part of this one


def strip_suffix(path):
    for part in PARTS + ("pdstates",):
        if path.endswith("." + part):
            return path[: -len(part) - 1]
    return path


def checkpoint_exists(prefix):
    prefix = strip_suffix(os.fspath(prefix))
    return os.path.exists(prefix + ".pdstates") or os.path.exists(prefix + COMMIT_SUFFIX)


def _load(path, what, data=None):
    from ppcls.utils.safe_load import safe_load  # refuses pickles that would run code

    try:
        return safe_load(path, data)
    except CheckpointError:
        raise
    except Exception as err:
        msg = " ".join(str(err).split()) or type(err).__name__
        raise CheckpointError(f"{path} is not a readable {what} file ({msg})") from None


def load_checkpoint(prefix):
    """Read a checkpoint (finishing an interrupted save first) and check that it is whole.

    Returns ``{"pdparams": ..., "pdopt": ..., "pdema": ... or None, "pdstates": ...}``.
    ``prefix`` may end in one of the suffixes (``latest.pdparams``) or not (``latest``).
    """
    prefix = strip_suffix(os.fspath(prefix))
    if os.path.exists(prefix + COMMIT_SUFFIX):
        try:
            _finish_commit(prefix)
        except OSError as err:
            raise CheckpointError(f"{prefix}: cannot finish an interrupted save ({err})") from None
    states_path = prefix + ".pdstates"
    if not os.path.isfile(states_path):
        if os.path.isfile(prefix + ".pdparams"):
            raise CheckpointError(f"{prefix}.pdparams has no {states_path} beside it, so it cannot "
                                  "be resumed from; use Global.pretrained_model to load weights only")
        raise CheckpointError(f"checkpoint not found: {prefix} (expected {prefix}.pdparams, "
                              f".pdopt and .pdstates)")
    states = _load(states_path, ".pdstates")
    if not isinstance(states, dict) or "epoch" not in states:
        raise CheckpointError(f"{states_path} is not a training-state file (it has no epoch)")
    # A PaddleClas checkpoint: {"metric": ..., "epoch": ...}, no hashes to check the files by.
    files = states.get("files") or {"pdparams": None, "pdopt": None}
    out = {"pdstates": states, "pdema": None}
    for part, digest in files.items():
        path = f"{prefix}.{part}"
        if not os.path.isfile(path):
            raise CheckpointError(f"{path} is missing (the checkpoint {prefix} is incomplete)")
        with open(path, "rb") as f:
            data = f.read()
        if digest is not None and hashlib.sha256(data).hexdigest() != digest:
            raise CheckpointError(f"{path} does not belong to {states_path} (content hash differs); "
                                  "the checkpoint was modified or mixed with another one")
        out[part] = _load(path, "." + part, data)
    return out


__all__ = ["save_checkpoint", "load_checkpoint", "checkpoint_exists", "strip_suffix", "PAUSE_ENV"]
