"""The Python API and ``python -m ppcls`` (issue 19): ``create_model`` / ``list_models`` and the
models' facts, ``Predictor`` (one cached export a session, against predict_cls), the ``predict``
command against a 127.0.0.1 server serving the published weights file, ``--help`` naming the
keys, ``dataset.name: ImageFolder``, and the README's "Python API" / "Fine-tune on your own
folder" code run as written.
"""

import contextlib
import importlib.util
import io
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
import yaml

from conftest import ROOT
from helpers import PUBLISHED, published  # noqa: F401  (the 127.0.0.1 server)

IMAGES = os.path.join(ROOT, "deploy", "images")
RECIPE = os.path.join(ROOT, "ppcls", "configs", "ImageNet", "MobileNeXt", "MobileNeXt_x1_0.yaml")
CLASSES = ("zero", "one", "two")


def _tool(name):
    """tools/<name>.py as a module (its ``main(argv)``)."""
    spec = importlib.util.spec_from_file_location(f"tool_{name}", os.path.join(ROOT, "tools", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _stdout(fn, *args):
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        fn(*args)
    return buf.getvalue()


# ------------------------------------------------------------------ shared set-up


@pytest.fixture(scope="module")
def api_env(published, tmp_path_factory):  # noqa: F811
    """The weight download served from 127.0.0.1; weight and export caches in a temp folder.
    For this module (so the one export is shared); the environment is restored after it."""
    from ppcls.api.predictor import INFERENCE_HOME_ENV
    from ppcls.utils import download

    server, npz = published
    base = tmp_path_factory.mktemp("apicache")
    env = {download.BASE_URL_ENV: server.url, download.WEIGHTS_HOME_ENV: str(base / "weights"),
           INFERENCE_HOME_ENV: str(base / "inference"), "no_proxy": "127.0.0.1"}
    saved = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    yield {"server": server, "npz": npz, "env": dict(os.environ), "base": base,
           "weights": str(base / "weights"), "inference": str(base / "inference")}
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="module")
def cli_predict(api_env):
    """``python -m ppcls predict --model_name MobileNeXt_x1_0`` on deploy/images: the first use,
    which downloads the weights and exports them into the cache. Returns (stdout, stderr, requests)."""
    before = len(api_env["server"].requests)
    proc = subprocess.run([sys.executable, "-m", "ppcls", "predict", "--model_name", "MobileNeXt_x1_0",
                           "--infer_imgs", IMAGES, "--topk", "5"], cwd=ROOT, env=api_env["env"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return proc.stdout, proc.stderr, api_env["server"].requests[before:]


@pytest.fixture(scope="session")
def digit_folders(tmp_path_factory):
    """ImageFolder-style train/ and val/ folders (3 classes, 32 px) from the digits set."""
    from ppcls.data.digits import prepare_digits

    base = tmp_path_factory.mktemp("apidigits")
    prepare_digits(str(base / "digits"), size=32, progress=False)
    for split, per_class in (("train", 4), ("val", 2)):
        for label, name in enumerate(CLASSES):
            src = base / "digits" / split / str(label)
            dst = base / "photos" / split / name
            dst.mkdir(parents=True)
            for file in sorted(os.listdir(src))[:per_class]:
                shutil.copy(src / file, dst / file)
    return base / "photos"


# ------------------------------------------------------------------ create_model, list_models


def _model_info(*overrides):
    argv = ["-c", RECIPE] + [x for o in overrides for x in ("-o", o)]
    text = _stdout(_tool("model_info").main, argv)
    number = lambda label: int(re.search(label + r": ([0-9,]+)", text).group(1).replace(",", ""))  # noqa: E731
    shape = [int(v) for v in re.search(r"Input: (\d+)x(\d+)x(\d+)", text).groups()]
    return {"params": number(r"Params \(trainable\)"), "total": number(r"Params \(total[^)]*\)"),
            "madds": number("MAdds"), "input_size": shape}


def _readme_top1():
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        rows = re.findall(r"^\| `(MobileNeXt_\w+)` \| `\w+` \| [0-9,]+ \| [0-9.]+M \| ([0-9.]+)% \|$",
                          f.read(), re.M)
    return {name: float(top1) for name, top1 in rows}


def test_every_model_carries_the_facts_tools_model_info_prints():
    import ppcls

    names = ppcls.list_models()
    assert names == ["MobileNeXt_x0_35", "MobileNeXt_x0_5", "MobileNeXt_x0_75", "MobileNeXt_x1_0",
                     "MobileNeXt_x1_4"]
    top1 = _readme_top1()
    assert sorted(top1) == names
    for name in names:
        meta = ppcls.create_model(name).meta
        info = _model_info(f"Arch.name={name}")
        assert (meta["params"], meta["madds"], meta["input_size"]) == \
            (info["params"], info["madds"], info["input_size"]), name
        assert meta["top1"] == top1[name]
        assert meta["pretrained_url"] == (f"https://paddle-imagenet-models-name.bj.bcebos.com/"
                                          f"dygraph/{PUBLISHED}" if name == "MobileNeXt_x1_0" else None)
        assert len(meta["categories"]) == 1000 and meta["categories"][0].startswith("tench")


def test_create_model_with_another_class_num_counts_as_model_info():
    """The issue's one-liner: ``sum(p.size for p in m.parameters())`` (Paddle counts the BN
    running statistics as parameters) is model_info's total at class_num 7."""
    import ppcls

    model = ppcls.create_model("MobileNeXt_x0_5", class_num=7)
    info = _model_info("Arch.name=MobileNeXt_x0_5", "Arch.class_num=7")
    assert sum(p.size for p in model.parameters()) == info["total"] == 909_567
    assert sum(p.size for p in model.parameters() if not p.stop_gradient) == info["params"]
    assert list(model.classifier[1].weight.shape) == [1280, 7]
    assert model.meta["categories"] is None and model.meta["class_num"] == 7


def test_list_models_patterns_aliases_and_unknown_names():
    import ppcls
    from ppcls.utils.errors import CheckpointError, ConfigError

    assert ppcls.list_models("*x1*") == ["MobileNeXt_x1_0", "MobileNeXt_x1_4"]
    assert ppcls.list_models(pretrained=True) == ["MobileNeXt_x1_0"]
    assert "MobileNeXt_100" in ppcls.list_models(aliases=True)
    with pytest.raises(ConfigError, match=r"unknown model 'MobileNext_x1_0'.*did you mean 'MobileNeXt_x1_0'"):
        ppcls.create_model("MobileNext_x1_0")
    with pytest.raises(ConfigError, match="unknown config key 'Arch.dropuot'.*did you mean 'dropout'"):
        ppcls.create_model("MobileNeXt_x0_35", dropuot=0.1)
    with pytest.raises(CheckpointError, match=r"publishes no weights for MobileNeXt_x0_5 \(only "
                                              r"for MobileNeXt_x1_0\); pass pretrained="):
        ppcls.Predictor(model_name="MobileNeXt_50")
    with pytest.raises(ConfigError, match="give model_name or inference_model_dir"):
        ppcls.Predictor()


def test_transforms_are_the_recipe_eval_pipeline_for_path_pil_and_array():
    import ppcls
    from PIL import Image

    from ppcls.data.preprocess import create_operators, decode_image, transform
    from ppcls.inference.export import deploy_transforms
    from ppcls.utils.config import load_config

    model = ppcls.create_model("MobileNeXt_x0_35")
    t = model.transforms()
    path = os.path.join(IMAGES, "flower.jpg")
    expected = transform(decode_image(path), create_operators(deploy_transforms(load_config(RECIPE))))
    pixels = decode_image(path)
    for image in (path, Image.fromarray(pixels), pixels):
        out = t(image)
        assert out.shape == (3, 224, 224) and out.dtype == np.float32
        np.testing.assert_array_equal(out, expected)


def test_create_model_pretrained_true_path_and_new_head(api_env, tmp_path, monkeypatch):
    import paddle

    import ppcls
    from ppcls.utils import logger
    from ppcls.utils.weights import save_state_dict, state_dict_numpy

    from ppcls.utils import download

    npz = api_env["npz"]
    monkeypatch.setenv(download.WEIGHTS_HOME_ENV, str(tmp_path / "weights"))  # its own download

    def logits(model):
        model.eval()
        with paddle.no_grad():
            return model(paddle.to_tensor(npz["input"])).numpy()

    model = ppcls.create_model("MobileNeXt_x1_0", pretrained=True)
    assert np.abs(logits(model) - npz["logits"]).max() < 1e-3  # the official network's answer
    path = save_state_dict(state_dict_numpy(model), str(tmp_path / "mine.pdparams"))
    again = ppcls.create_model("MobileNeXt_100", pretrained=path)
    np.testing.assert_allclose(logits(again), logits(model), atol=1e-5)
    warnings = []
    monkeypatch.setattr(logger, "warning", lambda msg, *a: warnings.append(msg))
    tuned = ppcls.create_model("MobileNeXt_x1_0", pretrained=True, class_num=7)
    assert list(tuned.classifier[1].weight.shape) == [1280, 7]
    assert len(warnings) == 1 and "classifier.1.weight" in warnings[0]
    np.testing.assert_array_equal(tuned.features[3].conv[0].weight.numpy(),
                                  model.features[3].conv[0].weight.numpy())


# ------------------------------------------------------------------ Predictor and predict


def test_predict_command_downloads_exports_once_and_matches_predict_cls(api_env, cli_predict):
    from ppcls.inference.deploy import format_result, predict_cls
    from ppcls.inference.export import deploy_transforms
    from ppcls.inference.artifacts import read_inference_yml
    from ppcls.utils.config import load_config

    stdout, _, requests = cli_predict
    assert requests == [f"/dygraph/{PUBLISHED}"]
    assert os.listdir(api_env["weights"]) == [PUBLISHED]
    (export_dir,) = [os.path.join(root, d) for root, dirs, _ in os.walk(api_env["inference"])
                     for d in dirs if root.endswith("MobileNeXt_x1_0")]
    record = read_inference_yml(export_dir)
    # the recipe's preprocessing, as tools/export_model.py records it
    assert record["PreProcess"]["transform_ops"] == deploy_transforms(load_config(RECIPE))
    lines = [line for line in stdout.splitlines() if "class id(s)" in line]
    assert len(lines) == 2 and lines[0].startswith("china.jpg:\tclass id(s): [")
    cfg = {"Global": {"infer_imgs": IMAGES, "inference_model_dir": export_dir, "use_onnx": False}}
    results, code = predict_cls(cfg, emit=lambda line: None)
    assert code == 0 and [format_result(r) for r in results] == lines  # Paddle Inference vs CLI
    assert all(len(r["class_ids"]) == 5 and r["label_names"][0] for r in results)


def test_predictor_reuses_the_export_and_same_pixels_same_answers(api_env, cli_predict, tmp_path,
                                                                  capsys):
    from PIL import Image

    import ppcls
    from ppcls.data.preprocess import decode_image

    before = len(api_env["server"].requests)
    exports = sorted(os.walk(api_env["inference"]))
    predictor = ppcls.Predictor(model_name="MobileNeXt_x1_0", topk=3, batch_size=2)
    assert len(api_env["server"].requests) == before and sorted(os.walk(api_env["inference"])) == exports

    pixels = decode_image(os.path.join(IMAGES, "flower.jpg"))
    folder = tmp_path / "pngs"
    folder.mkdir()
    Image.fromarray(pixels).save(folder / "flower.png")  # lossless: the same pixels
    png = str(folder / "flower.png")

    def answers(x):
        return [(r["class_ids"], r["scores"]) for batch in predictor.predict(x) for r in batch]

    (want,) = answers(png)
    assert answers(str(folder)) == [want]
    assert answers(Image.open(png)) == [want]
    assert answers(pixels) == [want]
    batches = list(predictor.predict(np.stack([pixels, pixels, pixels])))
    assert [len(b) for b in batches] == [2, 1]  # batch_size 2
    assert [(r["class_ids"], r["scores"]) for b in batches for r in b] == [want] * 3
    assert batches[0][0]["file_name"] is None and batches[0][0]["label_names"][0]
    (mixed,) = list(predictor.predict([png, pixels], batch_size=4))
    assert [r["file_name"] for r in mixed] == [png, None]
    # an unreadable file is one Error line and skipped, as in predict_cls
    (folder / "broken.jpg").write_bytes(b"not an image")
    assert answers(str(folder)) == [want]
    assert "broken.jpg" in capsys.readouterr().err and predictor.failed


def test_predict_offline_is_one_line_with_the_address_and_cache_path(api_env, monkeypatch,
                                                                     tmp_path, capsys):
    import http.server

    from ppcls.api.commands import main
    from ppcls.utils import download
    from ppcls.utils.cli import run_tool

    closed = http.server.HTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)
    port = closed.server_address[1]
    closed.server_close()
    monkeypatch.setenv(download.BASE_URL_ENV, f"http://127.0.0.1:{port}/dygraph")
    monkeypatch.setenv(download.WEIGHTS_HOME_ENV, str(tmp_path / "empty"))
    with pytest.raises(SystemExit) as exit_info:
        run_tool(main, ["predict", "--model_name", "MobileNeXt_x1_0", "--infer_imgs", IMAGES])
    assert exit_info.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    assert f"cannot download http://127.0.0.1:{port}/dygraph/{PUBLISHED}" in lines[0]
    assert lines[0].endswith(f"put it at {tmp_path / 'empty' / PUBLISHED}")


# ------------------------------------------------------------------ help, config


def test_train_help_names_the_common_keys_with_defaults():
    proc = subprocess.run([sys.executable, "tools/train.py", "--help"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0
    for key, default in (("Global.epochs", "1"), ("Global.device", "gpu"),
                         ("Global.pretrained_model", "null"), ("Global.checkpoints", "null"),
                         ("Arch.name", "(required)"), ("Arch.class_num", "1000")):
        assert re.search(rf"^  {re.escape(key)} +{re.escape(default)} +\w", proc.stdout, re.M), key


def test_a_misspelt_key_still_says_did_you_mean(capsys):
    """tools/train.py and ``python -m ppcls train`` alike."""
    from ppcls.api.commands import main
    from ppcls.utils.cli import run_tool

    for tool, argv in ((_tool("train").main, []), (main, ["train"])):
        with pytest.raises(SystemExit) as exit_info:
            run_tool(tool, argv + ["-c", RECIPE, "-o", "Global.epoch=3"])
        assert exit_info.value.code == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "unknown config key 'Global.epoch' (did you mean 'epochs'?)" in err[0]


def test_config_command_prints_the_recipe_commented():
    from ppcls.api.commands import main

    text = _stdout(main, ["config", "MobileNeXt_x1_0"])
    assert re.search(r"^  epochs: 200 +# epochs to train \(default 1\)$", text, re.M)
    assert re.search(r"^  class_num: 1000 +# number of classes.*\(default 1000\)$", text, re.M)
    with open(RECIPE, encoding="utf-8") as f:
        assert yaml.safe_load(text) == yaml.safe_load(f)  # comments only: the same recipe
    keys = _stdout(main, ["config", "--keys"])
    assert re.search(r"^Global.fast_cpu +bool +True +\w", keys, re.M)


# ------------------------------------------------------------------ ImageFolder


def test_image_folder_trains_with_the_dataset_key(digit_folders, tmp_path):
    from ppcls.engine import train
    from ppcls.utils.config import get_config

    train_root, val_root = str(digit_folders / "train"), str(digit_folders / "val")
    overrides = ["Global.device=cpu", "Global.epochs=1", f"Global.output_dir={tmp_path}/out",
                 "Global.save_interval=0", "Global.seed=1", "Arch.name=MobileNeXt_x0_35",
                 "Arch.class_num=3", "Global.image_shape=[3,32,32]",
                 "Metric.Train.0.TopkAcc.topk=[1,2]", "Metric.Eval.0.TopkAcc.topk=[1,2]"]
    for mode in ("Train", "Eval"):
        overrides += [f"DataLoader.{mode}.dataset.name=ImageFolder",
                      f"DataLoader.{mode}.dataset.image_root={train_root if mode == 'Train' else val_root}",
                      f"DataLoader.{mode}.sampler.batch_size=8", f"DataLoader.{mode}.loader.num_workers=0"]
    cfg = get_config(os.path.join(ROOT, "configs", "quickstart", "MobileNeXt_x1_0_digits.yaml"), overrides)
    for mode in ("Train", "Eval"):
        cfg["DataLoader"][mode]["dataset"].pop("cls_label_path", None)
    train(cfg)
    log = open(tmp_path / "out" / "MobileNeXt_x0_35" / "train.log").read()
    assert f"Train data: 12 images from {train_root}" in log and "top1" in log
    assert os.path.isfile(tmp_path / "out" / "MobileNeXt_x0_35" / "latest.pdparams")
    with open(os.path.join(train_root, "label_list.txt")) as f:
        assert f.read() == "0 one\n1 two\n2 zero\n"  # sorted sub-folder names


def test_image_folder_labels_label_list_and_errors(digit_folders, tmp_path):
    from ppcls.data.imagefolder import ImageFolder
    from ppcls.utils.errors import DataError

    root = tmp_path / "set"
    shutil.copytree(digit_folders / "val", root)
    ds = ImageFolder(str(root), transform_ops=[{"DecodeImage": None}])
    assert ds.class_names == ["one", "two", "zero"] and len(ds) == 6
    assert [(os.path.basename(os.path.dirname(p)), int(label)) for p, label in zip(ds.images, ds.labels)] \
        == [("one", 0), ("one", 0), ("two", 1), ("two", 1), ("zero", 2), ("zero", 2)]
    image, label = ds[0]
    assert image.shape == (3, 32, 32) and int(label) == 0
    # the label list it wrote keeps the ids when a class folder is missing (a val set, say)
    assert open(root / "label_list.txt").read() == "0 one\n1 two\n2 zero\n"
    shutil.rmtree(root / "one")
    assert sorted(set(int(v) for v in ImageFolder(str(root)).labels)) == [1, 2]
    kept = ImageFolder(str(root), label_list_path=str(tmp_path / "mine.txt"))
    assert kept.class_names == ["two", "zero"]
    (root / "three").mkdir()
    shutil.copy(ds.images[-1], root / "three" / "x.jpg")
    with pytest.raises(DataError, match=r"class folder\(s\) three that the label list .*mine.txt"):
        ImageFolder(str(root), label_list_path=str(tmp_path / "mine.txt"))
    with pytest.raises(DataError, match="has 3 classes.*Arch.class_num is 2"):
        ImageFolder(str(root), label_list_path=str(tmp_path / "fresh.txt"), class_num=2)
    with pytest.raises(DataError, match="no sub-folders"):
        ImageFolder(str(root / "three"))


# ------------------------------------------------------------------ README code, as written


def _readme_blocks(path, heading):
    with open(path, encoding="utf-8") as f:
        text = f.read()
    section = re.search(rf"^## {re.escape(heading)}\n(.*?)(?=^## )", text, re.M | re.S)
    assert section, f"{path}: no section '## {heading}'"
    return re.findall(r"```python\n(.*?)```", section.group(1), re.S)


def test_readme_python_api_and_fine_tune_run_as_written(api_env, cli_predict, digit_folders,
                                                        tmp_path, monkeypatch):
    api = _readme_blocks(os.path.join(ROOT, "README.md"), "Python API")
    tune = _readme_blocks(os.path.join(ROOT, "README.md"), "Fine-tune on your own folder")
    assert len(api) == 1 and len(tune) == 1
    assert len([line for line in tune[0].splitlines() if line.strip()]) <= 12
    # the Chinese README shows the same code
    assert _readme_blocks(os.path.join(ROOT, "README_ch.md"), "Python API") == api
    assert _readme_blocks(os.path.join(ROOT, "README_ch.md"), "在自己的文件夹上微调") == tune
    work = tmp_path / "work"
    shutil.copytree(digit_folders, work / "photos")
    os.symlink(os.path.join(ROOT, "deploy"), work / "deploy")
    monkeypatch.chdir(work)
    before = len(api_env["server"].requests)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(api[0], "README.md:Python API", "exec"), {})
    assert "MobileNeXt_x1_0" in out.getvalue() and "'class_ids'" in out.getvalue()
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(tune[0], "README.md:Fine-tune", "exec"), {})
    assert len(api_env["server"].requests) == before  # the cached download, no new request
    results = [eval(line) for line in out.getvalue().splitlines() if line.startswith("[{")]  # noqa: S307
    assert sum(len(batch) for batch in results) == 6
    assert all(r["label_names"][0] in CLASSES for batch in results for r in batch)
