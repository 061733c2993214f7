"""Weight files, kept apart from the model: read, map names, check against a model, load, save.

Formats
-------
- ours = PaddleClas ``.pdparams``: a pickled ``{name: array}`` (``paddle.save``) whose names
  are exactly ``model.state_dict()``'s, e.g. ``features.1.conv.4._mean`` and
  ``classifier.1.weight`` stored ``[in, out]``.
- ``.safetensors``: the same names and layout (``safetensors.numpy``).
- official PyTorch state_dicts are converted once by ``tools/convert_weights.py`` (the
  mapping is ``ppcls.utils.torch_weights``, which nothing else in ``ppcls`` imports); a file
  still in PyTorch naming is refused here with a line saying so.

This module knows no model: the classification head is whatever layer the model declares
in its ``classifier_layer`` attribute (MobileNeXt: ``classifier.1``), and it imports nothing
from ``ppcls.arch``.

A checkpoint that does not fit the model is refused whole, with one :class:`CheckpointError`
that lists the missing keys, the unexpected keys and the shape differences; nothing is loaded
partially.
"""

import os

import numpy as np

from ppcls.utils.errors import CheckpointError

SUFFIXES = (".pdparams", ".safetensors")
TORCH_SUFFIXES = (".pth", ".pth.tar", ".pt", ".tar", ".bin")
# Keys that wrap the real state_dict in training checkpoints (official repo, timm, ...).
WRAPPER_KEYS = ("state_dict", "model")
# Bookkeeping entry ``paddle.save(layer.state_dict())`` adds; not a tensor.
_PADDLE_NAME_MAP_KEY = "StructuredToParameterName@@"
# How many names of each kind a mismatch message lists before it says "and N more".
LIST_LIMIT = 12
# Where a model names its classification head (the layer fine-tuning with another
# class_num replaces), e.g. ``classifier_layer = "classifier.1"``.
CLASSIFIER_ATTR = "classifier_layer"


# --------------------------------------------------------------------------- paths


def resolve_path(path):
    """The weight file ``path`` names: as given, or with ``.pdparams`` / ``.safetensors`` added.

    PaddleClas users pass ``Global.pretrained_model=output/x/best_model`` (no suffix).
    """
    if path is True:
        raise CheckpointError("pretrained=True: weights cannot be downloaded here; pass the path "
                              "of a .pdparams or .safetensors file instead (e.g. "
                              "Arch.pretrained=./MobileNeXt_x1_0_pretrained.pdparams)")
    if not isinstance(path, (str, os.PathLike)) or not str(path):
        raise CheckpointError(f"pretrained weights: expected a file path, got {path!r}")
    path = os.fspath(path)
    if os.path.isfile(path):
        return path
    tried = [path]
    if not path.endswith(SUFFIXES):
        for suffix in SUFFIXES:
            candidate = path + suffix
            if os.path.isfile(candidate):
                return candidate
            tried.append(candidate)
    if os.path.isdir(path):
        raise CheckpointError(f"weight file {path} is a directory; expected a .pdparams or "
                              ".safetensors file")
    also = f" (also tried {', '.join(tried[1:])})" if len(tried) > 1 else ""
    raise CheckpointError(f"weight file not found: {path}{also}")


# --------------------------------------------------------------------------- reading


def _to_numpy(value, path, key):
    if isinstance(value, np.ndarray):
        return value
    if hasattr(value, "numpy"):  # paddle.Tensor
        return np.asarray(value.numpy())
    if isinstance(value, (int, float, np.number)):
        return np.asarray(value)
    raise CheckpointError(f"{path}: entry '{key}' is a {type(value).__name__}, not a tensor")


def unwrap_state_dict(obj, source="checkpoint"):
    """The bare ``{name: tensor}`` inside a checkpoint: under ``state_dict`` / ``model`` if
    wrapped, with ``module.`` prefixes (DataParallel / DDP) stripped."""
    if not isinstance(obj, dict):
        raise CheckpointError(f"{source}: expected a state_dict (a mapping of names to tensors), "
                              f"got {type(obj).__name__}")
    for key in WRAPPER_KEYS:
        if isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    state = {}
    for name, value in obj.items():
        if name == _PADDLE_NAME_MAP_KEY:
            continue
        if not isinstance(name, str):
            raise CheckpointError(f"{source}: key {name!r} is not a parameter name")
        while name.startswith("module."):
            name = name[len("module."):]
        state[name] = value
    if not state:
        raise CheckpointError(f"{source}: the state_dict is empty")
    return state


