"""What an export folder holds: its file names, the ``inference.yml`` record with a content hash
of every file, and reading that record back (shared by export, quantization and prediction)."""

import os

import yaml

from ppcls.utils.errors import ConfigError
from ppcls.utils.hashing import file_sha256

INFERENCE_YML = "inference.yml"
ONNX_FILE = "inference.onnx"
MODEL_FILES = (("inference.json", "inference.pdiparams"),     # Paddle 3 (PIR)
               ("inference.pdmodel", "inference.pdiparams"))  # Paddle 2.x
# files an export may hold besides those its inference.yml names (older exports had no Files)
EXPORT_FILES = ("inference.json", "inference.pdiparams", "inference.pdmodel", "inference.onnx",
                "inference.pdiparams.info", INFERENCE_YML, "quant_post_static_model")
# the phone formats' sub-folders, each an export of its own (ppcls.inference.mobile)
MOBILE_DIRS = ("tflite_fp32", "tflite_fp16", "tflite_int8", "ort_fp32", "ort_int8", "legacy")
EXPORT_FILES = EXPORT_FILES + MOBILE_DIRS


def find_model_files(model_dir, key="Global.inference_model_dir"):
    """``(model_file, params_file)`` of the export in ``model_dir`` (json first, then pdmodel)."""
    if not isinstance(model_dir, str) or not os.path.isdir(model_dir):
        raise ConfigError(f"{key}: no such folder: {model_dir}")
    for model_name, params_name in MODEL_FILES:
        model_file = os.path.join(model_dir, model_name)
        if os.path.isfile(model_file):
            params_file = os.path.join(model_dir, params_name)
            if not os.path.isfile(params_file):
                raise ConfigError(f"{key}: {model_file} has no weights beside it "
                                  f"(expected {params_file})")
            return model_file, params_file
    present = ", ".join(sorted(os.listdir(model_dir))) or "nothing"
    raise ConfigError(f"{key}: {model_dir} holds no exported model (expected inference.json + "
                      f"inference.pdiparams, or inference.pdmodel + inference.pdiparams; found "
                      f"{present}); export one with tools/export_model.py")


def sha256_file(path):
    """``sha256:<hex>``, as inference.yml's ``Files`` records it."""
    return "sha256:" + file_sha256(path)


def write_record(folder, record):
    """Write ``record`` as ``folder/inference.yml`` with ``Files``: the hash of every other file."""
    record = dict(record)
    record["Files"] = {name: sha256_file(os.path.join(folder, name))
                       for name in sorted(os.listdir(folder))
                       if name != INFERENCE_YML and os.path.isfile(os.path.join(folder, name))}
    tmp = os.path.join(folder, f".{INFERENCE_YML}.tmp{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as f:
        yaml.safe_dump(record, f, sort_keys=False, allow_unicode=True)
    os.replace(tmp, os.path.join(folder, INFERENCE_YML))
    return record


def read_inference_yml(model_dir):
    """The ``inference.yml`` of an export, or ``None`` when the export has none (older exports)."""
    path = os.path.join(model_dir, INFERENCE_YML)
    if not os.path.isfile(path):
        return None
    try:
        with open(path, encoding="utf-8") as f:
            record = yaml.safe_load(f)
    except yaml.YAMLError as err:
        raise ConfigError(f"{path} is not valid YAML: {' '.join(str(err).split())}") from None
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path} is not UTF-8 text ({err.reason} at byte {err.start}); export "
                          "the model again") from None
    except OSError as err:
        raise ConfigError(f"{path}: cannot read ({err.strerror or err})") from None
    if not isinstance(record, dict):
        raise ConfigError(f"{path}: expected a mapping (Global, PreProcess, PostProcess)")
    return record


_UNVERIFIED_WARNED = set()  # export folders already warned about (one warning each)


def file_status(model_dir, record, name):
    """``(True, "")`` when ``model_dir/name`` exists and matches ``record``'s hash; ``(False, why)``
    when it is missing or not part of the recorded export (such a file is ignored). A recorded
    file whose content differs is refused: ``ConfigError``, and so is a ``Files`` entry that is
    not a mapping of hashes. An export whose ``inference.yml`` records no ``Files`` (PaddleClas's,
    or ours before hashes were recorded, or one whose ``Files`` was deleted) is served with one
    warning that nothing was verified; a folder with no ``inference.yml`` at all is PaddleClas's
    plain export and is used as it is."""
    path = os.path.join(model_dir, name)
    if not os.path.isfile(path):
        return False, f"{model_dir} has no {name}"
    files = (record or {}).get("Files")
    if record is not None and files is not None and not (
            isinstance(files, dict) and all(isinstance(v, str) for v in files.values())):
        raise ConfigError(f"{os.path.join(model_dir, INFERENCE_YML)}: Files must map each file of "
                          f"the export to its sha256, found {str(files)[:60]!r}; export the model again")
    if not isinstance(files, dict):
        key = os.path.realpath(model_dir)
        if record is not None and key not in _UNVERIFIED_WARNED:
            _UNVERIFIED_WARNED.add(key)
            from ppcls.utils import logger

            logger.warning(f"{os.path.join(model_dir, INFERENCE_YML)} records no file hashes "
                           "(Files): the model files are used unverified (an export by PaddleClas "
                           "or an older ppcls; export again with tools/export_model.py to record them)")
        return True, ""
    if name not in files:
        return False, (f"{path} is not part of the export recorded in {INFERENCE_YML} "
                       f"(added afterwards)")
    actual = sha256_file(path)
    if actual != files[name]:
        raise ConfigError(f"{path} does not match the hash recorded in "
                          f"{os.path.join(model_dir, INFERENCE_YML)} (recorded {files[name]}, found "
                          f"{actual}): the file changed after export; export the model again")
    return True, ""
