"""PaddleClas's own files run here unchanged (issue 10): the seed's and upstream's YAMLs, the
cooldown, five other upstream recipes with our model, every shipped config with one epoch,
``None`` in ``-o``, a warm-up longer than the run, and ``Arch.pretrained: True``.

The fixture files (../shared/fixtures/paddleclas) are used as they are; the runs override
only data paths, device, epochs, batch size and loader workers (and, for the other models'
recipes, ``Arch.name`` and ``class_num``). Commands run in a temporary view of the repository
(symlinks), so the configs' relative paths (``./output/``, ``./inference``,
``ppcls/utils/imagenet1k_label_list.txt``, ``../ppcls/...`` from deploy/) resolve there and
nothing is written into the repository. ``Arch.pretrained: True`` downloads from a local HTTP
server on 127.0.0.1 into a temporary cache: no test touches the network.
"""

import glob
import http.server
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

from conftest import FIXTURES, ROOT
from helpers import PUBLISHED, published  # noqa: F401  (the 127.0.0.1 server, a fixture)

PADDLECLAS = os.path.join(FIXTURES, "paddleclas")
SEED = os.path.join(PADDLECLAS, "seed")
UPSTREAM = os.path.join(PADDLECLAS, "upstream")
# two iterations an epoch, one eval batch. Batches of 8, not 2: at 32 px MobileNeXt's last
# stages are 1 x 1, and BatchNorm over 2 values there blows the gradients up to NaN within two
# steps in most runs (which training refuses to save: Engine._check_params).
N_TRAIN, N_VAL, BATCH = 16, 2, 8


# ------------------------------------------------------------------------------ shared set-up


@pytest.fixture(scope="session")
def digits(tmp_path_factory):
    """The digits data set (32 px) with tiny list files and a folder of two images to predict."""
    from ppcls.data.digits import prepare_digits

    root = tmp_path_factory.mktemp("pcdigits")
    data = str(root / "digits")
    prepare_digits(data, size=32, progress=False)
    for name, n in (("train", N_TRAIN), ("val", N_VAL)):
        with open(os.path.join(data, f"{name}_list.txt")) as f:
            lines = f.read().splitlines()[:n]
        with open(os.path.join(data, f"{name}_tiny.txt"), "w") as f:
            f.write("\n".join(lines) + "\n")
    images = root / "images"
    images.mkdir()
    for line in lines[:2]:
        shutil.copy(os.path.join(data, line.split()[0]), images)
    return {"root": data, "train": os.path.join(data, "train_tiny.txt"),
            "val": os.path.join(data, "val_tiny.txt"), "images": str(images)}


@pytest.fixture
def weights_env(published, tmp_path, monkeypatch):
    """The download address and the cache moved to the local server and ``tmp_path``."""
    from ppcls.utils import download

    server, _ = published
    monkeypatch.setenv(download.BASE_URL_ENV, server.url)
    monkeypatch.setenv(download.WEIGHTS_HOME_ENV, str(tmp_path / "cache"))
    monkeypatch.setenv("no_proxy", "127.0.0.1")  # a proxy in the environment must not see it
    return server, str(tmp_path / "cache")


def _repo_view(root):
    """ROOT seen through symlinks, with deploy/ a real folder (predict_cls writes there)."""
    root.mkdir()
    for name in ("ppcls", "tools", "configs"):
        os.symlink(os.path.join(ROOT, name), root / name)
    (root / "deploy").mkdir()
    for name in os.listdir(os.path.join(ROOT, "deploy")):
        if name not in ("output", "__pycache__", "pre_label"):
            os.symlink(os.path.join(ROOT, "deploy", name), root / "deploy" / name)
    return root


def _data(digits, train=True):
    out = ["Global.device=cpu"]
    modes = (("Train", digits["train"]), ("Eval", digits["val"])) if train else (("Eval", digits["val"]),)
    for mode, path in modes:
        out += [f"DataLoader.{mode}.dataset.image_root={digits['root']}",
                f"DataLoader.{mode}.dataset.cls_label_path={path}",
                f"DataLoader.{mode}.sampler.batch_size={BATCH}",
                f"DataLoader.{mode}.loader.num_workers=0"]
    return out


def _run(cwd, script, config, overrides, env):
    cmd = [sys.executable, script, "-c", config]
    for o in overrides:
        cmd += ["-o", o]
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, (f"{' '.join(cmd)}\nSTDOUT:\n{proc.stdout[-3000:]}\n"
                                  f"STDERR:\n{proc.stderr[-3000:]}")
    return proc.stdout + proc.stderr


