"""PaddleClas's engine keys and files, with upstream's meaning (issue 10, items 2, 3, 5, 6):
gradient accumulation (``Global.update_freq``), ``Global.to_static`` on CPU, fine-tuning onto
another ``class_num``, resuming a checkpoint written in PaddleClas's format, the eval log line,
``start_eval_epoch``, infer/predict_cls printing, ``-p/--profiler_options``.

In-process engines on the tiny digits lists (MobileNeXt_x0_35, 32 px, a few iterations)."""

import json
import os
import re
import subprocess
import sys
import types

import numpy as np
import paddle
import pytest

from conftest import ROOT
from helpers import QUICKSTART, tiny_data, tiny_overrides  # noqa: F401 (fixture)

from ppcls.engine.engine import Engine
from ppcls.utils.config import get_config
from ppcls.utils.errors import CheckpointError, ConfigError


def _config(tiny_data, out, *extra, epochs=1):
    root = tiny_data[0]
    return get_config(QUICKSTART, tiny_overrides(root, str(out), epochs=epochs)
                      + ["Global.eval_during_train=False", *extra])


def _params(model):
    return {k: v.numpy().copy() for k, v in model.state_dict().items()}


def _batch_independent(model):
    """BN on its running statistics and no dropout: the forward pass of one image no longer
    depends on the other images of its batch, so a big batch and its halves can be compared."""
    for layer in model.sublayers():
        if isinstance(layer, paddle.nn.BatchNorm2D):
            layer._use_global_stats = True
        if isinstance(layer, paddle.nn.Dropout):
            layer.p = 0.0


# --------------------------------------------------------------------------- update_freq


def test_update_freq_two_half_batches_make_the_step_of_the_whole_batch(tiny_data, tmp_path):
    """Exact here means: the summed gradients of N micro-batches of loss/N equal the gradient
    of the mean loss over their union (float rounding only). BN batch statistics differ
    between a batch and its halves, so BN runs on its running statistics for this check."""
    common = ["DataLoader.Train.sampler.shuffle=False", "Global.fast_cpu=False"]
    runs = {}
    for name, batch, freq, iters in (("big", 8, 1, 1), ("accum", 4, 2, 2), ("small", 4, 1, 2)):
        eng = Engine(_config(tiny_data, tmp_path / name, f"DataLoader.Train.sampler.batch_size={batch}",
                             f"Global.update_freq={freq}", f"Global.max_iters_per_epoch={iters}",
                             *common), "train")
        if runs:
            eng.bare_model.set_state_dict(runs["big"]["init"])
        init = _params(eng.bare_model)
        _batch_independent(eng.bare_model)
        eng.train_epoch(1)
        runs[name] = {"init": init, "after": _params(eng.bare_model), "engine": eng}
    big, accum, small = runs["big"], runs["accum"], runs["small"]
    # the LR schedule counts optimizer steps: one step an epoch for both "big" and "accum"
    assert big["engine"].lr.scheduler.last_epoch == accum["engine"].lr.scheduler.last_epoch == 1
    assert small["engine"].lr.scheduler.last_epoch == 2
    moved = max(np.abs(big["after"][k] - big["init"][k]).max() for k in big["init"])
    assert moved > 1e-3  # the step really changed the weights
    for k in big["after"]:
        np.testing.assert_allclose(accum["after"][k], big["after"][k], rtol=0, atol=1e-6, err_msg=k)
    # two optimizer steps on the halves are another thing, and the comparison can tell
    assert max(np.abs(small["after"][k] - big["after"][k]).max() for k in big["after"]) > 1e-4


def test_update_freq_larger_than_an_epoch_falls_back_to_one(tiny_data, tmp_path):
    eng = Engine(_config(tiny_data, tmp_path, "Global.update_freq=50", "Global.fast_cpu=False"), "train")
    assert eng.update_freq == 1 and eng.iters_per_epoch == 6  # 48 images, 8 a batch
    with pytest.raises(ConfigError, match="Global.update_freq"):
        Engine(_config(tiny_data, tmp_path, "Global.update_freq=0"), "train")


