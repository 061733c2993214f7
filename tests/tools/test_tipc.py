"""The TIPC harness: its config format, its failure reporting and its result lines.

The full `lite_train_lite_infer` run is in scripts/test.sh (after the unit tests); these tests
run only the small `whole_infer` mode on copies of the config, so a broken step is cheap.
"""

import os
import re
import subprocess
import uuid

import pytest

from conftest import ROOT

CONFIG = os.path.join(ROOT, "test_tipc", "configs", "MobileNeXt", "MobileNeXt_100_train_infer_python.txt")
SCRIPT = os.path.join(ROOT, "test_tipc", "test_train_inference_python.sh")
RESULT_LINE = re.compile(r"^Run (successfully|failed) with command - (\S+) - (.+)!$")

# The positional key of every line, as PaddleClas TIPC configs have them ("=" = section header).
EXPECTED_KEYS = [
    "=train_params", "model_name", "python", "gpu_list", "-o Global.device", "-o Global.auto_cast",
    "-o Global.epochs", "-o Global.output_dir", "-o DataLoader.Train.sampler.batch_size",
    "-o Global.pretrained_model", "train_model_name", "train_infer_img_dir",
    "-o Optimizer.lr.warmup_epoch", "##",
    "trainer", "norm_train", "pact_train", "fpgm_train", "distill_train", "null", "null", "##",
    "=eval_params", "eval", "null", "##",
    "=infer_params", "-o Global.save_inference_dir", "-o Global.pretrained_model", "norm_export",
    "quant_export", "fpgm_export", "distill_export", "kl_quant", "export2", "pretrained_model_path",
    "infer_model", "infer_export", "infer_quant", "inference", "-o Global.use_gpu",
    "-o Global.enable_mkldnn", "-o Global.cpu_num_threads", "-o Global.batch_size",
    "-o Global.use_tensorrt", "-o Global.use_fp16", "-o Global.inference_model_dir",
    "-o Global.infer_imgs", "-o Global.save_log_path", "-o Global.benchmark", "null", "null",
    "=infer_benchmark_params", "random_infer_input",
]


def _lines(path=CONFIG):
    with open(path, encoding="utf-8") as f:
        return f.read().splitlines()


def _value(lines, key):
    return next(line.split(":", 1)[1] for line in lines if line.split(":", 1)[0] == key)


def test_config_has_the_tipc_line_format():
    lines = _lines()
    assert len(lines) == len(EXPECTED_KEYS)
    for number, (line, key) in enumerate(zip(lines, EXPECTED_KEYS), start=1):
        if key.startswith("="):
            assert re.fullmatch(rf"=+{key[1:]}=+", line), f"line {number}: {line!r}"
        elif key == "##":
            assert line == "##", f"line {number}: {line!r}"
        else:
            assert line.split(":", 1)[0] == key and ":" in line, f"line {number}: {line!r}, expected {key}:"
    # per-mode values for the training length and batch size
    for key in ("-o Global.epochs", "-o DataLoader.Train.sampler.batch_size"):
        modes = dict(item.split("=") for item in _value(lines, key).split("|"))
        assert {"lite_train_lite_infer", "whole_train_whole_infer"} <= set(modes), key
    assert _value(lines, "-o Global.epochs").endswith("whole_train_whole_infer=200")  # the recipe
    norm_train = _value(lines, "norm_train")
    for override in ("-o Global.seed=1234", "-o DataLoader.Train.sampler.shuffle=False",
                     "-o DataLoader.Train.loader.num_workers=0",
                     "-o DataLoader.Train.loader.use_shared_memory=False"):
        assert override in norm_train
    # the scripts and configs it names exist (train/eval/export from the repository root,
    # inference from deploy/)
    for key in ("norm_train", "eval", "norm_export"):
        script, _, cfg = _value(lines, key).split()[:3]
        assert os.path.isfile(os.path.join(ROOT, script)) and os.path.isfile(os.path.join(ROOT, cfg)), key
    script, _, cfg = _value(lines, "inference").split()[:3]
    assert os.path.isfile(os.path.join(ROOT, "deploy", script))
    assert os.path.isfile(os.path.join(ROOT, "deploy", cfg))
    assert {"True", "False"} <= set(_value(lines, "-o Global.enable_mkldnn").split("|"))
    assert {"1", "2"} <= set(_value(lines, "-o Global.cpu_num_threads").split("|"))


