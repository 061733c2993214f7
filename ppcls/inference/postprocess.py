"""Post-processing of classification scores: ``Topk`` and class-id -> name maps."""

import os

import numpy as np

from ppcls.utils.errors import ConfigError


def load_class_id_map(path, key="class_id_map_file"):
    """Read an ``id name`` per line label file (``0 tench, Tinca tinca``) into ``{id: name}``."""
    if path is None:
        return None
    if not isinstance(path, str) or not os.path.isfile(path):
        raise ConfigError(f"{key}: label file not found: {path}")
    mapping = {}
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            line = line.rstrip("\r\n")
            if not line.strip():
                continue
            class_id, _, name = line.strip().partition(" ")
            try:
                mapping[int(class_id)] = name.strip()
            except ValueError:
                raise ConfigError(f"{path}:{number}: expected '<class id> <name>', got {line!r}") from None
    return mapping


def softmax(x, axis=-1):
    """Numerically stable softmax of a numpy array (float32 in, float32 out)."""
    x = np.asarray(x, dtype=np.float32)
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


class Topk:
    """The ``topk`` best classes of each row of a score matrix, as PaddleClas's result dicts.

    ``{'class_ids': [...], 'scores': [...] (5 decimals), 'file_name': ..., 'label_names': [...]}``
    (``label_names`` empty without a ``class_id_map_file``, as PaddleClas). Scores are used as given:
    probabilities when the model ends in softmax.
    """

    def __init__(self, topk=1, class_id_map_file=None, key="PostProcess.Topk"):
        if not isinstance(topk, int) or isinstance(topk, bool) or topk < 1:
            raise ConfigError(f"{key}.topk: expected a positive integer, got {topk!r}")
        self.topk = topk
        self.key = key
        self.class_id_map_file = class_id_map_file
        self.class_id_map = load_class_id_map(class_id_map_file, key=f"{key}.class_id_map_file")
        self._checked_classes = None

    def __call__(self, scores, file_names):
        scores = np.asarray(scores)
        if scores.ndim != 2 or scores.shape[0] != len(file_names):
            raise ValueError(f"Topk expects a [{len(file_names)}, classes] score matrix, "
                             f"got shape {scores.shape}")
        if self.class_id_map is not None and self._checked_classes != scores.shape[1]:
            if len(self.class_id_map) != scores.shape[1]:
                raise ConfigError(f"{self.key}.class_id_map_file: {self.class_id_map_file} names "
                                  f"{len(self.class_id_map)} classes, but the model outputs "
                                  f"{scores.shape[1]} scores per image; name the model's own label "
                                  f"file (or none: the export's is used)")
            self._checked_classes = scores.shape[1]
        k = min(self.topk, scores.shape[1])
        order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        results = []
        for row, ids, name in zip(scores, order, file_names):
            result = {"class_ids": ids.tolist(),
                      "scores": np.around(row[ids].astype(np.float64), 5).tolist(),
                      "file_name": name}
            # As PaddleClas: always present, empty without a class_id_map_file.
            result["label_names"] = ([self.class_id_map.get(i, "") for i in result["class_ids"]]
                                     if self.class_id_map is not None else [])
            results.append(result)
        return results


def build_postprocess(section, key="PostProcess"):
    """``Topk`` from either PaddleClas spelling of the section.

    Training configs: ``Infer.PostProcess: {name: Topk, topk: 5, class_id_map_file: ...}``;
    deployment configs: ``PostProcess: {Topk: {topk: 5, class_id_map_file: ...}}``
    (other entries there, such as ``main_indicator`` or ``SavePreLabel``, are ignored).
    """
    if section is None:
        return Topk(5, None, key=key)
    if not isinstance(section, dict):
        raise ConfigError(f"{key}: expected a mapping, got {section!r}")
    if "name" in section:
        params = {k: v for k, v in section.items() if k != "name"}
        name = section["name"]
    elif "Topk" in section:
        params, name = dict(section["Topk"] or {}), "Topk"
    else:
        raise ConfigError(f"{key}: no Topk post-process (expected 'name: Topk' or a 'Topk:' entry)")
    if name != "Topk":
        raise ConfigError(f"{key}: unknown post-process '{name}'; known: Topk")
    unknown = set(params) - {"topk", "class_id_map_file"}
    if unknown:
        raise ConfigError(f"{key}: Topk does not take {', '.join(sorted(unknown))}; "
                          f"it takes topk, class_id_map_file")
    return Topk(key=f"{key}" if "name" in section else f"{key}.Topk", **params)
