"""The second attack round's findings (issue 22, attack items 3-16), each as cheap as it can be:
functions on small inputs; no training run."""

import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import yaml

from ppcls.utils.errors import CheckpointError, ConfigError, OutputError

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # tests/<dir>/ -> the repository


# --------------------------------------------------------------------------- items 5 and 16


def _linear():
    import paddle

    paddle.seed(1)
    return paddle.nn.Linear(3, 2)


@pytest.mark.parametrize("value, dtype, message", [
    (np.nan, np.float32, r"weight holds 1 NaN/Inf value\(s\) of 6"),
    (np.inf, np.float32, r"weight holds 1 NaN/Inf value\(s\) of 6"),
    (1 + 2j, np.complex64, r"weight is complex64 \(complex\)"),
])
def test_nan_inf_or_complex_weights_are_refused_naming_the_tensor(value, dtype, message):
    from ppcls.utils.weights import load_state_dict

    model = _linear()
    before = model.weight.numpy().copy()
    state = {"weight": np.ones([3, 2], dtype=dtype), "bias": np.zeros([2], np.float32)}
    state["weight"][1, 1] = value
    with pytest.raises(CheckpointError, match=f"best.pdparams: {message}"):
        load_state_dict(model, state, source="best.pdparams")
    assert np.array_equal(model.weight.numpy(), before)  # nothing loaded
    state["weight"] = np.full([3, 2], 0.5, np.float32)
    load_state_dict(model, state, source="best.pdparams")  # finite real weights load
    assert np.allclose(model.weight.numpy(), 0.5)


# --------------------------------------------------------------------------- items 7 and 16


@pytest.fixture(scope="module")
def saved_checkpoint(tmp_path_factory):
    """A real (tiny) checkpoint's .pdstates content, as save_training writes it."""
    import random

    import paddle

    from ppcls.engine.checkpoint import load_checkpoint, rng_state, save_checkpoint

    folder = tmp_path_factory.mktemp("ckpt")
    states = {"epoch": 3, "best_metric": 0.5, "metric": 0.5, "lr_state": {"last_epoch": 9},
              "rng": rng_state("cpu")}
    random.random()
    save_checkpoint([str(folder / "latest")], {"w": paddle.ones([2])}, {"w_moment": np.ones(2)}, states)
    return folder, load_checkpoint(str(folder / "latest"))


@pytest.mark.parametrize("key, value, expected", [
    ("epoch", -1, "epoch must be an integer from 0 to 1000000, found -1"),
    ("epoch", "abc", "epoch must be an integer from 0 to 1000000, found 'abc'"),
    ("epoch", float("nan"), "epoch must be an integer from 0 to 1000000, found nan"),
    ("epoch", [1], "epoch must be an integer from 0 to 1000000, found [1]"),
    ("epoch", 10 ** 20, "epoch must be an integer from 0 to 1000000, found 100000000000000000000"),
    ("epoch", True, "epoch must be an integer"),
    ("files", "no pdopt", "files must be {pdparams, pdopt[, pdema]: SHA-256}"),
    ("best_metric", "x", "best_metric must be a finite number or None"),
    ("rng", "numpy short", "rng.numpy must be numpy's MT19937 state"),
    ("rng", "python short", "rng.python must be Python's random state"),
    ("lr_state", [1], "lr_state must be a dict"),
])
def test_a_pdstates_field_out_of_shape_is_one_error_naming_it(saved_checkpoint, tmp_path, key, value,
                                                              expected):
    from ppcls.engine.checkpoint import load_checkpoint, save_checkpoint

    _, ckpt = saved_checkpoint
    states = {k: v for k, v in ckpt["pdstates"].items() if k != "files"}
    if key == "files":
        prefix = str(tmp_path / "latest")
        save_checkpoint([prefix], ckpt["pdparams"], ckpt["pdopt"], states)
        # the .pdstates rewritten by hand without the pdopt hash (PaddleClas's tools cannot tell)
        full = load_checkpoint(prefix)["pdstates"]
        full["files"] = {"pdparams": full["files"]["pdparams"]}
        from ppcls.utils.safe_load import dumps

        with open(prefix + ".pdstates", "wb") as f:
            f.write(dumps(full))
    else:
        if key == "rng":
            rng = dict(states["rng"])
            if value == "numpy short":
                rng["numpy"] = list(rng["numpy"])
                rng["numpy"][1] = rng["numpy"][1][:10]
            else:
                rng["python"] = (3, (1, 2, 3), None)
            value = rng
        states[key] = value
        prefix = str(tmp_path / "latest")
        save_checkpoint([prefix], ckpt["pdparams"], ckpt["pdopt"], states)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(prefix)
    assert str(err.value).startswith(f"{prefix}.pdstates: {expected}"), str(err.value)


