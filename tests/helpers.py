"""Shared helpers for the engine tests: a tiny real data set and subprocess runs of tools/.

The data are scikit-learn's handwritten digits (real scans) written by the quickstart tool,
with short list files so a run takes seconds. Runs use the quickstart config with overrides
(MobileNeXt_x0_35, 8 images a batch), so the config file users run is the one tested.
"""

import functools
import http.server
import os
import shutil
import subprocess
import sys
import threading
import types

import numpy as np

import pytest

from conftest import FIXTURES, ROOT

QUICKSTART = os.path.join(ROOT, "configs", "quickstart", "MobileNeXt_x1_0_digits.yaml")
RECIPE = os.path.join(ROOT, "ppcls", "configs", "ImageNet", "MobileNeXt", "MobileNeXt_100.yaml")
COOLDOWN = os.path.join(ROOT, "ppcls", "configs", "ImageNet", "MobileNeXt",
                        "MobileNeXt_100_cooldown.yaml")
TRAIN = os.path.join(ROOT, "tools", "train.py")
EVAL = os.path.join(ROOT, "tools", "eval.py")
# runs a tool with test-only pauses patched in (PPCLS_TEST_SAVE_PAUSE, PPCLS_TRACE_HOLD)
PAUSE_RUN = os.path.join(ROOT, "tests", "pause_run.py")
N_TRAIN, N_VAL = 48, 27  # 6 batches of 8; 27 = 2 x 13 + 1, so two ranks need a padded sample


def _subset(src, dst, n):
    with open(src) as f:
        lines = f.read().splitlines()[:n]
    with open(dst, "w") as f:
        f.write("\n".join(lines) + "\n")
    return [int(line.split()[1]) for line in lines]


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory):
    """``(folder, train labels, val labels)``; list files ``train_small.txt``, ``val_small.txt``."""
    from ppcls.data.digits import prepare_digits

    root = str(tmp_path_factory.mktemp("digits") / "digits")
    prepare_digits(root, size=32, progress=False)
    train = _subset(os.path.join(root, "train_list.txt"), os.path.join(root, "train_small.txt"), N_TRAIN)
    val = _subset(os.path.join(root, "val_list.txt"), os.path.join(root, "val_small.txt"), N_VAL)
    return root, train, val


def data_overrides(data_root, train_list="train_small.txt", val_list="val_small.txt"):
    out = []
    for mode, name in (("Train", train_list), ("Eval", val_list)):
        out += [f"DataLoader.{mode}.dataset.image_root={data_root}",
                f"DataLoader.{mode}.dataset.cls_label_path={os.path.join(data_root, name)}",
                f"DataLoader.{mode}.sampler.batch_size=8",
                f"DataLoader.{mode}.loader.num_workers=0"]
    return out


def tiny_overrides(data_root, output_dir, epochs=2, **global_keys):
    """Overrides that turn the quickstart config into a seconds-long CPU run."""
    out = data_overrides(data_root) + [
        "Arch.name=MobileNeXt_x0_35", "Global.device=cpu", f"Global.output_dir={output_dir}",
        f"Global.epochs={epochs}", "Global.print_batch_step=1", "Global.seed=7",
        "Optimizer.lr.warmup_epoch=0",
        "DataLoader.Train.dataset.transform_ops.1.RandCropImage.size=32",
        "DataLoader.Eval.dataset.transform_ops.1.ResizeImage.size=32"]
    out += [f"Global.{k}={v}" for k, v in global_keys.items()]
    return out


def paused(cmd):
    """``cmd`` (a ``command(...)``) run through ``tests/pause_run.py``."""
    return [cmd[0], PAUSE_RUN] + cmd[1:]


def command(tool, config, overrides):
    cmd = [sys.executable, tool, "-c", config]
    for o in overrides:
        cmd += ["-o", o]
    return cmd


def env(**extra):
    e = dict(os.environ, PYTHONUNBUFFERED="1", PYTHONWARNINGS="ignore")
    e.update({k: str(v) for k, v in extra.items()})
    return e


def run(cmd, timeout=300, **env_extra):
    return subprocess.run(cmd, cwd=ROOT, env=env(**env_extra), capture_output=True, text=True,
                          timeout=timeout)


