"""Load ``.pdparams`` / ``.pdopt`` / ``.pdstates`` / ``.pdema`` files without executing them.

``paddle.load`` is ``pickle.load``: a pickle names any importable function and calls it while it
is read, so a crafted weight file runs code the moment it is loaded (``os.system`` through a
``__reduce__``). The files Paddle writes for a state dict, an optimizer state or a plain dict of
numbers only ever name a handful of harmless constructors: numpy's array and scalar rebuilders
and ``numpy.dtype``, ``collections.OrderedDict``, ``builtins.tuple`` (Paddle 2.1 saved tensors as
``(name, ndarray)`` through it), ``_codecs.encode`` (how protocol 2 pickles spell ``bytes``) and
Paddle's ``GeneratorState`` (the RNG state in our ``.pdstates``). Dicts, lists, tuples, strings,
numbers, ``None`` and bools need no global at all.

:func:`safe_load` first reads the whole file with an unpickler that resolves only those names
(every other one is refused, before anything is called: nothing from the file runs), then hands
the same bytes to ``paddle.load``, so the result (tensors or numpy arrays, the structured-name
table handled, big parameters re-joined) is exactly what ``paddle.load`` returns.
"""

import _compat_pickle
import codecs
import collections
import io
import os
import pickle
import types

from ppcls.utils.errors import CheckpointError
from ppcls.utils.hashing import file_sha256


def _latin1_encode(text, encoding="latin1", errors="strict"):
    """``_codecs.encode`` as protocol 2 pickles use it (``bytes`` as latin-1 text), nothing else."""
    if not isinstance(text, str) or codecs.lookup(encoding).name != "iso8859-1":
        raise pickle.UnpicklingError(f"_codecs.encode({type(text).__name__}, {encoding!r}) is not "
                                     "how a pickle spells bytes")
    return codecs.encode(text, "latin1", errors)


def _numpy(module, name):
    import numpy as np

    core = getattr(np, "_core", None) or np.core  # numpy 2 renamed numpy.core to numpy._core
    sub = {"multiarray": core.multiarray, "numeric": core.numeric}[module.rsplit(".", 1)[1]]
    return getattr(sub, name)


def _generator_state(module, name):
    import paddle.base.libpaddle as libpaddle

    return libpaddle.GeneratorState


# (module, name) -> how to get the object. Only these globals may appear in a weight file.
_ALLOWED = {
    ("collections", "OrderedDict"): lambda m, n: collections.OrderedDict,
    ("builtins", "tuple"): lambda m, n: tuple,
    ("_codecs", "encode"): lambda m, n: _latin1_encode,
    ("numpy", "ndarray"): lambda m, n: __import__("numpy").ndarray,
    ("numpy", "dtype"): lambda m, n: __import__("numpy").dtype,
    ("paddle.base.libpaddle", "GeneratorState"): _generator_state,
}
for _core in ("numpy.core", "numpy._core"):
    _ALLOWED[(_core + ".multiarray", "_reconstruct")] = _numpy
    _ALLOWED[(_core + ".multiarray", "scalar")] = _numpy
    _ALLOWED[(_core + ".numeric", "_frombuffer")] = _numpy  # protocol 5 arrays


class _Refused(Exception):
    def __init__(self, what):
        super().__init__(what)
        self.what = what


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) in _compat_pickle.NAME_MAPPING:  # protocol 0-2 spell builtins.x as
            module, name = _compat_pickle.NAME_MAPPING[(module, name)]  # Python 2 did
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        get = _ALLOWED.get((module, name))
        if get is None:
            raise _Refused(f"{module}.{name}")
        return get(module, name)

    def persistent_load(self, pid):
        raise _Refused(f"persistent id {str(pid)[:60]!r}")


def check_pickle(data, path):
    """Unpickle ``data`` (bytes) allowing only the globals above; raise CheckpointError otherwise."""
    try:
        _RestrictedUnpickler(io.BytesIO(data), encoding="latin1").load()
    except _Refused as err:
        raise CheckpointError(f"{path}: refused to load, it asks for {err.what}, which a weights or "
                              "checkpoint file never holds (only arrays, dicts, lists, tuples, "
                              "strings and numbers are allowed; nothing from the file was run)"
                              ) from None
    except Exception as err:  # truncated, not a pickle, wrong structure for an allowed class ...
        msg = " ".join(str(err).split())[:300] or type(err).__name__
        raise CheckpointError(f"{path} is not a readable Paddle weights/checkpoint file ({msg})"
                              ) from None


# ------------------------------------------------------------------ writing: numpy 1.x can read it