def test_a_line_out_of_place_is_one_clear_error(tmp_path):
    lines = _lines()
    lines[14], lines[15] = lines[15], lines[14]  # trainer / norm_train swapped
    bad = tmp_path / "bad.txt"
    bad.write_text("\n".join(lines) + "\n")
    proc = subprocess.run(["bash", SCRIPT, str(bad), "lite_train_lite_infer"], cwd=ROOT,
                          env=dict(os.environ, TIPC_OUTPUT=str(tmp_path / "tipc_output")),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"Error: {bad}: line 15 should be 'trainer:...', found '{lines[14]}'"]


def _config_copy(path, replace):
    """The shipped config with the values of the keys in REPLACE changed, written to PATH."""
    out = []
    for line in _lines():
        key = line.split(":", 1)[0]
        out.append(f"{key}:{replace[key]}" if key in replace and ":" in line else line)
    path.write_text("\n".join(out) + "\n")
    return path


@pytest.fixture
def tipc_run(tmp_path):
    """Runs the harness on a config copy, one CPU inference combination on three images, with
    everything it writes under tmp_path (TIPC_OUTPUT for its logs and models, Global.output_dir
    for the tools' own logs); returns (process, results_python.log lines, output folder)."""
    model_name = f"MobileNeXt_100_test_{uuid.uuid4().hex[:8]}"
    images = tmp_path / "images"
    images.mkdir()
    from PIL import Image
    import numpy as np

    rng = np.random.default_rng(0)
    for i in range(3):  # ImageNet-sized RGB photos of noise are enough to run a predictor
        Image.fromarray(rng.integers(0, 256, (256, 320, 3), dtype=np.uint8)).save(images / f"img_{i}.jpg")
    tools_output = f"-o Global.output_dir={tmp_path / 'tools_output'}"
    lines = _lines()

    def run(mode, replace, *extra_args):
        replace = {"model_name": model_name, "-o Global.use_gpu": "False",
                   "-o Global.enable_mkldnn": "False", "-o Global.cpu_num_threads": "1",
                   "-o Global.batch_size": "2", "-o Global.benchmark": "False",
                   "-o Global.infer_imgs": str(images), "train_infer_img_dir": str(images),
                   "eval": f"{_value(lines, 'eval')} {tools_output}",
                   "norm_export": f"{_value(lines, 'norm_export')} {tools_output}", **replace}
        config = _config_copy(tmp_path / "tipc.txt", replace)
        proc = subprocess.run(["bash", SCRIPT, str(config), mode, *extra_args], cwd=ROOT,
                              env=dict(os.environ, TIPC_OUTPUT=str(tmp_path / "tipc_output")),
                              capture_output=True, text=True, timeout=600)
        log_dir = os.path.join(tmp_path, "tipc_output", model_name, mode)
        with open(os.path.join(log_dir, "results_python.log")) as f:
            results = f.read().splitlines()
        return proc, results, log_dir

    return run


def test_a_broken_step_gives_run_failed_and_a_nonzero_exit(tmp_path, tipc_run):
    missing = str(tmp_path / "no_such_checkpoint")
    proc, results, log_dir = tipc_run("whole_infer", {"pretrained_model_path": missing})
    assert proc.returncode == 1, proc.stdout + proc.stderr
    parsed = [RESULT_LINE.match(line) for line in results]
    assert all(parsed), results
    export, infer = parsed  # one export, one inference combination
    assert export.group(1) == "failed" and "tools/export_model.py" in export.group(3)
    assert f"-o Global.pretrained_model={missing}" in export.group(3)
    # the step's own log, named in the command, says what went wrong
    export_log = os.path.join(ROOT, export.group(3).split(" > ")[1].split()[0])
    with open(export_log) as f:
        assert "no_such_checkpoint" in f.read()
    assert infer.group(1) == "failed" and "predict_cls.py" in infer.group(3)
    assert results[0] in proc.stdout and "steps failed" in proc.stdout


def test_whole_infer_exports_and_predicts_with_success_lines(tmp_path, tipc_run):
    import paddle
    from ppcls.arch.backbone.mobilenext import MobileNeXt_x1_0

    paddle.seed(0)
    weights = str(tmp_path / "MobileNeXt_100_weights")
    paddle.save(MobileNeXt_x1_0(class_num=1000).state_dict(), weights + ".pdparams")
    proc, results, log_dir = tipc_run("whole_infer", {"pretrained_model_path": weights})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    parsed = [RESULT_LINE.match(line) for line in results]
    assert [m.group(1) for m in parsed] == ["successfully", "successfully"], results
    assert {m.group(2) for m in parsed} == {os.path.basename(os.path.dirname(log_dir))}
    assert os.path.isfile(os.path.join(log_dir, "inference", "inference.pdiparams"))
    infer_log = parsed[1].group(3).split(" > ")[1].split()[0]
    with open(os.path.join(ROOT, "deploy", infer_log)) as f:
        predictions = [line for line in f if "class id(s):" in line]
    assert len(predictions) == 3  # the three images, each predicted once


