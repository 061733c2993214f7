"""Weight and checkpoint files are read without running anything from them (ppcls.utils.safe_load).

A pickle can name any function and have it called while it is read; ``paddle.load`` is
``pickle.load``. These tests write files as PaddleClas and Paddle write them (they must still
load, equal to ``paddle.load``) and crafted files with ``__reduce__`` payloads (they must be
refused with one line naming the file and the object, and the payload must never run), through
the library and through tools/train.py, tools/eval.py and tools/infer.py as a user runs them.
"""

import builtins
import io
import os
import pickle
import re
import subprocess

import numpy as np
import pytest

from helpers import (EVAL, QUICKSTART, ROOT, TRAIN, command, env,  # noqa: F401
                               tiny_data, tiny_overrides)

INFER = os.path.join(ROOT, "tools", "infer.py")


class _Payload:
    """Unpickling calls ``func(*args)``: what a crafted weight file does."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def _touch_payload(marker):
    return _Payload(os.system, f"touch {marker}")


def _exec_payload(marker):
    return _Payload(builtins.exec, f"open({str(marker)!r}, 'w').close()")


def _crafted(path, payload, kind="pdparams"):
    """A file that looks like a PaddleClas file of ``kind`` with ``payload`` inside it."""
    if kind == "pdstates":
        obj = {"metric": 0.5, "epoch": 1, "best": payload}
    elif kind == "pdopt":
        obj = {"conv1.w_0_velocity_0": np.zeros(3, np.float32), "LR_Scheduler": {"last_epoch": payload}}
    else:
        obj = {"conv1.weight": np.zeros((2, 2), np.float32), "fc.bias": payload}
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)  # protocol 2: what older Paddle wrote
    return str(path)


def _paddleclas_files(folder):
    """``{kind: bytes}`` written with paddle.save as PaddleClas saves a checkpoint."""
    import paddle

    paddle.seed(3)
    model = paddle.nn.Sequential(paddle.nn.Conv2D(3, 4, 3), paddle.nn.BatchNorm2D(4), paddle.nn.ReLU6())
    lr = paddle.optimizer.lr.CosineAnnealingDecay(0.1, T_max=10)
    opt = paddle.optimizer.Momentum(lr, momentum=0.9, parameters=model.parameters(),
                                    weight_decay=paddle.regularizer.L2Decay(1e-4), multi_precision=True)
    model(paddle.randn([2, 3, 8, 8])).mean().backward()
    opt.step()
    lr.step()
    out = {}
    objs = {"pdparams": model.state_dict(), "pdopt": opt.state_dict(),
            "pdstates": {"metric": np.float32(0.625), "epoch": 3},
            "ours.pdstates": {"epoch": 3, "best_metric": 0.5, "lr_state": lr.state_dict(),
                              "rng": {"paddle_cpu": paddle.get_rng_state("cpu"),
                                      "python": __import__("random").getstate()},
                              "files": {"pdparams": "0" * 64}}}
    for kind, obj in objs.items():
        for protocol in (2, 4):
            path = os.path.join(folder, f"{protocol}.{kind}")
            paddle.save(obj, path, protocol=protocol)
            out[path] = obj
    return out


def _same(a, b):
    if isinstance(a, dict):
        assert isinstance(b, dict) and list(a) == list(b)
        for k in a:
            _same(a[k], b[k])
    elif isinstance(a, (list, tuple)):
        assert type(a) is type(b) and len(a) == len(b)
        for x, y in zip(a, b):
            _same(x, y)
    elif hasattr(a, "numpy"):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    elif isinstance(a, np.ndarray):
        np.testing.assert_array_equal(a, b)
    elif type(a).__name__ == "GeneratorState":
        assert a.__reduce_ex__(2)[2] == b.__reduce_ex__(2)[2]  # (seed, offset, engine state)
    else:
        assert a == b


def test_paddleclas_files_load_as_paddle_load_reads_them(tmp_path):
    import paddle

    from ppcls.utils.safe_load import safe_load

    for path in _paddleclas_files(str(tmp_path)):
        _same(safe_load(path), paddle.load(path))
        _same(safe_load(path, return_numpy=True), paddle.load(path, return_numpy=True))


@pytest.mark.parametrize("kind", ["pdparams", "pdopt", "pdstates"])
@pytest.mark.parametrize("make,shown", [(_touch_payload, r"(posix|os)\.system"),
                                        (_exec_payload, r"builtins\.exec")])
def test_crafted_pickle_is_refused_and_never_runs(tmp_path, kind, make, shown):
    from ppcls.utils.errors import CheckpointError
    from ppcls.utils.safe_load import safe_load

    marker = tmp_path / "PWNED"
    path = _crafted(tmp_path / f"evil.{kind}", make(marker), kind)
    with pytest.raises(CheckpointError) as err:
        safe_load(path)
    message = str(err.value)
    assert "\n" not in message and path in message and re.search(shown, message), message
    assert not marker.exists()


def test_other_tricks_are_refused(tmp_path):
    """Objects a weight file never holds, even harmless-looking ones, and a protocol-2 bytes
    constructor asked for something other than latin-1."""
    import codecs

    from ppcls.utils.errors import CheckpointError
    from ppcls.utils.safe_load import safe_load

    cases = {"subprocess.Popen": _Payload(subprocess.Popen, ["true"]),
             "builtins.getattr": _Payload(getattr, 1, "real"),
             "numpy.load": _Payload(np.load, "x.npy"),
             "_codecs.encode": _Payload(codecs.encode, "abc", "rot13")}
    for name, payload in cases.items():
        path = _crafted(tmp_path / "x.pdparams", payload)
        with pytest.raises(CheckpointError, match=re.escape(path)) as err:
            safe_load(path)
        assert name.split(".")[-1] in str(err.value), (name, str(err.value))
    with open(tmp_path / "junk.pdparams", "wb") as f:
        f.write(b"\x80\x04not a pickle at all")
    with pytest.raises(CheckpointError, match="junk.pdparams"):
        safe_load(str(tmp_path / "junk.pdparams"))


def test_checkpoint_pdstates_is_safe_before_the_hash_check(tmp_path):
    """``.pdstates`` holds the hashes, so it is read first: a crafted one must not run either."""
    from ppcls.utils.errors import CheckpointError
    from ppcls.engine.checkpoint import load_checkpoint, save_checkpoint

    prefix = str(tmp_path / "latest")
    save_checkpoint([prefix], {"w": np.ones(2, np.float32)}, {"m": np.zeros(2, np.float32)},
                    {"epoch": 1, "best_metric": 0.0})
    assert load_checkpoint(prefix)["pdstates"]["epoch"] == 1  # our own format still loads
    marker = tmp_path / "PWNED"
    _crafted(prefix + ".pdstates", _touch_payload(marker), "pdstates")
    with pytest.raises(CheckpointError, match=r"latest\.pdstates.*(posix|os)\.system"):
        load_checkpoint(prefix)
    assert not marker.exists()


@pytest.fixture(scope="module")
def cli_results(tiny_data, tmp_path_factory):
    """Every way a user hands us a weight file, each with a crafted file; run in parallel."""
    root, _, _ = tiny_data
    tmp = tmp_path_factory.mktemp("evil")
    cases = {}
    for tool in ("train", "eval", "infer"):
        marker = tmp / f"PWNED_{tool}"
        path = _crafted(tmp / f"{tool}_evil.pdparams", _touch_payload(marker))
        cases[f"{tool} pretrained"] = (tool, [f"Global.pretrained_model={path[:-len('.pdparams')]}"],
                                       marker, path)
    for kind in ("pdparams", "pdopt", "pdstates"):  # a PaddleClas-format checkpoint: no hashes
        folder = tmp / f"ckpt_{kind}"
        folder.mkdir()
        marker = tmp / f"PWNED_ckpt_{kind}"
        good = {"pdparams": {"w": np.zeros(1, np.float32)}, "pdopt": {"v": np.zeros(1, np.float32)},
                "pdstates": {"metric": 0.5, "epoch": 1}}
        for part, obj in good.items():
            with open(folder / f"latest.{part}", "wb") as f:
                pickle.dump(obj, f, protocol=2)
        path = _crafted(folder / f"latest.{kind}", _exec_payload(marker), kind)
        cases[f"train checkpoints {kind}"] = ("train", [f"Global.checkpoints={folder / 'latest'}"],
                                              marker, path)
    tools = {"train": TRAIN, "eval": EVAL, "infer": INFER}
    procs = {}
    for name, (tool, extra, marker, path) in cases.items():
        overrides = tiny_overrides(root, str(tmp / "out" / name.replace(" ", "_")), epochs=1) + extra
        if tool == "infer":
            overrides += [f"Infer.infer_imgs={os.path.join(root, 'val')}",
                          f"Infer.PostProcess.class_id_map_file={os.path.join(root, 'label_list.txt')}"]
        procs[name] = subprocess.Popen(command(tools[tool], QUICKSTART, overrides), cwd=ROOT, env=env(),
                                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                       start_new_session=True)
    results = {}
    try:
        for name, proc in procs.items():
            stdout, stderr = proc.communicate(timeout=300)
            results[name] = (proc.returncode, stdout, stderr, cases[name][2], cases[name][3])
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, 9)
    return results


@pytest.mark.parametrize("name", ["train pretrained", "eval pretrained", "infer pretrained",
                                  "train checkpoints pdparams", "train checkpoints pdopt",
                                  "train checkpoints pdstates"])
def test_tools_refuse_crafted_weights_with_one_line(cli_results, name):
    code, stdout, stderr, marker, path = cli_results[name]
    assert code == 2, (name, stdout[-2000:], stderr[-2000:])
    assert "Traceback" not in stdout + stderr, stderr[-3000:]
    errors = [line for line in stderr.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1, stderr[-3000:]
    assert path in errors[0] and re.search(r"(posix|os)\.system|builtins\.exec", errors[0]), errors[0]
    assert not marker.exists(), f"the payload ran: {marker}"


def _numpy_core_names(data):
    import pickletools

    return sorted({arg for _, arg, _ in pickletools.genops(data)
                   if isinstance(arg, str) and arg.startswith("numpy")})


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_written_pickles_name_numpy_core_and_load_back_equal(protocol):
    """numpy 2 pickles arrays as numpy._core.*; what we write names numpy.core.* (both numpy 1.x
    and 2.x import it) and loads back to exactly the same objects, with either name accepted."""
    from ppcls.utils.safe_load import numpy1_compatible, safe_load

    obj = {"w": np.arange(12, dtype=np.float32).reshape(3, 4), "s": np.float64(2.5),
           "numpy._core.multiarray": [1, np.int64(3)], "big": np.random.rand(70, 70),
           "d": np.dtype("int16")}
    plain = pickle.dumps(obj, protocol=protocol)
    assert any("numpy._core" in n for n in _numpy_core_names(plain))
    fixed = numpy1_compatible(plain)
    names = [n for n in _numpy_core_names(fixed) if n != "numpy._core.multiarray"]  # (a data key)
    assert names and not any(n.startswith("numpy._core") for n in names), names
    assert any(n.startswith("numpy.core") for n in names), names
    for data in (plain, fixed):  # our reader takes both spellings; pickle rebuilds the same
        back = pickle.loads(data)
        assert back.keys() == obj.keys()
        assert np.array_equal(back["w"], obj["w"]) and back["w"].dtype == np.float32
        assert np.array_equal(back["big"], obj["big"]) and back["s"] == 2.5
        assert back["d"] == np.dtype("int16")
        loaded = safe_load(io.BytesIO(data), return_numpy=True)
        assert np.array_equal(loaded["w"], obj["w"])


def test_checkpoint_and_weight_writers_name_numpy_core(tmp_path):
    """.pdparams/.pdopt/.pdstates/.pdema of save_checkpoint and save_state_dict's .pdparams
    (tools/convert_weights.py) never name numpy._core."""
    import paddle

    from ppcls.engine.checkpoint import load_checkpoint, save_checkpoint
    from ppcls.utils.weights import save_state_dict

    state = {"conv.weight": paddle.ones([2, 3]), "fc.bias": np.zeros(4, np.float32)}
    save_checkpoint([str(tmp_path / "latest")], state, {"fc.bias_moment_0": np.ones(4, np.float32)},
                    {"epoch": 1, "best_metric": np.float64(0.5)}, ema_state=state)
    save_state_dict(state, str(tmp_path / "converted.pdparams"))
    files = sorted(p for p in os.listdir(tmp_path) if p.endswith(("pdparams", "pdopt", "pdstates", "pdema")))
    assert files == ["converted.pdparams", "latest.pdema", "latest.pdopt", "latest.pdparams",
                     "latest.pdstates"]
    for name in files:
        names = _numpy_core_names(open(tmp_path / name, "rb").read())
        assert not any(n.startswith("numpy._core") for n in names), (name, names)
    ckpt = load_checkpoint(str(tmp_path / "latest"))  # and they read back, hashes checked
    assert ckpt["pdstates"]["epoch"] == 1
    assert np.array_equal(np.asarray(ckpt["pdparams"]["conv.weight"]), np.ones([2, 3]))
