"""The second attack round's findings (issue 22, attack items 3-16), each as cheap as it can be:
functions on small inputs; no training run."""

import json
import os
import pickle
import subprocess
import sys
import time

import numpy as np
import pytest

from ppcls.utils.errors import CheckpointError, ConfigError, UserError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


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