# --------------------------------------------------------------------------- to_static, profiler


def test_to_static_trains_on_cpu_and_its_checkpoint_evaluates(tiny_data, tmp_path):
    from ppcls.utils import profiler

    prof = tmp_path / "prof"
    cfg = _config(tiny_data, tmp_path / "out", "Global.to_static=True", "Global.max_iters_per_epoch=2")
    profiler.configure(f"batch_range=[0,1];state=CPU;exit_on_finished=False;profile_path={prof}")
    try:
        eng = Engine(cfg, "train")
        # fast_cpu (dygraph-only kernels) stays off under to_static, with one log line
        assert not any(type(l).__name__.startswith("Fast") for l in eng.bare_model.sublayers())
        eng.train()
    finally:
        profiler.configure(None)
    log = open(tmp_path / "out" / "MobileNeXt_x0_35" / "train.log").read()
    assert log.count("Global.fast_cpu is off under Global.to_static") == 1
    losses = [float(x) for x in re.findall(r"\[Train\]\[Epoch 1/1\]\[Iter: \d/2\].*? loss: ([0-9.]+)", log)]
    assert len(losses) == 2 and all(np.isfinite(losses))
    assert any(name.endswith(".json") for name in os.listdir(str(prof) + ".d"))  # the trace
    ev = get_config(QUICKSTART, tiny_overrides(tiny_data[0], str(tmp_path / "ev")) + [
        f"Global.pretrained_model={tmp_path / 'out' / 'MobileNeXt_x0_35' / 'latest'}"])
    results = Engine(ev, "eval").evaluate()
    assert np.isfinite(results["loss"]) and 0.0 <= results["top1"] <= 1.0


def test_profiler_options_are_paddleclas_s_string():
    from ppcls.utils.profiler import parse

    opts = parse("batch_range=[10,20];state=GPU;tracer_option=Default;profile_path=model.profile")
    assert opts["batch_range"] == [10, 20] and opts["profile_path"] == "model.profile"
    assert opts["exit_on_finished"] is True
    for bad in ("batch_range=[20,10]", "stat=GPU", "state=TPU", "batch_range=10"):
        with pytest.raises(ConfigError, match="profiler_options"):
            parse(bad)


def test_tools_accept_p_profiler_options():
    from ppcls.utils.cli import config_arg_parser

    args = config_arg_parser("x").parse_args(["-c", "a.yaml", "-p", "batch_range=[1,2]"])
    assert args.profiler_options == "batch_range=[1,2]"


# --------------------------------------------------------------------------- keys


def test_upstream_keys_load(tiny_data, tmp_path):
    """The AMP section exactly as the fixture YAMLs write it (use_amp: False),
    use_multilabel: False, Arch.infer_add_softmax and Arch.use_ssld."""
    fixture = os.path.join(ROOT, "..", "shared", "fixtures", "paddleclas", "upstream", "MobileNetV2.yaml")
    import yaml

    amp = yaml.safe_load(open(fixture))["AMP"]
    assert {"use_amp", "scale_loss", "use_dynamic_loss_scaling", "level", "use_promote",
            "use_fp16_test"} <= set(amp)
    cfg = _config(tiny_data, tmp_path, "Global.use_multilabel=False", "Arch.infer_add_softmax=False",
                  "Arch.use_ssld=True")
    cfg["AMP"] = amp
    eng = Engine(cfg, "train")
    assert eng.amp is None  # use_amp: False
    cfg = _config(tiny_data, tmp_path, "Global.use_multilabel=True")
    with pytest.raises(ConfigError, match="Global.use_multilabel"):
        Engine(cfg, "train")


