"""tools/train.py and tools/eval.py as a user runs them: the ImageNet recipe and its cooldown on
a tiny real data set on CPU, eval of the result, and bad input that must end in one clear line."""

import os
import re
import shutil
import subprocess
import sys

import pytest

from helpers import (COOLDOWN, EVAL, QUICKSTART, RECIPE, ROOT, TRAIN, command, data_overrides,
                               env, load_params, run_ok, tiny_data, tiny_overrides)  # noqa: F401

SMALL_RECIPE = [  # the recipe's transforms at 32 px, 2 iterations an epoch, 10 classes
    "Global.device=cpu", "Arch.class_num=10", "Global.max_iters_per_epoch=2",
    "DataLoader.Train.dataset.transform_ops.1.RandCropImage.size=32",
    "DataLoader.Eval.dataset.transform_ops.1.ResizeImage.resize_short=36",
    "DataLoader.Eval.dataset.transform_ops.2.CropImage.size=32",
]


def test_recipe_then_cooldown_then_eval(tiny_data, tmp_path):
    root, _, _ = tiny_data
    out = str(tmp_path / "output")
    base = data_overrides(root) + SMALL_RECIPE + [f"Global.output_dir={out}"]
    first = run_ok(command(TRAIN, RECIPE, base + [
        "Global.epochs=2", "Optimizer.lr.warmup_epoch=1", "Global.save_interval=1"]))
    text = first.stdout
    # The recipe's schedule: warmup from 1e-4, then cosine from 0.1; PaddleClas log lines.
    assert re.search(r"\[Train\]\[Epoch 1/2\]\[Iter: 0/2\]lr\(LinearWarmup\): 0\.00010000, top1: [0-9.]+, "
                     r"top5: [0-9.]+, CELoss: [0-9.]+, loss: [0-9.]+, batch_cost: [0-9.]+s, "
                     r"reader_cost: [0-9.]+, ips: [0-9.]+ samples/s, eta: \d+:\d\d:\d\d", text), text
    assert "[Train][Epoch 2/2][Iter: 0/2]lr(LinearWarmup): 0.10000000" in text
    assert re.search(r"\[Train\]\[Epoch 2/2\]\[Avg\]top1: [0-9.]+, top5: [0-9.]+, CELoss: [0-9.]+, loss: ", text)
    assert re.search(r"\[Eval\]\[Epoch 2\]\[Avg\]CELoss: [0-9.]+, loss: [0-9.]+, top1: [0-9.]+, top5: ", text)
    best = float(re.findall(r"\[Eval\]\[Epoch 2\]\[best metric: ([0-9.]+)\]", text)[0])
    run_dir = os.path.join(out, "MobileNeXt_100")
    for name in ("latest", "best_model", "epoch_1", "epoch_2"):
        for suffix in ("pdparams", "pdopt", "pdstates"):
            assert os.path.isfile(os.path.join(run_dir, f"{name}.{suffix}")), (name, suffix)
    assert os.path.isfile(os.path.join(run_dir, "config.yaml"))
    with open(os.path.join(run_dir, "train.log")) as f:
        assert "[Train][Epoch 2/2][Avg]" in f.read()
    before, _ = load_params(os.path.join(run_dir, "epoch_2"))

    # The cooldown config resumes the run's epoch_2 checkpoint at its own constant LR 1e-5.
    cool = run_ok(command(TRAIN, COOLDOWN, base + [
        "Global.epochs=3", f"Global.checkpoints={os.path.join(run_dir, 'epoch_2')}"]))
    text = cool.stdout
    assert "[Resume]" in text and "lr(Constant) = 0.00001000" in text
    assert "[Train][Epoch 3/3][Iter: 0/2]lr(Constant): 0.00001000" in text
    assert "[Train][Epoch 1/" not in text and "[Train][Epoch 2/" not in text
    after, ckpt = load_params(os.path.join(run_dir, "latest"))
    assert ckpt["pdstates"]["epoch"] == 3
    # a few steps at 1e-5 move conv weights only a little
    w = "features.0.0.weight"
    assert 0 < abs(after[w] - before[w]).max() < 1e-2
    # best_model is the best over the whole run: the cooldown's epoch 3 may have replaced it
    best = float(re.findall(r"\[Eval\]\[Epoch 3\]\[best metric: ([0-9.]+)\]", text)[0])

    # The training curves of that log (matplotlib is an optional extra).
    png = str(tmp_path / "curves.png")
    plot = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "plot_log.py"),
                           os.path.join(run_dir, "train.log"), "-o", png],
                          cwd=ROOT, env=env(), capture_output=True, text=True, timeout=120)
    try:
        import matplotlib  # noqa: F401
        assert plot.returncode == 0, plot.stderr
        with open(png, "rb") as f:
            assert f.read(4) == b"\x89PNG"
    except ImportError:
        assert plot.returncode == 2 and "needs matplotlib" in plot.stderr

    # tools/eval.py on the best checkpoint reproduces the best metric the run logged.
    ev = run_ok(command(EVAL, RECIPE, base + [f"Global.pretrained_model={os.path.join(run_dir, 'best_model')}"]))
    assert "[Eval][Epoch 0][Iter: 0/" in ev.stdout
    top1 = float(re.findall(r"\[Eval\]\[Epoch 0\]\[Avg\].*top1: ([0-9.]+)", ev.stdout)[0])
    assert top1 == pytest.approx(best, abs=1e-5)