_NEW_CORE, _OLD_CORE = "numpy._core", "numpy.core"


class _Numpy1Pickler(pickle._Pickler):
    """The pure-Python pickler, naming numpy's ``numpy._core.*`` globals ``numpy.core.*``: the
    module both numpy 1.x (which has no ``numpy._core``) and numpy 2.x (an alias) import. Only
    how a global is *named* changes, never a value: a string that happens to read
    ``numpy._core`` stays as it is."""

    dispatch = dict(pickle._Pickler.dispatch)

    def save_global(self, obj, name=None):
        module = getattr(obj, "__module__", None) or ""
        if module != _NEW_CORE and not module.startswith(_NEW_CORE + "."):
            return super().save_global(obj, name)
        name = name or getattr(obj, "__qualname__", None) or obj.__name__
        old = _OLD_CORE + module[len(_NEW_CORE):]
        target = __import__(old, fromlist=[name])
        if getattr(target, name, None) is not obj:
            raise pickle.PicklingError(f"{old}.{name} is not {module}.{name}")
        if self.proto >= 4:
            self.save(old)
            self.save(name)
            self.write(pickle.STACK_GLOBAL)
        else:
            self.write(pickle.GLOBAL + f"{old}\n{name}\n".encode("utf-8"))
        self.memoize(obj)

    dispatch[types.FunctionType] = save_global


def numpy1_compatible(data):
    """The pickle ``data`` (bytes we wrote ourselves: it is unpickled here) re-pickled so that
    numpy 1.x loads it: numpy 2 names arrays ``numpy._core.multiarray._reconstruct``, numpy 1.24
    (PaddleClas's pin) has no ``numpy._core``. The content is unchanged (same objects, shared
    references kept); only the global names differ."""
    if _NEW_CORE.encode() not in data:
        return data
    proto = data[1] if data[:1] == pickle.PROTO else 2
    out = io.BytesIO()
    _Numpy1Pickler(out, protocol=proto).dump(pickle.loads(data))  # noqa: S301 (our own bytes)
    return out.getvalue()


def dumps(obj):
    """``paddle.save(obj)`` as bytes that numpy 1.x and 2.x both load (:func:`numpy1_compatible`)."""
    import paddle

    buf = io.BytesIO()
    paddle.save(obj, buf)
    return numpy1_compatible(buf.getvalue())


def safe_load(path, data=None, **configs):
    """``paddle.load(path, **configs)`` for a pickled state dict, refusing anything executable.

    ``path`` is a file name (or a ``BytesIO``); ``data`` its bytes if already read (they are the
    ones loaded; ``path`` then only names the file in messages). Raises ``CheckpointError``.
    """
    import paddle

    if data is None:
        if isinstance(path, io.BytesIO):
            data = path.getvalue()
        else:
            try:
                with open(path, "rb") as f:
                    data = f.read()
            except OSError as err:
                raise CheckpointError(f"{path}: cannot read ({err.strerror or err})") from None
    name = "<memory>" if isinstance(path, io.BytesIO) else os.fspath(path)
    check_pickle(data, name)
    return paddle.load(io.BytesIO(data), **configs)




def verify_recorded_hash(path):
    """A weights-only read of ``path`` (``output/x/latest.pdparams``, also ``.pdema``): when a
    ``.pdstates`` of ours lies beside it (``ppcls.engine.checkpoint`` writes the SHA-256 of
    each file of a checkpoint into its ``files`` entry), the file must have that hash, else
    ``CheckpointError`` naming the file. Files without one (PaddleClas's, exported) pass."""
    path = os.fspath(path)
    prefix, dot, part = path.rpartition(".")
    if not dot or part not in ("pdparams", "pdema"):
        return
    recorded = []
    for states_path in (prefix + ".pdstates", prefix + ".pdstates.commit"):  # (+ a save's commit)
        if os.path.isfile(states_path):
            try:
                states = safe_load(states_path)
            except CheckpointError:
                raise
            except Exception as err:
                raise CheckpointError(f"{states_path} is not a readable .pdstates file "
                                      f"({' '.join(str(err).split())})") from None
            digest = (states.get("files") or {}).get(part) if isinstance(states, dict) else None
            if digest:
                recorded.append(digest)
    if not recorded:
        return
    if file_sha256(path) not in recorded:
        raise CheckpointError(f"{path} does not match the SHA-256 recorded in {prefix}.pdstates "
                              "beside it: the file was modified or mixed with another checkpoint")


__all__ = ["safe_load", "check_pickle", "verify_recorded_hash", "dumps", "numpy1_compatible"]