def test_start_eval_epoch_counts_as_paddleclas():
    """PaddleClas evaluates when epoch > start_eval_epoch - 1 (and epoch % eval_interval == 0)."""
    def evaluated(start, interval=1, epochs=6):
        stub = types.SimpleNamespace(g={"eval_during_train": True, "start_eval_epoch": start,
                                        "eval_interval": interval, "epochs": epochs},
                                     eval_loader=object())
        return [e for e in range(1, epochs + 1) if Engine._should_eval(stub, e)]

    assert evaluated(0) == [1, 2, 3, 4, 5, 6]
    assert evaluated(3) == [3, 4, 5, 6]
    assert evaluated(3, interval=2) == [4, 6]


# --------------------------------------------------------------------------- fine-tuning


def _sublist(src, dst, keep, limit):
    with open(src) as f:
        lines = [line for line in f.read().splitlines() if int(line.split()[1]) in keep][:limit]
    with open(dst, "w") as f:
        f.write("\n".join(lines) + "\n")
    return len(lines)


@pytest.fixture(scope="module")
def digits10(tmp_path_factory):
    """A 10-class digits model (2 short epochs over 480 scans) and a 5-class split of the data."""
    from ppcls.data.digits import prepare_digits

    base = tmp_path_factory.mktemp("finetune")
    root = str(base / "digits")
    prepare_digits(root, size=32, progress=False)
    _sublist(os.path.join(root, "train_list.txt"), os.path.join(root, "t10.txt"), range(10), 480)
    _sublist(os.path.join(root, "val_list.txt"), os.path.join(root, "v10.txt"), range(10), 40)
    _sublist(os.path.join(root, "train_list.txt"), os.path.join(root, "t5.txt"), range(5), 320)
    n_val5 = _sublist(os.path.join(root, "val_list.txt"), os.path.join(root, "v5.txt"), range(5), 100)
    with open(os.path.join(root, "labels5.txt"), "w") as f:
        f.write("".join(f"{i} digit_{i}\n" for i in range(5)))

    def config(out, train, val, *extra):
        return get_config(QUICKSTART, tiny_overrides(root, str(out)) + [
            f"DataLoader.Train.dataset.cls_label_path={os.path.join(root, train)}",
            f"DataLoader.Eval.dataset.cls_label_path={os.path.join(root, val)}",
            "DataLoader.Train.sampler.batch_size=16", "DataLoader.Eval.sampler.batch_size=50",
            "Global.epochs=2", "Global.print_batch_step=100", *extra])

    Engine(config(base / "ten", "t10.txt", "v10.txt", "Global.eval_during_train=False",
                  "Optimizer.lr.learning_rate=0.05"), "train").train()
    return {"root": root, "config": config, "base": base, "n_val5": n_val5,
            "weights": str(base / "ten" / "MobileNeXt_x0_35" / "latest")}


def test_finetune_onto_five_classes_warns_once_and_trains_above_chance(digits10):
    d = digits10
    out = d["base"] / "five"
    cfg = d["config"](out, "t5.txt", "v5.txt", "Arch.class_num=5",
                      f"Global.pretrained_model={d['weights']}", "Optimizer.lr.learning_rate=0.01",
                      "Global.start_eval_epoch=2")
    eng = Engine(cfg, "train")
    init_head = eng.bare_model.classifier[1].weight.numpy().copy()
    assert init_head.shape[1] == 5
    eng.train()
    log = open(out / "MobileNeXt_x0_35" / "train.log").read()
    warnings = [line for line in log.splitlines() if "WARNING" in line and "classifier" in line]
    assert len(warnings) == 1, warnings
    assert "classifier.1.weight" in warnings[0] and "classifier.1.bias" in warnings[0]
    top1 = float(re.findall(r"\[Eval\]\[Epoch (\d)\]\[Avg\].*top1: ([0-9.]+)", log)[-1][1])
    assert "[Eval][Epoch 1]" not in log  # start_eval_epoch=2: evaluated from epoch 2 on
    # chance is 0.2 on five balanced classes (P(top1 > 0.3) by chance on 100 images < 1%);
    # measured: 0.52
    assert top1 > 0.3, top1
    # any other mismatch is still an error: a 5-class model at another width
    bad = d["config"](out, "t5.txt", "v5.txt", "Arch.class_num=5", "Arch.name=MobileNeXt_x0_5",
                      f"Global.pretrained_model={d['weights']}")
    with pytest.raises(CheckpointError):
        Engine(bad, "train")


