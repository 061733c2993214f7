"""Everything a training run saves and restores: checkpoint files, RNG states, parameter
renaming, the LR-on-resume rule, and PaddleClas's checkpoint format.

Files: ``<prefix>.pdparams`` / ``.pdopt`` / ``.pdstates`` (+ ``.pdema``), written atomically.

A checkpoint is one prefix (``output/MobileNeXt_100/latest``) and three or four files:

- ``.pdparams``  the model ``state_dict`` (PaddleClas format; loadable as pretrained weights);
                 with an ``EMA`` section, the EMA weights (as PaddleClas develop saves them:
                 what eval, export and fine-tuning read is the averaged model);
- ``.pdopt``     the optimizer ``state_dict`` (momentum buffers, and the LR scheduler state);
- ``.pdema``     with an ``EMA`` section only: the trained (not averaged) weights, which
                 resuming continues from (PaddleClas develop's layout);
- ``.pdstates``  a dict: ``epoch``, ``best_metric`` (and PaddleClas's ``metric``), ``lr_state``,
                 ``lr_signature``, ``rng``, and ``files``: the SHA-256 of each of the other files of this checkpoint;
                 on more than one card also ``rng_ranks``: every rank's own random states
                 (:func:`gather_rng_states`), each restored on its own rank (:func:`restore_rng`).

Writing is crash-safe. Every file is first written to a temp file in the same folder
(``.<name>.tmp``) and flushed to disk. Then the ``.pdstates`` temp file is renamed to
``<prefix>.pdstates.commit``: that rename is the commit point. Then each temp file is renamed
over its final name (``os.replace``), ``.pdstates`` last. A process killed before the commit
point leaves the old checkpoint untouched (stray temp files are ignored and cleaned up); one
killed after it leaves a complete commit record, and :func:`load_checkpoint` (or the next save)
finishes the renames first. Loading checks every file against the hashes in ``.pdstates``, so
a mix of two checkpoints is never loaded.

Resuming (:func:`resume_training`) restores weights, optimizer state, epoch, best metric, EMA,
loss scaler and every RNG. The LR schedule rule: if the checkpoint was written under the same
``Optimizer.lr`` section, ``Global.epochs`` and iterations per epoch (the ``lr_signature``),
the scheduler continues exactly where it stopped; if any of them differs (the cooldown config:
``Constant`` 1e-5 to epoch 210 after a 200-epoch cosine run), the schedule is the new
config's, positioned at the resumed epoch, and a log line says so. The config decides the
learning rate, the checkpoint decides the position.

PaddleClas checkpoints (``.pdstates`` = ``{metric, epoch}``, no hashes, no RNG states) are read
through :func:`from_paddleclas_states`; ours carry PaddleClas's two keys as well
(:func:`to_paddleclas_states`), so PaddleClas can resume from them.
"""

import hashlib
import os
import random

import numpy as np

from ppcls.utils import logger
from ppcls.utils.errors import CheckpointError

PARTS = ("pdparams", "pdopt", "pdema")
COMMIT_SUFFIX = ".pdstates.commit"


def _serialize(obj):
    """``paddle.save`` bytes, with numpy names numpy 1.x reads too (PaddleClas pins numpy 1.24)."""
    from ppcls.utils.safe_load import dumps

    return dumps(obj)


def _tmp_name(final):
    folder, base = os.path.split(final)
    return os.path.join(folder, f".{base}.tmp")


def _write_file(path, data):
    with open(path, "wb") as f:
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


def _remove_temps(prefix):
    for part in PARTS + ("pdstates",):
        try:
            os.remove(_tmp_name(f"{prefix}.{part}"))
        except OSError:
            pass


def _write_uncommitted(prefix, blobs, states_blob):
    """Write every file of the checkpoint ``prefix`` to its temp name (before the commit point).

    Any failure (disk full, read-only, a signal) removes these temp files again, so the
    previous checkpoint stays as it was and no debris keeps the disk full; an ``OSError``
    becomes one ``OutputError`` line naming the file.
    """
    path = folder = os.path.dirname(os.path.abspath(prefix))
    try:
        os.makedirs(folder, exist_ok=True)
        _finish_commit(prefix)
        for part, data in list(blobs.items()) + [("pdstates", states_blob)]:
            path = _tmp_name(f"{prefix}.{part}")
            _write_file(path, data)
    except BaseException as err:
        _remove_temps(prefix)
        if not isinstance(err, OSError):
            raise
        from ppcls.utils.errors import write_error

        old = (f"the previous checkpoint {prefix} is intact" if checkpoint_exists(prefix)
               else "no earlier checkpoint")
        raise write_error(err, path, f"saving the checkpoint {prefix} ({old}; temporary files "
                                     "removed)") from None