def test_the_saved_pdstates_passes_the_checks(saved_checkpoint):
    _, ckpt = saved_checkpoint
    assert ckpt["pdstates"]["epoch"] == 3 and set(ckpt["pdstates"]["files"]) == {"pdparams", "pdopt"}


# --------------------------------------------------------------------------- exports: items 3, 4, 6, 10, 11, 14


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """One small export (x0.35, 32 px, with inference.onnx and a label file), copied per test,
    plus a second model's weights file."""
    from test_export_integrity import config, weights

    from ppcls.inference.export import export_model

    folder = tmp_path_factory.mktemp("exp22")
    (folder / "labels.txt").write_text("".join(f"{i} digit_{i}\n" for i in range(10)))
    (folder / "img").mkdir()
    from PIL import Image

    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(folder / "img" / f"{i}.png")
    a, b = weights(folder, 1), weights(folder, 2)
    export_model(config(folder / "model", a, labels=str(folder / "labels.txt"), export_onnx=True))
    return folder, a, b


def _copy(exported, tmp_path, name="model"):
    folder = exported[0]
    shutil.copytree(folder / "model", tmp_path / name)
    return tmp_path / name


def _edit_record(model_dir, edit):
    path = model_dir / "inference.yml"
    record = yaml.safe_load(path.read_text())
    edit(record)
    path.write_text(yaml.safe_dump(record, sort_keys=False))


def _deploy(model_dir, images, *overrides, pre=None):
    from test_export_integrity import FROM_EXPORT

    from ppcls.inference.deploy import predict_cls
    from ppcls.utils.config import get_config

    cfg = get_config(FROM_EXPORT, [f"Global.inference_model_dir={model_dir}",
                                   f"Global.infer_imgs={images}", "Global.cpu_num_threads=1"]
                     + list(overrides))
    if pre is not None:
        cfg["PreProcess"] = {"transform_ops": pre}
    return predict_cls(cfg, emit=lambda line: None)


@pytest.mark.parametrize("in_files", [False, True])
def test_re_export_keeps_a_file_a_hand_edited_inference_yml_names(exported, tmp_path, in_files):
    """Item 3: notes.txt named as the label file (and in Files, with a made-up hash) is not the
    export's: re-exporting refuses the folder instead of deleting it (34e5ea3: removed)."""
    from test_export_integrity import config

    from ppcls.inference.export import export_model

    model = _copy(exported, tmp_path)
    (model / "notes.txt").write_text("my notes")

    def edit(record):
        record["PostProcess"]["Topk"]["class_id_map_file"] = "notes.txt"
        if in_files:
            record["Files"]["notes.txt"] = "sha256:" + "0" * 64

    _edit_record(model, edit)
    with pytest.raises(ConfigError, match=r"holds files that are not part of an export \(notes.txt\)"):
        export_model(config(model, exported[1], export_onnx=False))
    assert (model / "notes.txt").read_text() == "my notes"


@pytest.mark.parametrize("files", ["deleted", None])
def test_an_export_without_hashes_is_served_with_one_warning(exported, tmp_path, capsys, files):
    """Item 4: Files deleted or null and the weights swapped: served (PaddleClas's exports have
    no hashes) but with one warning that nothing was verified (34e5ea3: silent)."""
    from ppcls.utils import logger

    model = _copy(exported, tmp_path)
    with open(model / "inference.pdiparams", "r+b") as f:  # weights changed after the export
        f.seek(-8, os.SEEK_END)
        f.write(b"\x00\x00\x80\x3f" * 2)
    _edit_record(model, lambda r: r.pop("Files") if files == "deleted" else r.update(Files=None))
    logger.init_logger()  # (its handler writes to the stdout capsys captures)
    capsys.readouterr()
    try:
        results, code = _deploy(model, exported[0] / "img", "Global.use_onnx=False")
    finally:
        out = capsys.readouterr()
        logger.init_logger()
    text = out.out + out.err
    assert code == 0 and len(results) == 3
    assert text.count("records no file hashes (Files): the model files are used unverified") == 1, text


def test_an_export_whose_files_is_not_a_mapping_is_refused(exported, tmp_path):
    model = _copy(exported, tmp_path)
    _edit_record(model, lambda r: r.update(Files="x"))
    with pytest.raises(ConfigError, match=r"inference.yml: Files must map each file of the export "
                                          r"to its sha256, found 'x'"):
        _deploy(model, exported[0] / "img")