def read_state_dict(path):
    """``{name: np.ndarray}`` from a ``.pdparams`` or ``.safetensors`` file, names as stored."""
    path = resolve_path(path)
    if path.endswith(".safetensors"):
        try:
            from safetensors.numpy import load_file
        except ImportError:
            raise CheckpointError(f"{path}: reading .safetensors needs the 'safetensors' package "
                                  "(pip install safetensors)") from None
        try:
            raw = load_file(path)
        except Exception as err:  # the library raises its own error types for bad files
            raise CheckpointError(f"{path} is not a readable .safetensors file: "
                                  f"{_one_line(err)}") from None
    else:
        from ppcls.utils.safe_load import safe_load, verify_recorded_hash  # (no code runs)

        verify_recorded_hash(path)  # a checkpoint's .pdparams: the hash in its .pdstates
        try:
            raw = safe_load(path, return_numpy=True)
        except CheckpointError:
            raise
        except Exception as err:
            raise CheckpointError(f"{path} is not a readable .pdparams file (paddle.load failed: "
                                  f"{_one_line(err)})") from None
    state = unwrap_state_dict(raw, source=path)
    return {name: _to_numpy(value, path, name) for name, value in state.items()}


def _one_line(err):
    text = " ".join(str(err).split())
    return text[:300] + ("..." if len(text) > 300 else "")


# --------------------------------------------------------------------------- naming


def is_torch_naming(state):
    """Whether ``state`` uses PyTorch BatchNorm names (``running_mean`` ...) rather than Paddle's."""
    return any(name.endswith((".running_mean", ".running_var", ".num_batches_tracked"))
               for name in state)


def classifier_layer(model_or_class):
    """The name of the classification layer a model (or model class) declares, or None."""
    return getattr(model_or_class, CLASSIFIER_ATTR, None)


def head_names(names, model):
    """The names among ``names`` that belong to ``model``'s declared classifier layer."""
    layer = classifier_layer(model)
    if not layer:
        return []
    return [name for name in names if name.startswith(layer + ".")]


# --------------------------------------------------------------------------- checking


def _shape(value):
    return tuple(int(d) for d in value.shape)


def _listing(items, what):
    items = list(items)
    shown = ", ".join(items[:LIST_LIMIT])
    more = f" and {len(items) - LIST_LIMIT} more" if len(items) > LIST_LIMIT else ""
    return f"{len(items)} {what} ({shown}{more})"


def mismatches(expected, state):
    """``(missing, unexpected, shape_diffs)`` between ``expected`` ``{name: shape}`` and ``state``."""
    missing = [name for name in expected if name not in state]
    unexpected = [name for name in state if name not in expected]
    shape_diffs = [(name, _shape(state[name]), tuple(expected[name]))
                   for name in expected if name in state and _shape(state[name]) != tuple(expected[name])]
    return missing, unexpected, shape_diffs


def check_state_dict(expected, state, source="checkpoint", target="the model"):
    """Raise one :class:`CheckpointError` listing every way ``state`` does not fit ``expected``.

    ``expected`` is ``{name: shape}`` (see :func:`expected_shapes`).
    """
    missing, unexpected, shape_diffs = mismatches(expected, state)
    if not (missing or unexpected or shape_diffs):
        return
    parts = []
    if missing:
        parts.append(_listing(missing, "missing keys"))
    if unexpected:
        parts.append(_listing(unexpected, "unexpected keys"))
    if shape_diffs:
        parts.append(_listing((f"{n}: checkpoint {list(a)} vs model {list(b)}"
                               for n, a, b in shape_diffs), "shape differences"))
    raise CheckpointError(f"{source} does not fit {target}: " + "; ".join(parts))


def expected_shapes(model):
    """``{name: shape}`` of ``model.state_dict()`` (parameters and BN running statistics)."""
    return {name: tuple(int(d) for d in value.shape) for name, value in model.state_dict().items()}


def _describe(model):
    scale = getattr(model, "scale", None)
    name = type(model).__name__
    return f"{name} (width {scale})" if scale is not None else name


# --------------------------------------------------------------------------- loading


def check_values(state, names, source="checkpoint"):
    """Every tensor in ``names`` holds real, finite numbers: a NaN/Inf weight (a diverged run,
    a damaged file) would evaluate to ``loss: nan`` and a meaningless top-1 without a word, and a
    complex tensor would be cast to real silently. Raises ``CheckpointError`` naming the tensor."""
    for name in names:
        value = state[name]
        array = value if isinstance(value, np.ndarray) else np.asarray(
            value.numpy() if hasattr(value, "numpy") else value)
        kind = array.dtype.kind
        if kind == "c":
            raise CheckpointError(f"{source}: {name} is {array.dtype} (complex); weights are real "
                                  "numbers (float32, float16, ...)")
        if kind not in "biuf":
            raise CheckpointError(f"{source}: {name} holds {array.dtype} values, not numbers")
        if kind == "f" and not np.isfinite(array).all():
            bad = int(array.size - np.isfinite(array).sum())
            raise CheckpointError(f"{source}: {name} holds {bad} NaN/Inf value(s) of {array.size}; "
                                  "these weights cannot be used (a diverged or damaged checkpoint)")