def save_checkpoint(prefixes, model_state, opt_state, states, ema_state=None):
    """Write one checkpoint under each prefix in ``prefixes`` (e.g. latest and epoch_5).

    ``states`` is the ``.pdstates`` dict without ``files``; each object is serialized once.
    """
    blobs = {"pdparams": _serialize(model_state), "pdopt": _serialize(opt_state)}
    if ema_state is not None:
        blobs["pdema"] = _serialize(ema_state)
    files = {part: hashlib.sha256(data).hexdigest() for part, data in blobs.items()}
    states_blob = _serialize(dict(states, files=files))
    for prefix in prefixes:
        folder = os.path.dirname(os.path.abspath(prefix))
        _write_uncommitted(prefix, blobs, states_blob)
        os.replace(_tmp_name(f"{prefix}.pdstates"), prefix + COMMIT_SUFFIX)  # commit point
        _fsync_dir(folder)
        for part in blobs:
            os.replace(_tmp_name(f"{prefix}.{part}"), f"{prefix}.{part}")
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
    """The one place checkpoint files are unpickled."""
    from ppcls.utils.safe_load import safe_load  # refuses pickles that would run code

    try:
        return safe_load(path, data)
    except CheckpointError:
        raise
    except Exception as err:
        msg = " ".join(str(err).split()) or type(err).__name__
        raise CheckpointError(f"{path} is not a readable {what} file ({msg})") from None


MAX_EPOCH = 10 ** 6  # far beyond any schedule; an epoch past it is a damaged or crafted file


def _is_int(value):
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _is_number(value):
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


def validate_states(states, path):
    """Check every field of a ``.pdstates`` dict we act on, so a damaged or crafted file is one
    ``CheckpointError`` naming the field (a negative epoch used to hang the loader for good, a
    string epoch or a missing ``pdopt`` hash gave tracebacks, an epoch of 10^20 trained nothing).

    ``epoch``: an integer in ``[0, 10^6]``; ``best_metric`` / ``metric``: a number or None;
    ``files``: ``{pdparams, pdopt[, pdema]: sha256 hex}``; ``rng``: numpy's 624-word state,
    Python's 625-word state, Paddle's CPU state; ``lr_state``: a dict.
    """
    def bad(key, expected, value):
        shown = repr(value)
        shown = shown if len(shown) <= 60 else shown[:57] + "..."
        raise CheckpointError(f"{path}: {key} must be {expected}, found {shown} (a damaged or "
                              "hand-made .pdstates; resume from another checkpoint)")

    epoch = states.get("epoch")
    if not _is_int(epoch) or not 0 <= int(epoch) <= MAX_EPOCH:
        bad("epoch", f"an integer from 0 to {MAX_EPOCH}", epoch)
    for key in ("best_metric", "metric"):
        value = states.get(key)
        if value is not None and not (_is_number(value) and np.isfinite(float(value))
                                      or hasattr(value, "numpy")):
            bad(key, "a finite number or None", value)
    if "files" in states:
        files = states["files"]
        if not isinstance(files, dict) or not {"pdparams", "pdopt"} <= set(files) \
                or not set(files) <= set(PARTS):
            bad("files", "{pdparams, pdopt[, pdema]: SHA-256}", files)
        for part, digest in files.items():
            if not (isinstance(digest, str) and len(digest) == 64
                    and all(c in "0123456789abcdef" for c in digest)):
                bad(f"files.{part}", "a SHA-256 hex digest", digest)
    if "lr_state" in states and not isinstance(states["lr_state"], dict):
        bad("lr_state", "a dict (the LR scheduler state)", states["lr_state"])
    if "rng" in states:
        _validate_rng(states["rng"], "rng", bad)
    if "rng_ranks" in states:
        ranks = states["rng_ranks"]
        if not isinstance(ranks, (list, tuple)) or not 1 <= len(ranks) <= 65536:
            bad("rng_ranks", "a list of per-rank random states", ranks)
        for i, rng in enumerate(ranks):
            _validate_rng(rng, f"rng_ranks[{i}]", bad)
            if rng.get("paddle_gpu_own") is not None and not (
                    isinstance(rng["paddle_gpu_own"], (list, tuple)) and len(rng["paddle_gpu_own"]) == 1):
                bad(f"rng_ranks[{i}].paddle_gpu_own", "a one-element list (this rank's GPU state)",
                    rng["paddle_gpu_own"])