def test_gpu_list_0_1_without_gpus_trains_as_two_cpu_processes(tipc_run):
    # An override no config has makes each process stop at once with an error naming it; the
    # point is how the launch is made: two CPU workers, each running the training command.
    norm_train = _value(_lines(), "norm_train") + " -o Global.tipc_probe=1"
    proc, results, log_dir = tipc_run("lite_train_lite_infer", {"norm_train": norm_train}, "0,1")
    train = RESULT_LINE.match(results[0])
    assert train.group(1) == "failed"
    assert "-m paddle.distributed.launch --nproc_per_node 2" in train.group(3)
    assert "-o Global.device=cpu" in train.group(3)
    launch_log = os.path.join(log_dir, "norm_train_gpus_0,1_autocast_null", "launch_log")
    for rank in (0, 1):
        with open(os.path.join(launch_log, f"workerlog.{rank}")) as f:
            assert "Global.tipc_probe" in f.read()
    assert proc.returncode == 1


# ---------------------------------------------------------------- PaddleClas's own TIPC files

PADDLECLAS_TXTS = {
    "seed": ("paddleclas/seed/MobileNeXt_100_train_infer_python.txt", "MobileNeXt_100"),
    "upstream": ("paddleclas/upstream/MobileNeXt_x1_0_train_infer_python.txt", "MobileNeXt_x1_0"),
}


def _repo_view(root):
    """The repository seen from ROOT (symlinks; deploy/ and test_tipc/ as real folders so that
    `..` from them is ROOT): the TIPC scripts then put dataset/ and test_tipc/output/ there."""
    root.mkdir()
    for name in ("ppcls", "tools", "configs"):
        os.symlink(os.path.join(ROOT, name), root / name)
    for folder in ("deploy", "test_tipc"):
        (root / folder).mkdir()
        for name in os.listdir(os.path.join(ROOT, folder)):
            if name not in ("output", "__pycache__"):
                os.symlink(os.path.join(ROOT, folder, name), root / folder / name)
    return root


@pytest.fixture(scope="module")
def paddleclas_tipc(tmp_path_factory):
    """A repository view in tmp with the lite data set prepare.sh builds from each txt; returns
    run(txt_key, *args, env) -> completed process of test_train_inference_python.sh."""
    from conftest import FIXTURES

    root = _repo_view(tmp_path_factory.mktemp("tipc") / "repo")
    env = {**os.environ, "PYTHONPATH": str(root)}
    prepared = {}
    for key, (rel, _) in PADDLECLAS_TXTS.items():
        proc = subprocess.run(["bash", "test_tipc/prepare.sh", os.path.join(FIXTURES, rel),
                               "lite_train_lite_infer"], cwd=root, env=env, capture_output=True,
                              text=True, timeout=600)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert "wget" not in proc.stdout + proc.stderr
        prepared[key] = proc
    assert (root / "dataset" / "ILSVRC2012" / "val_list.txt").is_file()
    assert not os.path.exists(os.path.join(ROOT, "test_tipc", "output", "MobileNeXt_x1_0"))

    def run(key, *args, **extra_env):
        return subprocess.run(["bash", "test_tipc/test_train_inference_python.sh",
                               os.path.join(FIXTURES, PADDLECLAS_TXTS[key][0]),
                               "lite_train_lite_infer", *args], cwd=root, env={**env, **extra_env},
                              capture_output=True, text=True, timeout=1200)

    run.root = root
    run.prepared = prepared
    return run


def _python37_runs():
    try:
        return subprocess.run(["python3.7", "-c", "import paddle"], capture_output=True,
                              timeout=120).returncode == 0
    except OSError:
        return False