def load_state_dict(model, state, source="checkpoint", target=None):
    """Load ``{name: array}`` (our naming) into ``model`` after checking it fits it whole."""
    if is_torch_naming(state):
        raise CheckpointError(f"{source} uses PyTorch names (running_mean ...); convert it first: "
                              "python tools/convert_weights.py --src FILE --dst OUT.pdparams "
                              "--arch NAME")
    expected = expected_shapes(model)
    check_state_dict(expected, state, source=source, target=target or _describe(model))
    check_values(state, expected, source)
    # The dtypes the parameters really have: AMP O2's decorate(save_dtype=...) installs a hook
    # that makes state_dict() report float32 for float16 weights.
    dtypes = {name: value.dtype for name, value in model.state_dict(use_hook=False).items()}
    import paddle

    model.set_state_dict({name: paddle.to_tensor(np.asarray(state[name])).astype(dtypes[name])
                          for name in expected})
    return model


def load_pretrained(model, path, skip_mismatched_head=False):
    """Load weights for ``Arch.pretrained`` / ``Global.pretrained_model`` into ``model``.

    ``path``: a ``.pdparams`` (ours = PaddleClas's) or ``.safetensors`` file, with or without
    the ``.pdparams`` suffix. ``True`` is refused (nothing can be downloaded), and so is a
    file in PyTorch naming (``tools/convert_weights.py`` converts it). Raises
    :class:`CheckpointError` naming the file when it is missing, unreadable or does not fit.

    ``skip_mismatched_head=True`` is for fine-tuning with another ``class_num``: the tensors
    of the model's declared classifier layer (``model.classifier_layer``, e.g.
    ``classifier.1.*``) whose shapes differ are left as initialised, with a warning;
    everything else must still fit exactly.
    """
    path = resolve_path(path)
    state = read_state_dict(path)
    if skip_mismatched_head and not is_torch_naming(state):
        expected = expected_shapes(model)
        skipped = [name for name in head_names(state, model)
                   if name in expected and _shape(state[name]) != expected[name]]
        if skipped:
            from ppcls.utils import logger

            logger.warning(f"{path}: not loading {', '.join(skipped)} (shape differs from the "
                           "model's class_num); the classifier starts from its initialisation")
            model_state = state_dict_numpy(model)
            state = {**state, **{name: model_state[name] for name in skipped}}
    return load_state_dict(model, state, source=path)


# --------------------------------------------------------------------------- destinations


def check_destination(path):
    """Refuse a weight file name we cannot write (wrong suffix, a directory) before any work."""
    path = os.fspath(path)
    if not path.endswith(SUFFIXES):
        raise CheckpointError(f"cannot save weights to {path}: the name must end in "
                              f"{' or '.join(SUFFIXES)}")
    if os.path.isdir(path):
        raise CheckpointError(f"cannot save weights to {path}: it is a directory")


# --------------------------------------------------------------------------- saving


def state_dict_numpy(model):
    """``model.state_dict()`` as ``{name: np.ndarray}``."""
    return {name: np.asarray(value.numpy()) for name, value in model.state_dict().items()}


def save_state_dict(state, path):
    """Write ``{name: array or Tensor}`` to ``path``: ``.pdparams`` (``paddle.save``, the
    PaddleClas format) or ``.safetensors``, by suffix. Atomic: a temp file in the same folder,
    then ``os.replace``, so an existing file is never left half-written."""
    path = os.fspath(path)
    check_destination(path)
    arrays = {name: np.ascontiguousarray(_to_numpy(value, path, name))
              for name, value in state.items()}
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, f".{os.path.basename(path)}.tmp{os.getpid()}")
    try:
        if path.endswith(".safetensors"):
            from safetensors.numpy import save as to_bytes

            with open(tmp, "wb") as f:  # our own open(): the usual file mode, not 0600
                f.write(to_bytes(arrays))
        else:
            from ppcls.utils.safe_load import dumps  # numpy 1.x (PaddleClas's pin) reads it too

            with open(tmp, "wb") as f:
                f.write(dumps(arrays))
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path