def _validate_rng(rng, key, bad):
    """One set of generator states (``rng``, or one entry of ``rng_ranks``)."""
    if not isinstance(rng, dict) or "numpy" not in rng or "python" not in rng \
            or "paddle_cpu" not in rng:
        bad(key, "a dict with numpy, python and paddle_cpu states", rng)
    state = rng["numpy"]
    if not (isinstance(state, (list, tuple)) and len(state) == 5 and state[0] == "MT19937"
            and isinstance(state[1], (list, tuple)) and len(state[1]) == 624
            and all(_is_int(v) and 0 <= v < 2 ** 32 for v in state[1])
            and _is_int(state[2]) and 0 <= state[2] <= 624):
        bad(f"{key}.numpy", "numpy's MT19937 state (624 32-bit words and a position)", state)
    state = rng["python"]
    if not (isinstance(state, (list, tuple)) and len(state) == 3
            and isinstance(state[1], (list, tuple)) and len(state[1]) == 625
            and all(_is_int(v) and 0 <= v < 2 ** 32 for v in state[1][:624])):
        bad(f"{key}.python", "Python's random state (625 words)", state)
    if rng.get("paddle_gpu") is not None and not isinstance(rng["paddle_gpu"], (list, tuple)):
        bad(f"{key}.paddle_gpu", "a list of Paddle GPU generator states", rng["paddle_gpu"])

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
    validate_states(states, states_path)
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


def from_paddleclas_states(states):
    """A ``.pdstates`` dict in our terms: PaddleClas writes ``{"metric": best, "epoch": n}``
    (no hashes, no RNG states, no LR signature); ours has ``best_metric`` and more."""
    out = dict(states)
    if "best_metric" not in out:
        out["best_metric"] = out.get("metric")
    return out


def to_paddleclas_states(states):
    """The PaddleClas view of our ``.pdstates``: ``{"metric": best, "epoch": n}`` (PaddleClas
    starts from a best metric of -1.0 before any evaluation)."""
    best = states.get("best_metric")
    return {"metric": -1.0 if best is None else best, "epoch": states["epoch"]}


# --------------------------------------------------------------------------- RNG states


def rng_state(device):
    """The state of every generator a run draws from (numpy, python, paddle cpu/gpu)."""
    import paddle

    name, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"numpy": [name, keys.tolist(), pos, has_gauss, cached],  # plain data: paddle.load
             "python": random.getstate(),                          # turns arrays into tensors
             "paddle_cpu": paddle.get_rng_state("cpu")}
    if device == "gpu":
        state["paddle_gpu"] = paddle.get_rng_state("gpu")
    return state


def gpu_count():
    """The number of GPUs this process sees (0 on a build without CUDA)."""
    import paddle

    return paddle.device.cuda.device_count() if paddle.is_compiled_with_cuda() else 0


def set_rng_state(state, device, source="the checkpoint"):
    """Restore the generators of :func:`rng_state`. Paddle keeps one GPU generator per visible
    device; when ``source`` was saved with another number of them (a 4-card run resumed under
    ``CUDA_VISIBLE_DEVICES=0``) the GPU states are skipped with one warning, the rest restored."""
    import paddle

    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    random.setstate(state["python"])
    paddle.set_rng_state(state["paddle_cpu"], "cpu")
    if device == "gpu" and "paddle_gpu" in state:
        saved, now = len(state["paddle_gpu"]), gpu_count()
        if saved != now:
            logger.warning(f"{source} holds GPU random states for {saved} device(s) but this "
                           f"process sees {now}: the GPU generators start fresh (numpy, python "
                           "and CPU states are restored), so the resumed run is not bit-identical")
        else:
            paddle.set_rng_state(state["paddle_gpu"], "gpu")


