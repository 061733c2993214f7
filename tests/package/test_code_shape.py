"""The package's shape (issue 21): short functions, a short-method Engine, no test switches in
production code. Lengths are counted from a function's first statement after its docstring to
its last line (comments and blank lines inside count)."""

import ast
import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # tests/<dir>/ -> the repository
PACKAGE = os.path.join(ROOT, "ppcls")
MAX_FUNCTION, MAX_ENGINE_METHOD = 60, 50


def _body_lines(node):
    body = node.body
    if (len(body) > 1 and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant)
            and isinstance(body[0].value.value, str)):
        body = body[1:]
    return node.end_lineno - body[0].lineno + 1


def _sources():
    for folder, _, files in os.walk(PACKAGE):
        for name in sorted(files):
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                with open(path, encoding="utf-8") as f:
                    yield os.path.relpath(path, ROOT), f.read()


def function_lengths():
    """``[(lines, "path:function"), ...]`` of every function and method in ``ppcls/``."""
    found = []
    for rel, text in _sources():
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                found.append((_body_lines(node), f"{rel}:{node.name}"))
    return sorted(found, reverse=True)


def engine_method_lengths():
    with open(os.path.join(PACKAGE, "engine", "engine.py"), encoding="utf-8") as f:
        tree = ast.parse(f.read())
    engine, = [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "Engine"]
    return sorted(((_body_lines(n), n.name) for n in engine.body
                   if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))), reverse=True)


def test_no_function_in_the_package_is_over_60_lines():
    lengths = function_lengths()
    assert len(lengths) > 500  # the scan saw the package
    assert [f for f in lengths if f[0] > MAX_FUNCTION] == []


def test_no_engine_method_is_over_50_lines():
    lengths = engine_method_lengths()
    assert {"__init__", "train", "train_epoch", "evaluate"} <= {name for _, name in lengths}
    assert [m for m in lengths if m[0] > MAX_ENGINE_METHOD] == []


def test_no_test_switch_or_side_channel_in_production_code():
    pattern = re.compile(r"__defaults__|sys\.modules\[|PPCLS_TEST_")
    hits = [f"{rel}:{i}" for rel, text in _sources()
            for i, line in enumerate(text.splitlines(), 1) if pattern.search(line)]
    assert hits == []


def test_defaults_are_stated_once():
    definitions = [rel for rel, text in _sources() if re.search(r"^DEFAULT_IMAGE_SHAPE =", text, re.M)]
    assert definitions == [os.path.join("ppcls", "utils", "global_config.py")]
    from ppcls.utils.global_config import GLOBAL

    # what tools/export_model.py does without the keys, as the Global table states it
    assert GLOBAL["image_shape"][1] == [3, 224, 224]
    assert GLOBAL["save_inference_dir"][1] == "./inference"
    assert GLOBAL["export_onnx"][1] is None  # missing: converted when paddle2onnx is installed


def test_batch_ops_regularizers_and_back_ends_are_built_like_every_component():
    import paddle
    import pytest

    from ppcls.data.preprocess.batch_ops import create_batch_operators
    from ppcls.inference.predictor import BACKENDS
    from ppcls.optimizer import build_optimizer
    from ppcls.utils.errors import ConfigError
    from ppcls.utils.registry import accepted_keys

    where = "DataLoader.Train.dataset.batch_transform_ops"
    with pytest.raises(ConfigError, match=rf"^{where}\.0\.MixupOperator: op MixupOperator does not "
                                          r"take key 'alpah' \(did you mean 'alpha'\?\)"):
        create_batch_operators([{"MixupOperator": {"alpah": 0.2}}], where, class_num=3)
    with pytest.raises(ConfigError, match=r"unknown batch transform op 'CutMixOperator'.*"
                                          r"\(did you mean 'CutmixOperator'\?\)"):
        create_batch_operators([{"OpSampler": {"CutMixOperator": {"prob": 0.5}}}], where, class_num=3)
    section = {"name": "Momentum", "momentum": 0.9, "lr": {"name": "Constant", "learning_rate": 0.1},
               "regularizer": {"name": "L2", "coef": 1e-4}}
    with pytest.raises(ConfigError, match=r"'Optimizer\.regularizer\.coef' \(did you mean 'coeff'\?\)"):
        build_optimizer(section, 1, 1, paddle.nn.Linear(2, 2))
    # a back-end takes exactly the Global keys it names; create_predictor passes only those
    for name in BACKENDS.names():
        backend = BACKENDS.get(name)
        keys, required, any_key = accepted_keys(backend, ("model_dir", "options"))
        assert (keys, required) == ((list(backend.keys), []) if not any_key else ([], []))
    with pytest.raises(TypeError, match="PaddlePredictor does not take use_onnx"):
        BACKENDS.get("paddle_inference")("no_such_dir", use_onnx=True, cpu_num_threads=1)


if __name__ == "__main__":  # python tests/package/test_code_shape.py: the longest ones
    print("functions:", *function_lengths()[:5], sep="\n  ")
    print("Engine methods:", *engine_method_lengths()[:5], sep="\n  ")