@pytest.fixture(scope="session")
def runner(tmp_path_factory, published):
    """run(name, script, config, overrides, cwd="") in the repository view ``name``."""
    from ppcls.utils import download

    base = tmp_path_factory.mktemp("pcruns")
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONWARNINGS": "ignore",
           download.BASE_URL_ENV: published[0].url,
           download.WEIGHTS_HOME_ENV: str(base / "weights_cache"), "no_proxy": "127.0.0.1"}
    views = {}

    def run(name, script, config, overrides, cwd=""):
        if name not in views:
            views[name] = _repo_view(base / name)
        return _run(views[name] / cwd, script, config, overrides, env)

    run.view = lambda name: views[name]
    return run


TRAIN, EVAL, INFER, EXPORT = "tools/train.py", "tools/eval.py", "tools/infer.py", "tools/export_model.py"
PREDICT = "python/predict_cls.py"
RECIPES = {"seed": (os.path.join(SEED, "MobileNeXt_100.yaml"), "MobileNeXt_100"),
           "upstream": (os.path.join(UPSTREAM, "MobileNeXt_x1_0.yaml"), "MobileNeXt_x1_0")}
EPOCH_LINE = re.compile(r"\[Train\]\[Epoch (\d+)/(\d+)\]\[Iter: 0/(\d+)\]lr\((\w+)\): ([0-9.]+)")


@pytest.fixture(scope="session")
def recipe_runs(runner, digits):
    """Each MobileNeXt recipe, unchanged: trained (the seed's for 2 epochs, the run its
    cooldown resumes), then exported. Returns {key: {"train": log, "export": log}}."""
    runs = {}
    for key, (config, _) in RECIPES.items():
        epochs = 2 if key == "seed" else 1
        train = runner(key, TRAIN, config, _data(digits) + [f"Global.epochs={epochs}"])
        name = RECIPES[key][1]
        export = runner(key, EXPORT, config,
                        ["Global.device=cpu", f"Global.pretrained_model=output/{name}/latest"])
        runs[key] = {"train": train, "export": export}
    return runs


# ------------------------------------------------------------------------------ the recipes