def own_rng_state(device):
    """This process's generators only: numpy, python, paddle's CPU generator and, on GPU, the
    generator of the one card this rank draws from (``gpu_id``). ``paddle.get_rng_state("gpu")``
    lists every *visible* card, and ``paddle.distributed.launch`` does not narrow
    ``CUDA_VISIBLE_DEVICES``, so rank k's own stream is entry k of its list; the others never move."""
    from ppcls.utils.global_config import selected_gpu

    state = rng_state("cpu")
    if device == "gpu":
        import paddle

        gpu_id = selected_gpu()
        state["gpu_id"] = gpu_id
        state["paddle_gpu_own"] = [paddle.get_rng_state("gpu")[gpu_id]]
    return state


def gather_rng_states(device, world_size):
    """Every rank's :func:`own_rng_state`, in rank order (a collective: all ranks call it), or
    ``None`` on one card. Rank 0 saves the list as ``.pdstates["rng_ranks"]``."""
    if world_size <= 1:
        return None
    import paddle.distributed as dist

    states = []
    dist.all_gather_object(states, own_rng_state(device))
    return states


def set_own_rng_state(state, device, source="the checkpoint"):
    """Restore :func:`own_rng_state` on this rank: numpy, python, CPU, and on GPU only this
    rank's card (the other cards' generators are left as they are)."""
    set_rng_state({k: state[k] for k in ("numpy", "python", "paddle_cpu")}, "cpu")
    if device == "gpu" and state.get("paddle_gpu_own"):
        import paddle

        from ppcls.utils.global_config import selected_gpu

        now = list(paddle.get_rng_state("gpu"))
        gpu_id = selected_gpu()
        if gpu_id >= len(now):
            logger.warning(f"{source}: this process's card {gpu_id} is not among the {len(now)} "
                           "visible ones; its GPU generator starts fresh")
            return
        now[gpu_id] = state["paddle_gpu_own"][0]
        paddle.set_rng_state(now, "gpu")


def restore_rng(states, device, rank=0, world_size=1, source="the checkpoint"):
    """Put back the generators of a ``.pdstates`` dict on this rank.

    ``rng_ranks`` (multi-card checkpoints since issue 20): each rank restores its own entry, so
    every rank's dropout / drop-path stream continues where it stopped. Without it (one card,
    an older multi-card checkpoint of ours): ``rng`` as before, on every rank. Resumed on another
    number of cards, the ranks that have a saved entry restore it and one warning says the
    run is not bit-identical. Returns whether anything was restored."""
    per_rank = states.get("rng_ranks")
    if per_rank:
        if len(per_rank) != world_size and rank == 0:
            logger.warning(f"{source} holds random states of {len(per_rank)} rank(s); this run has "
                           f"{world_size}: the resumed run is not bit-identical to an "
                           "uninterrupted one")
        if rank < len(per_rank):
            set_own_rng_state(per_rank[rank], device, source=source)
            return True
        return False
    if "rng" not in states:
        return False
    if world_size > 1 and rank == 0:
        logger.warning(f"{source} has one set of random states for all ranks (written before "
                       "per-rank states were saved): ranks >= 1 restore rank 0's")
    set_rng_state(states["rng"], device, source=source)
    return True


# --------------------------------------------------------------------------- parameter names


def param_names(model):
    """Structured name -> Paddle-internal name (``conv2d_3.w_0``) of every parameter."""
    return {name: p.name for name, p in model.named_parameters()}


def remap_optimizer_state(opt_state, saved_names, model):
    """Optimizer state is keyed by Paddle's internal parameter names, which depend on what was
    built before the model; map them through the structured names saved with the checkpoint."""
    current = param_names(model)
    rename = {old: current[s] for s, old in (saved_names or {}).items()
              if s in current and current[s] != old}
    if not rename:
        return opt_state
    olds = sorted(rename, key=len, reverse=True)

    def new_key(key):
        for old in olds:
            if key == old or key.startswith(old + "_"):
                return rename[old] + key[len(old):]
        return key

    out = {}
    for key, value in opt_state.items():
        if key == "master_weights" and isinstance(value, dict):
            out[key] = {new_key(k): v for k, v in value.items()}
        else:
            out[new_key(key)] = value
    return out


