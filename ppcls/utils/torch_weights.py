"""PyTorch naming -> our (PaddleClas) naming, for ``tools/convert_weights.py``.

Official PyTorch MobileNeXt state_dicts come bare, or under ``state_dict`` / ``model``, with
or without ``module.`` prefixes. They map by name alone: ``running_mean`` -> ``_mean``,
``running_var`` -> ``_variance``, ``num_batches_tracked`` dropped, and Linear weights (the
2-D ``.weight`` tensors) transposed from ``[out, in]`` to ``[in, out]``.

Only the conversion tool imports this module (and tests / benchmarks that start from the
official fixture); loading weights at run time (``ppcls.utils.weights``) expects converted
files and never maps names.
"""

import numpy as np

from ppcls.utils.weights import is_torch_naming, unwrap_state_dict


def torch_state_dict_to_paddle(state):
    """Map an official PyTorch MobileNeXt state_dict (``{name: np.ndarray}``) to our names.

    Returns a new dict; the input is not changed.
    """
    out = {}
    for name, value in unwrap_state_dict(state, source="PyTorch state_dict").items():
        value = np.asarray(value)
        if name.endswith(".num_batches_tracked"):
            continue
        if name.endswith(".running_mean"):
            name = name[: -len("running_mean")] + "_mean"
        elif name.endswith(".running_var"):
            name = name[: -len("running_var")] + "_variance"
        elif name.endswith(".weight") and value.ndim == 2:
            value = np.ascontiguousarray(value.T)
        out[name] = value
    return out


def to_paddle_names(state):
    """``state`` in our names, whichever of the two conventions it uses."""
    return torch_state_dict_to_paddle(state) if is_torch_naming(state) else dict(state)


__all__ = ["is_torch_naming", "to_paddle_names", "torch_state_dict_to_paddle"]