def run_ok(cmd, timeout=300, **env_extra):
    proc = run(cmd, timeout=timeout, **env_extra)
    assert proc.returncode == 0, f"{' '.join(cmd)}\nSTDOUT:\n{proc.stdout[-3000:]}\nSTDERR:\n{proc.stderr[-3000:]}"
    return proc


def load_params(prefix):
    """``{name: np.ndarray}`` of a checkpoint's ``.pdparams`` (through the checked loader)."""
    from ppcls.engine.checkpoint import load_checkpoint

    ckpt = load_checkpoint(prefix)
    return {k: v.numpy() for k, v in ckpt["pdparams"].items()}, ckpt


def log_lines(text, marker):
    return [line for line in text.splitlines() if marker in line]


def random_export(folder, image_shape):
    """An export (PIR only, no ONNX) of a seeded, untrained MobileNeXt_x0_35 with 10 classes at
    ``image_shape`` in ``folder/model``; returns that path."""
    import paddle

    from ppcls.arch import build_model
    from ppcls.inference.export import export_model

    paddle.seed(0)
    weights = str(folder / "w.pdparams")
    paddle.save(build_model({"name": "MobileNeXt_x0_35", "class_num": 10}).state_dict(), weights)
    out = str(folder / "model")
    export_model({"Global": {"save_inference_dir": out, "image_shape": list(image_shape),
                             "pretrained_model": weights, "export_onnx": False},
                  "Arch": {"name": "MobileNeXt_x0_35", "class_num": 10}})
    return out


# ------------------------------------------------------------ PaddleClas's published weights

PUBLISHED = "MobileNeXt_x1_0_pretrained.pdparams"


def _build_published_file(path):
    """PaddleClas's MobileNeXt_x1_0 file, built from the official fixture in Paddle names."""
    import paddle

    from ppcls.utils.torch_weights import torch_state_dict_to_paddle

    npz = np.load(os.path.join(FIXTURES, "mobilenext_official_w1_0.npz"))
    prefix = "state_dict/"
    state = torch_state_dict_to_paddle({k[len(prefix):]: npz[k] for k in npz.files
                                        if k.startswith(prefix)})
    paddle.save({k: paddle.to_tensor(np.ascontiguousarray(v)) for k, v in state.items()}, path)
    return npz


class _Server:
    """A static file server on 127.0.0.1 that counts the requests it answers."""

    def __init__(self, folder):
        self.requests = []
        server = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                server.requests.append(self.path)
                super().do_GET()

        self.httpd = http.server.ThreadingHTTPServer(
            ("127.0.0.1", 0), functools.partial(Handler, directory=str(folder)))
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/dygraph"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="session")
def published(tmp_path_factory):
    """``(server, npz)``: the fixture-built published file served at ``server.url``."""
    folder = tmp_path_factory.mktemp("bcebos")
    (folder / "dygraph").mkdir()
    npz = _build_published_file(str(folder / "dygraph" / PUBLISHED))
    (folder / "dygraph" / "broken").mkdir()
    (folder / "dygraph" / "broken" / PUBLISHED).write_bytes(b"<html>not found</html>")
    server = _Server(folder)
    yield server, npz
    server.close()


# ------------------------------------------------------------ stand-ins for GPU-only Paddle parts

class FakeTensorRT:
    """Records what our code hands to paddle.tensorrt; convert() copies the program as is."""

    def __init__(self):
        self.calls = []
        self.PrecisionMode = types.SimpleNamespace(FP32="FP32", FP16="FP16", INT8="INT8", BF16="BF16")
        fake = self

        class Input:
            def __init__(self, **kwargs):
                self.kwargs = kwargs

        class TensorRTConfig:
            def __init__(self, inputs, **kwargs):
                self.inputs, self.kwargs = inputs, kwargs
                fake.config = self

        self.Input, self.TensorRTConfig = Input, TensorRTConfig

    def convert(self, model_path, config):
        self.calls.append((model_path, config))
        prefix = config.kwargs["save_model_dir"]
        shutil.copy(model_path, prefix + ".json")
        shutil.copy(model_path[: -len(".json")] + ".pdiparams", prefix + ".pdiparams")


class RecordingConfig:
    """Stands in for paddle.inference.Config and records the calls made on it."""

    def __init__(self, model_file, params_file):
        self.files = (model_file, params_file)
        self.calls = []

    def __getattr__(self, name):
        return lambda *args, **kwargs: self.calls.append((name, args, kwargs))