def optimizer_state(pdopt, source):
    """The ``.pdopt`` content as one optimizer ``state_dict``. PaddleClas saves a list (one
    state dict per optimizer: the model's, plus one for a loss with parameters); their keys are
    distinct parameter names, so they are merged (the first ``LR_Scheduler`` wins)."""
    parts = list(pdopt) if isinstance(pdopt, (list, tuple)) else [pdopt]
    merged = {}
    for part in parts:
        if not isinstance(part, dict):
            raise CheckpointError(f"{source} is not an optimizer state (a dict or a list of "
                                  f"dicts), found {type(part).__name__}")
        for key, value in part.items():
            if key == "master_weights" and isinstance(value, dict):
                merged.setdefault(key, {}).update(value)
            elif key not in merged:
                merged[key] = value
    return merged


def fresh_param_names(config):
    """Structured -> Paddle-internal parameter names as a fresh process building only this
    model would have them (``conv2d_0.w_0``, ...): the names in a PaddleClas ``.pdopt``."""
    import paddle

    from ppcls.arch import build_model

    with paddle.utils.unique_name.guard():
        return param_names(build_model(config))


def check_optimizer_names(opt_state, model, source):
    """Every accumulator in ``opt_state`` must belong to a parameter of ``model`` (by internal
    name, ``<param>_<accumulator>_<n>``) with that parameter's shape (or be a scalar such as
    Adam's ``beta1_pow_acc``). Paddle would otherwise start those buffers from zero silently."""
    params = {p.name: list(p.shape) for p in model.parameters()}
    names = sorted(params, key=len, reverse=True)
    bad = []
    for key, value in opt_state.items():
        if key in ("LR_Scheduler", "master_weights"):
            continue
        owner = next((n for n in names if key.startswith(n + "_")), None)
        shape = list(getattr(value, "shape", []))
        if owner is None or (shape != params[owner] and int(np.prod(shape or [1])) != 1):
            bad.append(key)
    if bad:
        more = f" and {len(bad) - 5} more" if len(bad) > 5 else ""
        raise CheckpointError(f"{source}: optimizer state {', '.join(bad[:5])}{more} fits no "
                              "parameter of this model (a checkpoint of another architecture "
                              "or class_num?)")


# --------------------------------------------------------------------------- a training run


def save_training(prefixes, meta, *, model, optimizer, lr, device, ema=None, scaler=None,
                  rng_ranks=None):
    """Write a training run's state under each prefix; returns the prefixes written.

    Each component gives its own state: ``model`` (the bare model), ``optimizer``, ``lr`` (the
    ``build_lr`` result: scheduler state and signature), ``ema`` (a ``ModelEMA`` or None),
    ``scaler`` (a ``GradScaler`` or None) and this process's RNGs on ``device``; ``meta`` is the
    run's own record: ``epoch``, ``best_metric``, ``best_epoch``, ``metric_history``, ``arch``.
    ``rng_ranks``: every rank's :func:`own_rng_state` (:func:`gather_rng_states`, on more than
    one card)."""
    states = {key: meta[key] for key in ("epoch", "best_metric", "best_epoch", "metric_history")}
    states.update({
        "lr_state": lr.scheduler.state_dict(),
        "lr_signature": lr.signature,
        "rng": rng_state(device),
        "param_names": param_names(model),
        "arch": meta["arch"],
    })
    if rng_ranks:
        states["rng_ranks"] = rng_ranks
    if scaler is not None:
        states["scaler"] = scaler.state_dict()
    states.update(to_paddleclas_states(states))  # PaddleClas's keys too: it can resume from ours
    model_state = model.state_dict()
    if ema is not None:  # PaddleClas develop: .pdparams = EMA weights, .pdema = trained ones
        save_checkpoint(prefixes, ema.model.state_dict(), optimizer.state_dict(), states,
                        model_state)
    else:
        save_checkpoint(prefixes, model_state, optimizer.state_dict(), states)
    return prefixes


def complete_checkpoint(prefix):
    """Whether ``prefix`` names a finished checkpoint (its ``.pdstates`` in place)."""
    return os.path.exists(prefix + ".pdstates")