def test_infer_prints_one_list_per_batch_with_empty_label_names(digits10, tmp_path):
    from ppcls.inference.dygraph import predict

    d = digits10
    cfg = d["config"](tmp_path, "t10.txt", "v10.txt", f"Global.pretrained_model={d['weights']}",
                      f"Infer.infer_imgs={os.path.join(d['root'], 'val', '7')}", "Infer.batch_size=4",
                      "Infer.PostProcess.class_id_map_file=null",
                      "Infer.transforms.1.ResizeImage.size=32")
    printed = []
    results, code = predict(cfg, emit=printed.append)
    n = len(os.listdir(os.path.join(d["root"], "val", "7")))
    assert code == 0 and len(results) == n
    assert [len(b) for b in printed] == [4] * (n // 4) + ([n % 4] if n % 4 else [])
    assert all(list(r) == ["class_ids", "scores", "file_name", "label_names"] and r["label_names"] == []
               for b in printed for r in b)


def test_predict_cls_line_is_paddleclas_s():
    from ppcls.inference.deploy import format_result

    line = format_result({"class_ids": [3, 1], "scores": [0.93456, 0.0], "file_name": "/a/b/c.jpg",
                          "label_names": []})
    assert line == "c.jpg:\tclass id(s): [3, 1], score(s): [0.93, 0.00], label_name(s): []"


# --------------------------------------------------------------------------- PaddleClas checkpoints


def _fresh_process_names():
    """Structured -> internal parameter names as a fresh process (a PaddleClas run) has them."""
    code = ("import json, paddle; from ppcls.arch import build_model; "
            "m = build_model({'name': 'MobileNeXt_x0_35', 'class_num': 10, 'dropout': 0.0}); "
            "print(json.dumps({k: p.name for k, p in m.named_parameters()}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                         env=dict(os.environ, PYTHONWARNINGS="ignore"), check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def _as_paddleclas(prefix, dst, fresh, pdopt_as_list=True, drop_buffers=False):
    """Rewrite our checkpoint ``prefix`` as PaddleClas writes one: .pdparams the state dict,
    .pdopt [optimizer state dict] keyed by a fresh process's internal names, .pdstates
    {metric, epoch}."""
    from ppcls.engine.checkpoint import load_checkpoint

    ckpt = load_checkpoint(prefix)
    ours = ckpt["pdstates"]["param_names"]  # structured -> internal names of our run
    rename = {ours[s]: fresh[s] for s in ours}
    opt = {}
    for key, value in ckpt["pdopt"].items():
        base = next((o for o in sorted(rename, key=len, reverse=True) if key.startswith(o + "_")), None)
        if base is None:
            opt[key] = value
        elif not drop_buffers:
            opt[rename[base] + key[len(base):]] = value
    assert any("_velocity_" in k for k in opt) != drop_buffers
    paddle.save(ckpt["pdparams"], dst + ".pdparams")
    paddle.save([opt] if pdopt_as_list else opt, dst + ".pdopt")
    paddle.save({"metric": 0.25, "epoch": ckpt["pdstates"]["epoch"]}, dst + ".pdstates")


def test_paddleclas_checkpoint_resumes_with_its_momentum_buffers(tiny_data, tmp_path):
    fresh = _fresh_process_names()
    assert fresh["features.0.0.weight"] == "conv2d_0.w_0"
    common = ["Global.fast_cpu=False", "Arch.dropout=0.0", "Global.max_iters_per_epoch=2",
              "Global.save_interval=1"]
    full = Engine(_config(tiny_data, tmp_path / "full", *common, epochs=2), "train")
    full.train()
    expected = _params(full.bare_model)
    epoch1 = str(tmp_path / "full" / "MobileNeXt_x0_35" / "epoch_1")

    finals = {}
    for name, as_list, drop in (("list", True, False), ("no_buffers", False, True)):
        dst = str(tmp_path / f"pc_{name}")
        _as_paddleclas(epoch1, dst, fresh, pdopt_as_list=as_list, drop_buffers=drop)
        eng = Engine(_config(tiny_data, tmp_path / name, *common, f"Global.checkpoints={dst}",
                             epochs=2), "train")
        assert eng.start_epoch == 1 and eng.best_metric == 0.25
        eng.train()
        finals[name] = _params(eng.bare_model)
    for k in expected:
        np.testing.assert_allclose(finals["list"][k], expected[k], rtol=0, atol=1e-5, err_msg=k)
    # without the momentum buffers the second epoch ends elsewhere: the buffers were used
    assert max(np.abs(finals["no_buffers"][k] - expected[k]).max() for k in expected) > 1e-4


def test_pdopt_that_fits_no_parameter_is_one_clear_error():
    from ppcls.engine.checkpoint import check_optimizer_names, optimizer_state

    model = paddle.nn.Linear(3, 2)
    w = model.weight.name
    assert optimizer_state({"a": 1}, "x.pdopt") == {"a": 1}  # a dict, as we write it
    merged = optimizer_state([{f"{w}_velocity_0": np.zeros([3, 2], "float32"), "LR_Scheduler": {"a": 1}},
                              {"other": 1, "LR_Scheduler": {"a": 2}}], "x.pdopt")
    assert merged["LR_Scheduler"] == {"a": 1} and "other" in merged
    check_optimizer_names({f"{w}_velocity_0": np.zeros([3, 2], "float32")}, model, "x.pdopt")
    with pytest.raises(CheckpointError, match="x.pdopt.*fits no parameter"):
        check_optimizer_names({f"{w}_velocity_0": np.zeros([4, 2], "float32")}, model, "x.pdopt")
    with pytest.raises(CheckpointError, match="x.pdopt.*fits no parameter"):
        check_optimizer_names({"conv2d_99.w_0_velocity_0": np.zeros([3], "float32")}, model, "x.pdopt")
    with pytest.raises(CheckpointError, match="x.pdopt"):
        optimizer_state(["nonsense"], "x.pdopt")


# --------------------------------------------------------------------------- eval log line


def test_eval_line_has_current_loss_running_metrics_and_images_per_sec(tiny_data, tmp_path):
    cfg = get_config(QUICKSTART, tiny_overrides(tiny_data[0], str(tmp_path)))
    eng = Engine(cfg, "eval")
    results = eng.evaluate()
    log = open(tmp_path / "MobileNeXt_x0_35" / "eval.log").read()
    pattern = re.compile(r"\[Eval\]\[Epoch 0\]\[Iter: (\d+)/4\]CELoss: ([0-9.]+), loss: ([0-9.]+), "
                         r"top1: ([0-9.]+), top5: ([0-9.]+), batch_cost: [0-9.]+s, "
                         r"reader_cost: [0-9.]+, ips: [0-9.]+ images/sec$")
    rows = [pattern.search(line).groups() for line in log.splitlines() if "[Iter:" in line]
    assert [int(r[0]) for r in rows] == [0, 1, 2, 3]  # 27 images, 8 a batch
    # the metrics are running averages: the last line's equals the epoch's
    assert float(rows[-1][3]) == pytest.approx(results["top1"], abs=1e-5)
    assert float(rows[-1][4]) == pytest.approx(results["top5"], abs=1e-5)
    # the loss is the batch's own: the four batch losses weighted 8, 8, 8, 3 give the average
    losses = np.array([float(r[1]) for r in rows])
    assert float((losses * [8, 8, 8, 3]).sum() / 27) == pytest.approx(results["CELoss"], abs=1e-4)