@pytest.mark.parametrize("use_onnx", [True, False])
def test_a_preprocess_for_another_size_is_one_line_naming_both(exported, tmp_path, use_onnx):
    """Item 6: 64 px input to a 32 px export (34e5ea3: silent on Paddle Inference, an ORT
    InvalidArgument traceback on ONNX Runtime)."""
    pre = [{"ResizeImage": {"size": 64}},
           {"NormalizeImage": {"scale": "1.0/255.0", "mean": [0.5] * 3, "std": [0.5] * 3,
                               "order": ""}}, {"ToCHWImage": None}]
    with pytest.raises(ConfigError, match=r"make \[3, 64, 64\] inputs, but .* was exported for "
                                          r"\[3, 32, 32\]"):
        _deploy(exported[0] / "model", exported[0] / "img", f"Global.use_onnx={use_onnx}", pre=pre)


def test_a_non_utf8_inference_yml_is_one_line_and_can_be_exported_over(exported, tmp_path):
    """Item 10: predict_cls and re-export on a non-UTF-8 inference.yml (34e5ea3:
    UnicodeDecodeError tracebacks)."""
    from test_export_integrity import config

    from ppcls.inference.export import export_model

    model = _copy(exported, tmp_path)
    (model / "inference.yml").write_bytes(b"Global:\n  model_name: \xff\xfe\n")
    with pytest.raises(ConfigError, match=r"inference.yml is not UTF-8 text"):
        _deploy(model, exported[0] / "img")
    before = sorted(os.listdir(model))
    # unreadable, it vouches for no file: the copied label file is not known to be the export's
    with pytest.raises(ConfigError, match=r"holds files that are not part of an export \(labels.txt\)"):
        export_model(config(model, exported[1], export_onnx=False))
    assert sorted(os.listdir(model)) == before


@pytest.mark.parametrize("where", ["label", "onnx"])
def test_export_onto_a_full_disk_is_one_line_and_keeps_the_previous_export(exported, tmp_path,
                                                                          monkeypatch, where):
    """Item 11: ENOSPC while copying the label file (inference.yml's write is under the same
    guard), or inside paddle2onnx (which says only that it failed) (34e5ea3: OSError tracebacks, and "paddle2onnx
    could not convert" for a full disk)."""
    import errno

    import paddle2onnx
    from test_export_integrity import config

    import ppcls.inference.export as export

    import paddle

    model = _copy(exported, tmp_path)
    before = sorted(os.listdir(model))

    def quick_save(layer, prefix, **kwargs):  # the saved program is not what is tested here
        for suffix in (".json", ".pdiparams"):
            with open(prefix + suffix, "wb") as f:
                f.write(b"x")

    monkeypatch.setattr(paddle.jit, "save", quick_save)

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "x"))

    if where == "label":
        monkeypatch.setattr(export.shutil, "copyfile", full)
    else:
        def failed(*args, **kwargs):
            raise RuntimeError("Failed to save the model")

        monkeypatch.setattr(paddle2onnx, "export", failed)
        monkeypatch.setattr(export.shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(1, 1, 1000))
    cfg = config(model, exported[1], labels=str(exported[0] / "labels.txt"),
                 export_onnx=True if where == "onnx" else False)
    with pytest.raises(OutputError, match=r"No space left on device"):
        export.export_model(cfg)
    assert sorted(os.listdir(model)) == before
    assert [n for n in os.listdir(tmp_path) if n != "model"] == []  # no temporary folder left


def test_temporary_folders_of_killed_exports_are_swept(exported, tmp_path):
    """Item 14: a SIGKILLed export or quantization leaves its temporary folder; the next start
    removes those of dead processes, never a live one's (34e5ea3: left forever)."""
    from ppcls.inference.export import export_tmp_dir, private_temp_dir

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    live = os.getppid()
    for name in (f".model.tmp{dead.pid}_abcd", f".model.old{dead.pid}_ef", f".model.tmp{live}_xy"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "inference.pdiparams").write_bytes(b"0" * 1000)
    new = export_tmp_dir(str(tmp_path / "model"))  # what export_model and quantization start with
    assert sorted(os.listdir(tmp_path)) == sorted([f".model.tmp{live}_xy", os.path.basename(new)])
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / f"ppcls_fp32_{dead.pid}_q").mkdir()
    work = private_temp_dir("ppcls_fp32_", str(tmp_path / "t"))
    assert os.listdir(tmp_path / "t") == [os.path.basename(work)]
    assert os.path.basename(work).startswith(f"ppcls_fp32_{os.getpid()}_")


# --------------------------------------------------------------------------- items 8, 12, 13, 15

BILLION_LAUGHS = """Global: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]
""" + "".join(f"x{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]\n" for i in range(1, 10))


