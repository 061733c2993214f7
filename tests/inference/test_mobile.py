"""Phone formats (issue 18) and one answer from every back-end.

One small quickstart model (MobileNeXt_x1_0 on the digits at 32 px, trained once per session)
is exported ONCE with ``tools/export_model.py -o Global.export_format=...``: the Paddle export
(PIR + inference.onnx) and its sub-exports tflite_fp32/fp16/int8, ort_fp32/int8,
quant_post_static_model (INT8 ONNX) and legacy (inference.pdmodel). Then every back-end runs
``predict_cls`` with the same deployment config on all 360 validation images of the quickstart
data set and is compared with ``tools/infer.py``'s dygraph prediction:

- float paths: the same top-1 on every image and max |prob diff| <= 1e-4;
- INT8 paths: the same top-1 on >= 99% of the images and <= 1 point of accuracy lost.

The LiteRT parts need the optional TensorFlow stack and ai-edge-litert (requirements-test.txt);
without them those tests skip and say which pip command installs them.

Select with ``pytest -k "parity or tflite or ort_format or legacy"``.
"""

import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import yaml

from conftest import ROOT
from ppcls.inference import mobile
from ppcls.utils.config import get_config
from ppcls.utils.errors import ConfigError, UserError

QUICKSTART = os.path.join(ROOT, "configs", "quickstart", "MobileNeXt_x1_0_digits.yaml")
TRAIN = os.path.join(ROOT, "tools", "train.py")
EXPORT = os.path.join(ROOT, "tools", "export_model.py")
DEPLOY = os.path.join(ROOT, "deploy")
PREDICT = os.path.join(DEPLOY, "python", "predict_cls.py")
FROM_EXPORT = os.path.join(DEPLOY, "configs", "inference_cls_from_export.yaml")
SIZE = 32
CLASSES = 10
# the quickstart config at 32 px (the data set's own size) instead of 64
SMALL = [f"Global.image_shape=[3,{SIZE},{SIZE}]",
         f"Infer.transforms.1.ResizeImage.size={SIZE}", "Infer.PostProcess.topk=10"]
TFLITE_MISSING = mobile.missing_modules(mobile.TF_MODULES + ("ai_edge_litert",))
TFLITE_SKIP = (f"optional LiteRT/TensorFlow stack not installed ({', '.join(TFLITE_MISSING)}): "
               f"{mobile.TF_PIP} ai-edge-litert==2.3.0")