@pytest.mark.parametrize("key", sorted(PADDLECLAS_TXTS))
def test_paddleclas_txt_is_parsed_as_it_is(paddleclas_tipc, key):
    """The seed's and upstream's txt, unchanged (trailing blank after a header, line 36
    `inference_dir:null`, python3.7, Global.device:gpu, gpu_list 0|0,1): every step is built."""
    import paddle

    model = PADDLECLAS_TXTS[key][1]
    proc = paddleclas_tipc(key, TIPC_DRY_RUN="1")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    if not _python37_runs():
        assert "Note: 'python3.7' (line 3 of the TIPC config) does not run or has no paddle here" in proc.stderr
        assert "Note: 'python3.7'" in paddleclas_tipc.prepared[key].stderr
    gpu = paddle.is_compiled_with_cuda() and paddle.device.cuda.device_count() > 0
    if not gpu:
        assert "Note: Global.device is 'gpu' in the TIPC config but no GPU is visible" in proc.stderr
        assert "gpu_list entry '0,1' runs on the CPU" in proc.stdout
    steps = [RESULT_LINE.match(line) for line in proc.stdout.splitlines() if line.startswith("Run ")]
    assert [m.group(1) for m in steps] == ["successfully"] * 8 and {m.group(2) for m in steps} == {model}
    commands = [m.group(3) for m in steps]
    yaml_path = f"ppcls/configs/ImageNet/MobileNeXt/{model}.yaml"
    assert os.path.isfile(os.path.join(ROOT, yaml_path))
    for i, script in enumerate(("tools/train.py", "tools/eval.py", "tools/export_model.py")):
        assert f"{script} -c {yaml_path}" in commands[i] and f"{script} -c {yaml_path}" in commands[4 + i]
    assert "-o Global.epochs=2" in commands[0] and "-o DataLoader.Train.sampler.batch_size=8" in commands[0]
    if not gpu:
        assert all("-o Global.device=cpu" in c for c in commands[:3] + commands[4:7])
        assert "--nproc_per_node 2" in commands[4] and "--nproc_per_node" not in commands[0]
    assert "python/predict_cls.py -c configs/inference_cls.yaml" in commands[3]
    assert "-o Global.use_gpu=False" in commands[3] and "-o Global.infer_imgs=../dataset/ILSVRC2012/val" in commands[3]


def test_line_36_variants_name_the_whole_infer_weights():
    def weights(key, value, model="MobileNeXt_x1_0"):
        script = f'source "{ROOT}/test_tipc/common_func.sh"; tipc_weights_path "$1" "$2" "$3"'
        return subprocess.run(["bash", "-c", script, "-", key, value, model], capture_output=True,
                              text=True, check=True).stdout

    assert weights("pretrained_model_path", "./pretrained_model/w.pdparams") == "./pretrained_model/w"
    assert weights("pretrained_model_url", "https://paddle-imagenet-models-name.bj.bcebos.com/dygraph/"
                   "MobileNetV2_pretrained.pdparams") == "./pretrained_model/MobileNetV2_pretrained"
    assert weights("inference_dir", "null") == "./pretrained_model/MobileNeXt_x1_0_pretrained"
    assert weights("pretrained_model_url", "null") == "./pretrained_model/MobileNeXt_x1_0_pretrained"
    # anything else on line 36 is one clear error naming the accepted keys
    lines = _lines()
    lines[35] = "model_url:null"
    script = (f'source "{ROOT}/test_tipc/common_func.sh"; TIPC_CONFIG=cfg.txt; TIPC_LINES=("" "$@"); '
              f'tipc_get v 36 "$TIPC_LINE36" k')
    proc = subprocess.run(["bash", "-c", script, "-", *lines], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip() == ("Error: cfg.txt: line 36 should be "
                                   "'pretrained_model_path|pretrained_model_url|inference_dir:...', "
                                   "found 'model_url:null'")


# The seed's txt runs in lite_train_lite_infer in scripts/test.sh (after the unit tests); here
# upstream develop's, so that both run unchanged without running one twice.
@pytest.mark.parametrize("key", ["upstream"])
def test_paddleclas_txt_runs_every_step_in_lite_mode(paddleclas_tipc, key):
    """The txt, unchanged, in lite_train_lite_infer (2 epochs on the recipe's 3-epoch warm-up,
    which is shortened with a warning); GPU_LIST 0 (one entry of its `0|0,1`, on the CPU here)
    keeps the test short: train, eval, export, predict_cls all succeed, exit 0."""
    proc = paddleclas_tipc(key, "0")
    steps = [RESULT_LINE.match(line) for line in proc.stdout.splitlines() if line.startswith("Run ")]
    assert proc.returncode == 0 and [m.group(1) for m in steps] == ["successfully"] * 4, \
        proc.stdout[-3000:] + proc.stderr[-2000:]