def test_a_billion_laughs_config_is_one_line_at_once(tmp_path):
    """Item 8: 10^10 values through nested aliases (34e5ea3: hangs printing it)."""
    from ppcls.utils.config import get_config

    path = tmp_path / "laughs.yaml"
    path.write_text(BILLION_LAUGHS)
    with pytest.raises(ConfigError, match=r"laughs.yaml: the config expands to more than 200,000 "
                                          r"values \(YAML aliases"):
        get_config(str(path), show=True)
    # the same through an -o value on a good config (10^7 values)
    good = os.path.join(ROOT, "configs", "quickstart", "MobileNeXt_x1_0_digits.yaml")
    laughs = "[&a0 [x,x,x,x,x,x,x,x,x,x], " + ", ".join(
        f"&a{i} [{','.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 8)) + "]"
    with pytest.raises(ConfigError, match=r"with its -o overrides: the config expands to more"):
        get_config(good, [f"Arch.note={laughs}"])
    assert get_config(good, ["Global.image_shape=[3, 32, 32]"])["Global"]["image_shape"] == [3, 32, 32]
    big = tmp_path / "big.yaml"
    with open(big, "w") as f:
        f.write("Global:\n  note: '" + "x" * (9 << 20) + "'\n")
    with pytest.raises(ConfigError, match=r"big.yaml is 9 MB; a config is a few KB"):
        get_config(str(big))


@pytest.mark.parametrize("overrides, expected", [
    (["Optimizer.lr.learning_rate=.nan"], r"the learning rate must be a finite number, got nan"),
    (["Optimizer.lr.learning_rate=0"], r"the warm-up must rise from warmup_start_lr \(0.002\) to "
                                       r"the schedule's first rate \(0.0\)"),
    (["Optimizer.lr.warmup_start_lr=.inf"], r"warmup_start_lr must be a finite number, got inf"),
])
def test_a_nan_or_zero_learning_rate_with_warm_up_is_one_line(overrides, expected):
    """Item 12 (34e5ea3: AssertionError: end_lr ... from Paddle's LinearWarmup)."""
    from ppcls.optimizer.lr import build_lr
    from ppcls.utils.config import get_config

    cfg = get_config(os.path.join(ROOT, "configs", "quickstart", "MobileNeXt_x1_0_digits.yaml"),
                     overrides)
    with pytest.raises(ConfigError, match=expected):
        build_lr(cfg["Optimizer"]["lr"], epochs=4, step_each_epoch=10, where="Optimizer.lr")
    cfg = get_config(os.path.join(ROOT, "configs", "quickstart", "MobileNeXt_x1_0_digits.yaml"))
    assert build_lr(cfg["Optimizer"]["lr"], epochs=4, step_each_epoch=10).scheduler is not None


def test_convert_weights_names_the_refused_global_and_never_suggests_weights_only_false(tmp_path):
    """Item 13 (34e5ea3: the message cut at 300 characters, reading "Re-running torch.load with
    weights_only set to False will likely succeed")."""
    torch = pytest.importorskip("torch")

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'ran'}",))

    import importlib.util

    src = tmp_path / "evil.pth.tar"
    torch.save({"state_dict": {"a": torch.ones(1)}, "x": Evil()}, src)
    spec = importlib.util.spec_from_file_location(
        "convert_weights", os.path.join(ROOT, "tools", "convert_weights.py"))
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    with pytest.raises(CheckpointError) as err:
        tool.main(["--src", str(src), "--dst", str(tmp_path / "out.pdparams"),
                   "--arch", "MobileNeXt_x0_35"])
    message = str(err.value)
    assert "\n" not in message and "it asks for posix.system" in message, message
    assert "False" not in message and "Re-running" not in message and "likely succeed" not in message
    assert not (tmp_path / "ran").exists() and not (tmp_path / "out.pdparams").exists()


def test_a_symlinked_log_file_is_refused(tmp_path):
    """Item 15: train.log as a symlink to a file outside the run (34e5ea3: appended to)."""
    from ppcls.utils import logger

    outside = tmp_path / "outside.txt"
    outside.write_text("keep\n")
    run = tmp_path / "run"
    run.mkdir()
    (run / "train.log").symlink_to(outside)
    try:
        with pytest.raises(OutputError, match=r"train.log is a symbolic link \(to .*outside.txt\)"):
            logger.init_logger(str(run / "train.log"))
        logger.info("a line")
    finally:
        logger.init_logger()
    assert outside.read_text() == "keep\n"
    logger.init_logger(str(run / "real.log"))  # a real file still works
    logger.info("a line")
    logger.init_logger()
    assert "a line" in (run / "real.log").read_text()
