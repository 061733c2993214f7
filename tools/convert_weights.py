"""Convert an official PyTorch MobileNeXt checkpoint or a PaddleClas .pdparams into our weights.

    python tools/convert_weights.py --src mobilenext_1.0.pth.tar \\
        --dst MobileNeXt_x1_0_pretrained.pdparams --arch MobileNeXt_x1_0

SRC: ``.pth`` / ``.pth.tar`` / ``.pt`` (read with ``torch.load(weights_only=True)``; needs
torch, and only this tool does) or ``.pdparams`` / ``.safetensors``. DST: ``.pdparams`` or
``.safetensors``. The result is checked against the built ``--arch`` before anything is written.
"""

import argparse
import re

import numpy as np

from ppcls.arch import build_model
from ppcls.utils import logger
from ppcls.utils.cli import run_tool
from ppcls.utils.errors import CheckpointError
from ppcls.utils.torch_weights import to_paddle_names
from ppcls.utils.weights import (SUFFIXES, TORCH_SUFFIXES, check_destination, check_state_dict,
                                 classifier_layer, expected_shapes, read_state_dict,
                                 save_state_dict, state_dict_numpy, unwrap_state_dict)


def read_torch_checkpoint(path):
    """``{name: np.ndarray}`` from a PyTorch checkpoint, loaded with ``weights_only=True``."""
    try:
        import torch
    except ImportError:
        raise CheckpointError(f"{path}: reading PyTorch checkpoints needs torch "
                              "(pip install torch, the CPU build is enough)") from None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint not found: {path}") from None
    except Exception as err:
        raise CheckpointError(f"{path}: torch.load(weights_only=True) cannot read it: "
                              f"{_torch_reason(err)}") from None
    state = {}
    for name, value in unwrap_state_dict(obj, source=path).items():
        if not isinstance(value, torch.Tensor):
            raise CheckpointError(f"{path}: entry '{name}' is a {type(value).__name__}, not a tensor")
        value = value.detach().cpu()
        if value.is_floating_point() and value.dtype not in (torch.float16, torch.float32, torch.float64):
            value = value.float()  # bfloat16 and friends have no numpy dtype
        state[name] = np.asarray(value.numpy())
    return state


def _torch_reason(err):
    """The useful part of a ``torch.load(weights_only=True)`` error, on one line: the refused
    global by name when there is one. Never torch's advice to retry with ``weights_only=False``
    (that runs whatever the file holds)."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(err))
    refused = re.search(r"(?:GLOBAL|global:?)\s+([A-Za-z_][\w.]*)", text)
    if refused:
        return (f"it asks for {refused.group(1)}, which a weights file never holds (refused before "
                "anything ran; only tensors, dicts, lists and numbers are read)")
    found = re.search(r"WeightsUnpickler error:\s*(.*?)\s*(?:Check the documentation|$)", text, re.S)
    if found:
        return f"not a PyTorch checkpoint ({' '.join(found.group(1).split())[:200]})"
    sentences = [s for s in re.split(r"(?<=\.)\s+", " ".join(text.split()))
                 if "weights_only" not in s and "trusted source" not in s]
    return " ".join(sentences)[:300] or type(err).__name__


def convert_state_dict(state, dst, arch, class_num=None, source="checkpoint"):
    """Map ``state`` (PyTorch or Paddle naming) to ``arch``'s names, check it fits the built
    model whole, and write it to ``dst`` (``.pdparams`` or ``.safetensors``).

    ``class_num`` defaults to the checkpoint's own: the length of the bias of the classifier
    layer the model declares (``classifier_layer``, MobileNeXt: ``classifier.1``). Nothing is
    written when the checkpoint does not fit. Returns ``(dst, class_num)``.
    """
    check_destination(dst)
    state = to_paddle_names(state)
    model = build_model({"name": arch})
    if class_num is None:
        layer = classifier_layer(model)
        bias = state.get(f"{layer}.bias") if layer else None
        class_num = int(bias.shape[0]) if bias is not None and bias.ndim == 1 else 1000
    model = build_model({"name": arch, "class_num": class_num})
    check_state_dict(expected_shapes(model), state, source=source,
                     target=f"{arch} (class_num {class_num})")
    dtypes = {name: value.dtype for name, value in state_dict_numpy(model).items()}
    save_state_dict({name: np.asarray(state[name]).astype(dtypes[name], copy=False)
                     for name in dtypes}, dst)
    return dst, class_num


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--src", required=True,
                        help="official PyTorch checkpoint (.pth, .pth.tar, .pt) or .pdparams")
    parser.add_argument("--dst", required=True, help="output weights (.pdparams or .safetensors)")
    parser.add_argument("--arch", required=True, help="model name, e.g. MobileNeXt_x1_0")
    parser.add_argument("--class_num", type=int, default=None,
                        help="classes of the checkpoint's head (default: read from the checkpoint)")
    args = parser.parse_args(argv)

    check_destination(args.dst)
    if args.src.endswith(SUFFIXES):
        state = read_state_dict(args.src)
    elif args.src.endswith(TORCH_SUFFIXES):
        state = read_torch_checkpoint(args.src)
    else:
        raise CheckpointError(f"--src {args.src}: unknown checkpoint type; expected one of "
                              f"{', '.join(TORCH_SUFFIXES + SUFFIXES)}")
    dst, class_num = convert_state_dict(state, args.dst, args.arch, args.class_num, source=args.src)
    logger.info(f"converted {args.src} -> {dst} ({args.arch}, class_num {class_num}, "
                f"{len(state)} tensors read)")
    return 0


if __name__ == "__main__":
    run_tool(main)