@pytest.mark.parametrize("key", sorted(RECIPES))
def test_recipe_trains_evaluates_and_infers_unchanged(recipe_runs, runner, digits, key):
    config, name = RECIPES[key]
    log = recipe_runs[key]["train"]
    epochs = 2 if key == "seed" else 1
    # the recipe's 3-epoch warm-up is cut to the run, with one warning (PaddleClas's rule)
    assert log.count("warm-up is shortened") == 1
    lines = EPOCH_LINE.findall(log)
    assert [(int(e), int(n), int(i)) for e, n, i, _, _ in lines] == \
        [(e, epochs, N_TRAIN // BATCH) for e in range(1, epochs + 1)]
    assert lines[0][3] == "LinearWarmup" and float(lines[0][4]) == pytest.approx(1e-4)  # warmup_start_lr
    assert re.search(r"\[Eval\]\[Epoch %d\]\[Avg\].*top1: [0-9.]+, top5: [0-9.]+" % epochs, log)
    out = os.path.join(runner.view(key), "output", name)
    assert os.path.isfile(os.path.join(out, "latest.pdparams"))

    log = runner(key, EVAL, config, _data(digits, train=False)
                 + [f"Global.pretrained_model=output/{name}/latest"])
    assert re.search(r"\[Eval\]\[Epoch 0\]\[Avg\].*top1: [0-9.]+, top5: [0-9.]+", log)

    log = runner(key, INFER, config, ["Global.device=cpu", f"Infer.infer_imgs={digits['images']}",
                                      f"Global.pretrained_model=output/{name}/latest"])
    # one dict per image (printed one a line, or one list a batch)
    files = re.findall(r"'file_name': '([^']+)'", log)
    assert sorted(os.path.basename(f) for f in files) == sorted(os.listdir(digits["images"]))
    ids = re.findall(r"'class_ids': \[([0-9, ]+)\]", log)
    assert len(ids) == len(files) and all(len(i.split(",")) == 5 for i in ids)  # topk: 5


PREDICTIONS = [("seed", "seed"), ("seed", "upstream"), ("upstream", "upstream")]


@pytest.mark.parametrize("model,yaml_key", PREDICTIONS)
def test_exported_recipe_predicts_with_paddleclas_inference_yaml(recipe_runs, runner, digits,
                                                                   model, yaml_key):
    """deploy/python/predict_cls.py with the fixture inference_cls.yaml (its model dir and
    images overridden), on the model the recipe exported to its ./inference."""
    assert "exported" in recipe_runs[model]["export"]
    inference = os.path.join(runner.view(model), "inference")
    assert os.path.isfile(os.path.join(inference, "inference.pdiparams"))
    log = runner(model, PREDICT, os.path.join(PADDLECLAS, yaml_key, "inference_cls.yaml"),
                 ["Global.inference_model_dir=../inference", f"Global.infer_imgs={digits['images']}"],
                 cwd="deploy")
    lines = [line for line in log.splitlines() if "class id(s):" in line]
    assert len(lines) == len(os.listdir(digits["images"]))
    for line in lines:
        ids = re.search(r"class id\(s\): \[([0-9, ]+)\]", line).group(1)
        assert len(ids.split(",")) == 5  # the file's Topk: 5


def test_seed_cooldown_resumes_the_recipe_run_at_1e_5(recipe_runs, runner, digits):
    """MobileNeXt_100_cooldown.yaml resumes the seed recipe's 2-epoch run (its
    Global.checkpoints pointed at epoch_2 instead of epoch_200) and trains on at 1e-5."""
    assert "[Train][Epoch 2/2]" in recipe_runs["seed"]["train"]
    log = runner("seed", TRAIN, os.path.join(SEED, "MobileNeXt_100_cooldown.yaml"),
                 _data(digits) + ["Global.epochs=3",
                                  "Global.checkpoints=./output/MobileNeXt_100/epoch_2"])
    lines = EPOCH_LINE.findall(log)
    assert [(e, n) for e, n, _, _, _ in lines] == [("3", "3")]  # resumed after epoch 2
    assert lines[0][3] == "Constant" and float(lines[0][4]) == pytest.approx(1e-5)
    out = os.path.join(runner.view("seed"), "output", "MobileNeXt_100")
    assert os.path.isfile(os.path.join(out, "epoch_3.pdparams"))


# ------------------------------------------------------------------ other models' recipes

OTHER_RECIPES = ["MobileNetV2.yaml", "PPLCNet_x1_0.yaml", "ResNet50.yaml",
                 "quick_start_MobileNetV3_large_x1_0.yaml",
                 "professional_MobileNetV3_large_x1_0_CIFAR100_finetune.yaml"]


@pytest.mark.parametrize("filename", OTHER_RECIPES)
def test_upstream_recipe_runs_with_mobilenext(runner, digits, filename):
    """Upstream's recipe for another model, unchanged but for ``Arch.name`` and ``class_num``:
    train (with its eval), export. ResNet50.yaml's ``Arch.pretrained: True`` downloads
    PaddleClas's MobileNeXt_x1_0 file (from the local server) and fine-tunes its 1000-class
    head away."""
    config = os.path.join(UPSTREAM, filename)
    key = filename.split(".")[0]
    overrides = ["Arch.name=MobileNeXt_x1_0", "Arch.class_num=10"]
    log = runner(key, TRAIN, config, overrides + _data(digits) + ["Global.epochs=1"])
    assert "[Train][Epoch 1/1][Iter: 0/2]" in log
    assert re.search(r"\[Eval\]\[Epoch 1\]\[Avg\].*top1: [0-9.]+", log)
    if filename == "ResNet50.yaml":
        assert "Arch.pretrained=True: " in log and PUBLISHED in log
        assert "classifier.1.weight, classifier.1.bias" in log  # the 1000-class head is skipped
    # the label map its Infer section names is part of its data set (flowers102's list)
    labels = os.path.join(digits["root"], "label_list.txt")
    log = runner(key, EXPORT, config, overrides + [
        "Global.device=cpu", "Global.pretrained_model=output/MobileNeXt_x1_0/latest",
        f"Infer.PostProcess.class_id_map_file={labels}"])
    assert os.path.isfile(os.path.join(runner.view(key), "inference", "inference.pdiparams"))


# ------------------------------------------------------------ every shipped config, 1 epoch

SHIPPED = sorted(glob.glob(os.path.join(ROOT, "ppcls", "configs", "**", "*.yaml"), recursive=True)
                 + glob.glob(os.path.join(ROOT, "configs", "**", "*.yaml"), recursive=True))


def _small_images(cfg):
    """Overrides that make every image op of the config produce 32 px."""
    out = []
    for mode in ("Train", "Eval"):
        ops = cfg["DataLoader"][mode]["dataset"]["transform_ops"]
        for i, op in enumerate(ops):
            name, args = next(iter(op.items()))
            prefix = f"DataLoader.{mode}.dataset.transform_ops.{i}.{name}"
            if name in ("RandCropImage", "CropImage"):
                out.append(f"{prefix}.size=32")
            elif name == "ResizeImage":
                out.append(f"{prefix}.{'resize_short' if 'resize_short' in args else 'size'}=32")
    return out


def test_shipped_configs_are_all_found():
    names = {os.path.basename(p) for p in SHIPPED}
    assert {"MobileNeXt_100.yaml", "MobileNeXt_100_cooldown.yaml", "MobileNeXt_x1_0.yaml",
            "MobileNeXt_x0_35.yaml", "MobileNeXt_x1_4.yaml", "MobileNeXt_x1_0_digits.yaml"} <= names


@pytest.mark.parametrize("path", SHIPPED, ids=[os.path.relpath(p, ROOT) for p in SHIPPED])
def test_every_shipped_config_runs_one_epoch(path, digits, tmp_path, capsys):
    """``-o Global.epochs=1`` (the first smoke test anyone runs): config, engine and one
    training iteration, whatever the config's warm-up (the cooldown starts afresh here)."""
    from ppcls.engine import Engine
    from ppcls.utils.config import get_config, load_config

    overrides = (_data(digits) + _small_images(load_config(path))
                 + ["Global.epochs=1", "Global.max_iters_per_epoch=1", "Global.checkpoints=None",
                    "Global.eval_during_train=False", f"Global.output_dir={tmp_path}",
                    "Global.print_batch_step=1", "Global.save_interval=0"])
    cfg = get_config(path, overrides)
    assert cfg["Global"]["checkpoints"] is None  # -o ...=None means none, not the path "None"
    Engine(cfg, mode="train").train()
    out = capsys.readouterr().out
    assert "[Train][Epoch 1/1][Iter: 0/1]" in out
    warmup = (cfg["Optimizer"]["lr"] or {}).get("warmup_epoch", 0) if isinstance(
        cfg["Optimizer"].get("lr"), dict) else 0
    assert out.count("warm-up is shortened") == (1 if warmup >= 1 else 0)


# ------------------------------------------------------------------ warm-up and -o None


def test_warmup_longer_than_the_run_is_cut_to_the_run_with_one_warning(monkeypatch):
    """PaddleClas: warmup_epoch >= epochs -> warning, warmup_epoch = epochs. The seed's TIPC
    lite mode: 2 epochs on a 3-epoch warm-up from 1e-4 to 0.1, stepped by epoch."""
    from ppcls.optimizer import build_lr
    from ppcls.utils import logger
    from ppcls.utils.errors import ConfigError

    warnings = []
    monkeypatch.setattr(logger, "warning", lambda msg, *a: warnings.append(msg))
    lr = {"name": "Cosine", "learning_rate": 0.1, "eta_min": 1e-5, "warmup_epoch": 3,
          "warmup_start_lr": 1e-4, "by_epoch": True}
    plan = build_lr(dict(lr), epochs=2, step_each_epoch=5)
    assert len(warnings) == 1 and "warmup_epoch (3)" in warnings[0] and "2 epoch" in warnings[0]
    rates = []
    for _ in range(2):
        rates.append(plan.get_lr())
        plan.scheduler.step()
    assert rates == pytest.approx([1e-4, (1e-4 + 0.1) / 2])  # linear over the 2 epochs
    # by iteration: the warm-up spans the whole run, 10 steps
    plan = build_lr({**lr, "by_epoch": False}, epochs=2, step_each_epoch=5)
    rates = []
    for _ in range(10):
        rates.append(plan.get_lr())
        plan.scheduler.step()
    assert rates == pytest.approx([1e-4 + (0.1 - 1e-4) * i / 10 for i in range(10)])
    # a warm-up inside the run is untouched and says nothing
    warnings.clear()
    plan = build_lr({**lr, "warmup_epoch": 1}, epochs=2, step_each_epoch=5)
    assert warnings == [] and plan.get_lr() == pytest.approx(1e-4)
    with pytest.raises(ConfigError, match="warmup_epoch must be a number >= 0, got -1"):
        build_lr({**lr, "warmup_epoch": -1}, epochs=2, step_each_epoch=5)


def test_none_in_overrides_is_null(tmp_path):
    from ppcls.utils.config import get_config
    from ppcls.utils.errors import ConfigError

    cfg = get_config(os.path.join(SEED, "MobileNeXt_100_cooldown.yaml"),
                     ["Global.checkpoints=None", "Global.pretrained_model=null",
                      "Infer.PostProcess.class_id_map_file=None"])
    assert cfg["Global"]["checkpoints"] is None and cfg["Global"]["pretrained_model"] is None
    assert cfg["Infer"]["PostProcess"]["class_id_map_file"] is None
    with pytest.raises(ConfigError, match="'Global.epochs' expects an integer, got 'None'"):
        get_config(os.path.join(SEED, "MobileNeXt_100.yaml"), ["Global.epochs=None"])


# ------------------------------------------------------------------ Arch.pretrained: True


def _logits(model, npz):
    import paddle

    model.eval()
    with paddle.no_grad():
        return model(paddle.to_tensor(npz["input"])).numpy()


def test_pretrained_true_downloads_checks_caches_and_reuses(weights_env, published):
    from ppcls.arch import build_model
    from ppcls.arch.backbone.mobilenext import PRETRAINED_URLS

    server, cache = weights_env
    npz = published[1]
    assert PRETRAINED_URLS["x1_0"] == ("https://paddle-imagenet-models-name.bj.bcebos.com/"
                                       "dygraph/MobileNeXt_x1_0_pretrained.pdparams")
    before = len(server.requests)
    model = build_model({"name": "MobileNeXt_x1_0", "pretrained": True})
    assert server.requests[before:] == [f"/dygraph/{PUBLISHED}"]
    assert os.listdir(cache) == [PUBLISHED]  # nothing else left (no temp file)
    assert np.abs(_logits(model, npz) - npz["logits"]).max() < 1e-3  # the official model
    # the seed's name is the same width; the second build reads the cache, no request
    model = build_model({"name": "MobileNeXt_100", "pretrained": True})
    assert len(server.requests) == before + 1
    assert np.abs(_logits(model, npz) - npz["logits"]).max() < 1e-3


def test_pretrained_true_with_other_class_num_keeps_the_new_head(weights_env, monkeypatch):
    from ppcls.arch import build_model
    from ppcls.utils import logger

    warnings = []
    monkeypatch.setattr(logger, "warning", lambda msg, *a: warnings.append(msg))
    model = build_model({"name": "MobileNeXt_x1_0", "class_num": 5, "pretrained": True})
    assert list(model.classifier[1].weight.shape) == [1280, 5]
    assert len(warnings) == 1 and "not loading classifier.1.weight, classifier.1.bias" in warnings[0]


def test_pretrained_true_bad_download_is_refused_and_not_cached(weights_env, monkeypatch):
    from ppcls.arch import build_model
    from ppcls.utils import download
    from ppcls.utils.errors import CheckpointError

    server, cache = weights_env
    monkeypatch.setenv(download.BASE_URL_ENV, server.url + "/broken")
    with pytest.raises(CheckpointError, match=rf"downloaded from {re.escape(server.url)}/broken/"
                                              rf"{PUBLISHED} is not usable"):
        build_model({"name": "MobileNeXt_x1_0", "pretrained": True})
    assert not os.path.exists(cache) or os.listdir(cache) == []


def test_pretrained_true_offline_is_one_line_with_address_and_cache_path(weights_env, tmp_path,
                                                                        monkeypatch, capsys):
    """No network (here: a closed port on 127.0.0.1): a tool exits 2 with one line naming the
    address and where to put the file."""
    from ppcls.arch import build_model
    from ppcls.utils import download
    from ppcls.utils.cli import run_tool

    closed = http.server.HTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)
    port = closed.server_address[1]
    closed.server_close()
    monkeypatch.setenv(download.BASE_URL_ENV, f"http://127.0.0.1:{port}/dygraph")
    with pytest.raises(SystemExit) as exit_info:
        run_tool(lambda argv: build_model({"name": "MobileNeXt_x1_0", "pretrained": True}))
    assert exit_info.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: Arch.pretrained=True: cannot download "
                                                   f"http://127.0.0.1:{port}/dygraph/{PUBLISHED}")
    assert lines[0].endswith(f"put it at {os.path.join(weights_env[1], PUBLISHED)}")
    assert not os.path.exists(weights_env[1]) or os.listdir(weights_env[1]) == []


def test_pretrained_true_for_a_width_paddleclas_does_not_publish(weights_env):
    from ppcls.arch import build_model
    from ppcls.utils.errors import CheckpointError

    with pytest.raises(CheckpointError, match="publishes no pretrained weights for MobileNeXt_x0_5"):
        build_model({"name": "MobileNeXt_50", "pretrained": True})


def test_default_cache_is_paddleclas_weights_folder(monkeypatch, tmp_path):
    from ppcls.utils import download

    monkeypatch.delenv(download.WEIGHTS_HOME_ENV, raising=False)
    monkeypatch.delenv(download.BASE_URL_ENV, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    url = "https://paddle-imagenet-models-name.bj.bcebos.com/dygraph/" + PUBLISHED
    assert download.resolve_url(url) == url
    assert download.cache_path(url) == str(tmp_path / ".paddleclas" / "weights" / PUBLISHED)