def _write_list(path, lines):
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


def _bad_cases(root, tmp):
    with open(os.path.join(root, "train_small.txt")) as f:
        good = f.read().splitlines()
    cases = {}
    base = tiny_overrides(root, str(tmp / "out"), epochs=1)

    def with_list(name, lines):
        path = str(tmp / name)
        _write_list(path, lines)
        return base + [f"DataLoader.Train.dataset.cls_label_path={path}"]

    cases["unknown key"] = (base + ["Global.epochz=3"], [r"unknown config key 'Global\.epochz'", "epochs"])
    cases["wrong type"] = (base + ["Global.epochs=three"], [r"Global\.epochs' expects an integer", "three"])
    cases["bad line"] = (with_list("bad_line.txt", good[:3] + ["train/0/00000.jpg"] + good[3:]),
                         ["bad_line.txt", "line 4"])
    cases["missing image"] = (with_list("missing.txt", good[:5] + ["train/0/no_such.jpg 0"]),
                              ["missing.txt", "line 6", "no_such.jpg"])
    cases["label range"] = (with_list("label.txt", good[:2] + [good[2].split()[0] + " 10"]),
                            ["label.txt", "line 3", "10"])
    broken = os.path.join(root, "train", "broken.jpg")
    with open(os.path.join(root, good[0].split()[0]), "rb") as f:
        data = f.read()
    with open(broken, "wb") as f:  # a real JPEG whose second half is lost
        f.write(data[: len(data) // 2])
    cases["corrupt jpeg"] = (with_list("corrupt.txt", ["train/broken.jpg 0"] + good[:15]),
                             ["broken.jpg", "corrupt.txt"])
    # (an AMP section on CPU is no longer refused: it trains in float32 with one warning,
    # tests/engine/test_amp_gpu_paths.py)
    cases["gpu without cuda"] = (base + ["Global.device=gpu"], ["Global.device", "CUDA"])
    return cases


def test_bad_input_one_clear_line(tiny_data, tmp_path):
    root, _, _ = tiny_data
    cases = _bad_cases(root, tmp_path)
    # (each case its own output folder: one training per folder at a time, see run_dir.py)
    procs = {name: subprocess.Popen(command(TRAIN, case[2] if len(case) > 2 else QUICKSTART,
                                            case[0] + [f"Global.output_dir={tmp_path / f'out{i}'}"]),
                                    cwd=ROOT, env=env(), stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True)
             for i, (name, case) in enumerate(cases.items())}
    for name, proc in procs.items():
        stdout, stderr = proc.communicate(timeout=300)
        assert proc.returncode == 2, (name, stdout[-2000:], stderr[-2000:])
        assert "Traceback" not in stdout + stderr, (name, stderr)
        errors = [line for line in stderr.splitlines() if line.startswith("Error: ")]
        assert len(errors) == 1, (name, stderr)
        for pattern in cases[name][1]:
            assert re.search(pattern, errors[0]), (name, pattern, errors[0])