def _load_weights(path, ckpt, states, model, ema, config):
    """The trained weights into ``model`` (with EMA, PaddleClas develop keeps them in ``.pdema``;
    ``.pdparams`` holds the average); returns the optimizer state with this process's names."""
    from ppcls.utils.weights import load_state_dict

    trained = "pdema" if ema is not None and ckpt.get("pdema") is not None else "pdparams"
    load_state_dict(model, {k: v.numpy() if hasattr(v, "numpy") else v
                            for k, v in ckpt[trained].items()}, source=f"{path}.{trained}")
    opt_state = optimizer_state(ckpt["pdopt"], f"{path}.pdopt")
    saved_names = states.get("param_names")
    if saved_names is None:  # a PaddleClas checkpoint: names as its fresh process made them
        saved_names = fresh_param_names(config)
    opt_state = remap_optimizer_state(opt_state, saved_names, model)
    if states.get("param_names") is None:
        check_optimizer_names(opt_state, model, f"{path}.pdopt")
    return opt_state


def _restore_schedule(path, states, opt_state, optimizer, lr, start_epoch):
    """The optimizer state, and the LR schedule by the LR-on-resume rule (module docstring)."""
    same_schedule = states.get("lr_signature") == lr.signature
    if same_schedule:
        opt_state["LR_Scheduler"] = states["lr_state"]
    else:
        lr.fast_forward(start_epoch)
        opt_state["LR_Scheduler"] = lr.scheduler.state_dict()
    try:
        optimizer.set_state_dict(opt_state)
    except Exception as err:  # a checkpoint of another optimizer type or model
        raise CheckpointError(f"{path}.pdopt does not fit this optimizer "
                              f"({' '.join(str(err).split())})") from None
    if same_schedule:
        lr.scheduler.set_state_dict(states["lr_state"])
    else:
        logger.info(f"[Resume] the LR schedule in this config differs from the one {path} was "
                    f"trained with (or {path} does not record it): using this config's "
                    f"schedule from epoch {start_epoch + 1}, lr({lr.name}) = {lr.get_lr():.8f}")


def resume_training(path, *, model, optimizer, lr, device, config, ema=None, scaler=None,
                    rank=0, world_size=1):
    """Restore each component (see :func:`save_training`; ``model`` the bare model, ``config``
    the run's, for a PaddleClas checkpoint's parameter names) from the checkpoint ``path``,
    before the first epoch. Returns the run's record: ``{"epoch", "best_metric", "best_epoch",
    "metric_history", "arch"}``."""
    ckpt = load_checkpoint(path)
    states = from_paddleclas_states(ckpt["pdstates"])
    arch = (config.get("Arch") or {}).get("name")
    if states.get("arch") and states["arch"] != arch:
        logger.warning(f"{path} was written by Arch.name={states['arch']}; this config trains "
                       f"{arch}")
    opt_state = _load_weights(path, ckpt, states, model, ema, config)
    meta = {"epoch": int(states["epoch"]), "best_metric": states["best_metric"],
            "best_epoch": states.get("best_epoch"), "arch": states.get("arch"),
            "metric_history": list(states.get("metric_history", []))}
    _restore_schedule(path, states, opt_state, optimizer, lr, meta["epoch"])
    if ema is not None:
        if ckpt.get("pdema") is not None:
            ema.model.set_state_dict(ckpt["pdparams"])
        else:
            logger.warning(f"{path} was saved without EMA (no .pdema); the EMA starts from the "
                           "resumed weights")
            ema.model.set_state_dict(model.state_dict())
    if scaler is not None and states.get("scaler"):
        scaler.load_state_dict(states["scaler"])
    if not restore_rng(states, device, rank, world_size, source=f"{path}.pdstates"):
        logger.warning(f"{path}.pdstates has no RNG states (a PaddleClas checkpoint?): the "
                       "resumed run is not bit-identical to an uninterrupted one")
    logger.info(f"[Resume] resumed from {path}: epoch {meta['epoch']}, best metric "
                f"{meta['best_metric']}")
    return meta


__all__ = ["save_checkpoint", "load_checkpoint", "validate_states", "checkpoint_exists", "strip_suffix",
           "from_paddleclas_states", "to_paddleclas_states", "rng_state", "set_rng_state",
           "own_rng_state", "gather_rng_states", "set_own_rng_state", "restore_rng",
           "gpu_count", "param_names", "remap_optimizer_state", "save_training", "resume_training",
           "complete_checkpoint",
           "optimizer_state", "fresh_param_names", "check_optimizer_names"]