def run(args, cwd=ROOT, timeout=1200):
    proc = subprocess.run([sys.executable] + args, cwd=cwd, capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def overrides(items):
    return [arg for item in items for arg in ("-o", item)]


@pytest.fixture(scope="session")
def digits32(tmp_path_factory):
    from ppcls.data.digits import prepare_digits

    root = str(tmp_path_factory.mktemp("mobile_digits") / "digits")
    prepare_digits(root, size=SIZE, progress=False)
    return root


def data_overrides(root):
    out = []
    for mode, name in (("Train", "train_list.txt"), ("Eval", "val_list.txt")):
        out += [f"DataLoader.{mode}.dataset.image_root={root}",
                f"DataLoader.{mode}.dataset.cls_label_path={os.path.join(root, name)}"]
    return out + [f"Infer.PostProcess.class_id_map_file={os.path.join(root, 'label_list.txt')}"]


@pytest.fixture(scope="session")
def digits_weights(digits32, tmp_path_factory):
    """The quickstart recipe at 32 px for 6 epochs: ~96.7% top-1 on the validation images."""
    out = str(tmp_path_factory.mktemp("mobile_train"))
    run([TRAIN, "-c", QUICKSTART] + overrides(SMALL + data_overrides(digits32) + [
        f"Global.output_dir={out}", "Global.epochs=6", "Global.eval_during_train=False",
        "Global.print_batch_step=100",
        f"DataLoader.Train.dataset.transform_ops.1.RandCropImage.size={SIZE}",
        f"DataLoader.Eval.dataset.transform_ops.1.ResizeImage.size={SIZE}"]))
    return os.path.join(out, "MobileNeXt_x1_0", "latest")


@pytest.fixture(scope="session")
def mobile_export(digits32, digits_weights, tmp_path_factory):
    """ONE export of every format this machine can write (tflite needs the optional extra)."""
    formats = ["ort", "legacy"] + ([] if TFLITE_MISSING else ["tflite"])
    out = str(tmp_path_factory.mktemp("mobile_export") / "MobileNeXt_x1_0_digits")
    proc = run([EXPORT, "-c", QUICKSTART] + overrides(SMALL + data_overrides(digits32) + [
        f"Global.pretrained_model={digits_weights}", f"Global.save_inference_dir={out}",
        f"Global.export_format={','.join(formats)}",
        "Global.export_calib_images=1437"]))  # every training image
    return {"dir": out, "formats": formats, "log": proc.stdout + proc.stderr}


@pytest.fixture(scope="session")
def reference(digits32, digits_weights):
    """tools/infer.py's prediction (dygraph) of every validation image: probabilities, labels."""
    from ppcls.inference.dygraph import predict

    cfg = get_config(QUICKSTART, SMALL + data_overrides(digits32) + [
        f"Global.pretrained_model={digits_weights}", "Global.device=cpu",
        f"Infer.infer_imgs={os.path.join(digits32, 'val')}", "Infer.batch_size=60"], show=False)
    results, code = predict(cfg, emit=lambda batch: None)
    assert code == 0 and len(results) == 360
    labels = np.array([int(os.path.basename(os.path.dirname(r["file_name"]))) for r in results])
    return {"files": [r["file_name"] for r in results], "probs": probabilities(results),
            "labels": labels}


def probabilities(results):
    """The full probability vector of each result (topk = all 10 classes)."""
    out = np.full((len(results), CLASSES), np.nan)
    for i, r in enumerate(results):
        out[i, r["class_ids"]] = r["scores"]
    assert not np.isnan(out).any(), "topk must cover all classes"
    return out


def deploy_predict(model_dir, images, *extra, capsys=None):
    """predict_cls with deploy/configs/inference_cls_from_export.yaml (the export's own record)."""
    from ppcls.inference.deploy import predict_cls

    cfg = get_config(FROM_EXPORT, [f"Global.inference_model_dir={model_dir}",
                                   f"Global.infer_imgs={images}", "Global.batch_size=40",
                                   "Global.cpu_num_threads=2"] + list(extra), show=False)
    results, code = predict_cls(cfg, emit=lambda line: None)
    assert code == 0
    return results


FLOAT_TOL = 1e-4  # the bound on max |prob diff| for the float paths
# fp16 weights round every weight to 11 significant bits (relative error up to 2**-11 = 4.9e-4),
# which moves the probabilities of this model by up to ~1.5e-3 (measured): 1e-4 is out of reach
# for fp16 weights, so fp16 has its own, stated bound (docs/mobile.md). An image whose two best
# classes are closer than 2 x FP16_TOL in the dygraph reference may swap them under that bound;
# every other image must keep its top-1 (which the bound alone already implies for them).
FP16_TOL = 5e-3
# (test id, sub-folder of the export, overrides, the back-end the log must name, precision, tol)
FLOAT_PATHS = [
    ("paddle_inference", "", ["Global.use_onnx=False"], "paddle_inference", "fp32", FLOAT_TOL),
    ("onnxruntime", "", [], "onnxruntime", "fp32", FLOAT_TOL),
    ("ort_format-fp32", "ort_fp32", [], "onnxruntime (ORT format)", "fp32", FLOAT_TOL),
    ("tflite-fp32", "tflite_fp32", [], "LiteRT", "fp32", FLOAT_TOL),
    ("tflite-fp16", "tflite_fp16", [], "LiteRT", "fp16 weights, fp32 compute", FP16_TOL),
    ("legacy-pdmodel", "legacy", [], "paddle_inference", "fp32", FLOAT_TOL),
]
INT8_PATHS = [
    ("onnx-int8", "quant_post_static_model", [], "onnxruntime", "int8"),
    ("ort_format-int8", "ort_int8", [], "onnxruntime (ORT format)", "int8"),
    ("tflite-int8", "tflite_int8", [], "LiteRT", "int8"),
]


def _backend_run(mobile_export, reference, digits32, subdir, extra, backend, precision, capsys):
    if subdir.startswith("tflite") and TFLITE_MISSING:
        pytest.skip(TFLITE_SKIP)
    from ppcls.utils import logger

    logger.init_logger()  # to the captured stdout
    model_dir = os.path.join(mobile_export["dir"], subdir)
    results = deploy_predict(model_dir, os.path.join(digits32, "val"), *extra)
    out = capsys.readouterr().out
    logger.init_logger()
    assert f"predicting with {backend} on cpu" in out and f", {precision}\n" in out, out[-2000:]
    assert [r["file_name"] for r in results] == reference["files"]
    return probabilities(results)


@pytest.mark.parametrize("subdir, extra, backend, precision, tol",
                         [p[1:] for p in FLOAT_PATHS], ids=[p[0] for p in FLOAT_PATHS])
def test_parity_float_path(mobile_export, reference, digits32, subdir, extra, backend, precision,
                           tol, capsys):
    probs = _backend_run(mobile_export, reference, digits32, subdir, extra, backend, precision, capsys)
    expected = reference["probs"]
    same = probs.argmax(1) == expected.argmax(1)
    if tol > FLOAT_TOL:  # fp16 weights: a near tie in the reference may swap (see FP16_TOL)
        top2 = np.sort(expected, axis=1)[:, -2:]
        same |= top2[:, 1] - top2[:, 0] <= 2 * tol
    diff = np.abs(probs - expected).max()
    assert same.all(), f"top-1 differs on {int((~same).sum())} image(s) (max |prob diff| {diff:.2g})"
    assert diff <= tol, f"max |prob diff| {diff:.2g} > {tol:g}"


@pytest.mark.parametrize("subdir, extra, backend, precision",
                         [p[1:] for p in INT8_PATHS], ids=[p[0] for p in INT8_PATHS])
def test_parity_int8_path(mobile_export, reference, digits32, subdir, extra, backend, precision,
                          capsys):
    probs = _backend_run(mobile_export, reference, digits32, subdir, extra, backend, precision, capsys)
    expected, labels = reference["probs"], reference["labels"]
    same_top1 = (probs.argmax(1) == expected.argmax(1)).mean()
    accuracy_loss = (expected.argmax(1) == labels).mean() - (probs.argmax(1) == labels).mean()
    assert same_top1 >= 0.99, f"same top-1 on {100 * same_top1:.2f}% of the images"
    assert accuracy_loss <= 0.01, f"INT8 loses {100 * accuracy_loss:.2f} points of top-1"


def test_parity_reference_model_is_trained(reference):
    """The parity table means something only on a model that classifies: >= 90% top-1."""
    assert (reference["probs"].argmax(1) == reference["labels"]).mean() >= 0.90


def _record(folder):
    with open(os.path.join(folder, "inference.yml")) as f:
        return yaml.safe_load(f)


def test_tflite_export_runs_with_the_predict_cls_command(mobile_export, digits32, tmp_path):
    if TFLITE_MISSING:
        pytest.skip(TFLITE_SKIP)
    base = mobile_export["dir"]
    assert "wrote tflite_fp32, tflite_fp16, tflite_int8" in mobile_export["log"]
    for name, precision in (("tflite_fp32", "fp32"), ("tflite_fp16", "fp16"), ("tflite_int8", "int8")):
        record = _record(os.path.join(base, name))
        assert record["Global"]["input_layout"] == "NHWC"
        assert record["Global"]["precision"] == precision
        assert record["PreProcess"] == _record(base)["PreProcess"]  # one preprocessing record
        assert set(record["Files"]) == {"inference.tflite", "label_list.txt"}
    # full-integer INT8: int8 input whose quantization inference.yml states
    from ai_edge_litert.interpreter import Interpreter

    detail = Interpreter(model_path=os.path.join(base, "tflite_int8", "inference.tflite")).get_input_details()[0]
    assert detail["dtype"] == np.int8 and list(detail["shape"]) == [1, SIZE, SIZE, 3]
    q = _record(os.path.join(base, "tflite_int8"))["Global"]["input_quantization"]
    assert (q["scale"], q["zero_point"]) == pytest.approx(detail["quantization"])

    # the same command as every other format, from deploy/; the log names LiteRT
    images = os.path.join(digits32, "val", "3")
    proc = run([PREDICT, "-c", "configs/inference_cls_from_export.yaml"] + overrides(
        [f"Global.inference_model_dir={os.path.join(base, 'tflite_fp32')}", f"Global.infer_imgs={images}"]),
        cwd=DEPLOY)
    assert "predicting with LiteRT on cpu (XNNPACK), fp32" in proc.stdout + proc.stderr
    assert "Created TensorFlow Lite XNNPACK delegate for CPU" in proc.stdout + proc.stderr  # LiteRT's own line
    lines = [line for line in proc.stdout.splitlines() if "\tclass id(s): " in line]
    assert len(lines) == len(os.listdir(images))
    assert sum("label_name(s): ['three'" in line for line in lines) >= 0.9 * len(lines)

    # a changed model file is refused, naming it
    changed = tmp_path / "tflite_fp32"
    shutil.copytree(os.path.join(base, "tflite_fp32"), changed)
    data = bytearray((changed / "inference.tflite").read_bytes())
    data[-10] ^= 0xFF
    (changed / "inference.tflite").write_bytes(bytes(data))
    with pytest.raises(ConfigError, match="inference.tflite does not match the hash"):
        deploy_predict(str(changed), images)


def test_ort_format_export_is_ort_and_runs_on_onnxruntime(mobile_export):
    base = mobile_export["dir"]
    for name, precision in (("ort_fp32", "fp32"), ("ort_int8", "int8")):
        with open(os.path.join(base, name, "inference.ort"), "rb") as f:
            head = f.read(8)
        assert head[4:8] == b"ORTM", head  # the ORT-format flatbuffer's file identifier
        record = _record(os.path.join(base, name))
        assert (record["Global"]["format"], record["Global"]["precision"]) == ("ort", precision)
        assert record["Global"]["input_layout"] == "NCHW"
    assert _record(os.path.join(base, "ort_int8"))["Quant"]["engine"] == "onnxruntime"


def test_legacy_program_is_the_old_format(mobile_export):
    """inference.pdmodel is a ProgramDesc (protobuf), not PIR JSON; parity runs it on Paddle
    Inference 3.3.1 (test_parity_float_path[legacy-pdmodel])."""
    folder = os.path.join(mobile_export["dir"], "legacy")
    assert sorted(os.listdir(folder)) == ["inference.pdiparams", "inference.pdmodel",
                                          "inference.yml", "label_list.txt"]
    with open(os.path.join(folder, "inference.pdmodel"), "rb") as f:
        data = f.read()
    assert not data.lstrip().startswith(b"{")  # PIR programs are JSON
    from paddle.base.proto import framework_pb2

    program = framework_pb2.ProgramDesc.FromString(data)
    ops = [op.type for op in program.blocks[0].ops]
    # the sandglass blocks' depthwise convolutions, then the appended softmax before the fetch
    assert ops[0] == "feed" and "depthwise_conv2d" in ops and ops[-2:] == ["softmax", "fetch"]
    assert not os.path.exists(os.path.join(folder, "inference.json"))
    assert os.path.isfile(os.path.join(mobile_export["dir"], "inference.json"))  # PIR beside it


def test_export_format_errors_are_one_line(monkeypatch):
    with pytest.raises(ConfigError, match="Global.export_format: unknown format 'tflit'"):
        mobile.export_formats({"export_format": "tflit"})
    assert mobile.export_formats({"export_format": "mobile"}) == ["tflite", "ort", "legacy"]
    assert mobile.export_formats({"export_format": ["legacy", "paddle"]}) == ["legacy"]
    assert mobile.export_formats({}) == []
    real = mobile.importlib.util.find_spec
    monkeypatch.setattr(mobile.importlib.util, "find_spec",
                        lambda name: None if name == "onnx2tf" else real(name))
    with pytest.raises(UserError) as err:
        mobile.require_tflite_stack()
    message = str(err.value)
    assert "\n" not in message and "onnx2tf" in message and "pip install" in message


def test_tflite_without_litert_installed_is_one_line_naming_pip(tmp_path, monkeypatch):
    from ppcls.inference.predictor import create_predictor

    (tmp_path / "inference.tflite").write_bytes(b"\0" * 64)  # an export without Files: trusted
    (tmp_path / "inference.yml").write_text("Global: {precision: fp32, input_layout: NHWC}\n")
    monkeypatch.setitem(sys.modules, "ai_edge_litert", None)  # import fails as if not installed
    monkeypatch.setitem(sys.modules, "ai_edge_litert.interpreter", None)
    with pytest.raises(UserError) as err:
        create_predictor({"inference_model_dir": str(tmp_path)})
    message = str(err.value)
    assert "\n" not in message and "LiteRT" in message and "pip install ai-edge-litert==2.3.0" in message
