"""Metrics by name: the ``Metric`` section of a config -> callables on (logits, labels).

PaddleClas schema::

    Metric:
      Train:
        - TopkAcc: {topk: [1, 5]}
      Eval:
        - TopkAcc: {topk: [1, 5]}

A metric returns, per sample, whether it counts as a hit (``{"top1": [N] float, ...}``), so
the engine can average over a batch for the log lines and count hits exactly over a whole
evaluation set, across cards.
"""

import paddle

from ppcls.utils.errors import ConfigError
from ppcls.utils.registry import Registry, build

METRICS = Registry("metric")


@METRICS.register
class TopkAcc:
    """Top-k accuracy for each k in ``topk``; names ``top1``, ``top5``, ...

    A k larger than the number of classes counts every sample as a hit (as it must).
    """

    def __init__(self, topk=(1, 5)):
        if isinstance(topk, int):
            topk = [topk]
        if (not isinstance(topk, (list, tuple)) or not topk
                or not all(isinstance(k, int) and not isinstance(k, bool) and k >= 1 for k in topk)):
            raise ValueError(f"topk must be a list of positive integers, got {topk!r}")
        self.topk = list(topk)

    @property
    def names(self):
        return [f"top{k}" for k in self.topk]

    def __call__(self, logits, labels):
        labels = labels.reshape([-1, 1]).astype("int64")
        kmax = min(max(self.topk), logits.shape[-1])
        _, idx = paddle.topk(logits, k=kmax, axis=-1)
        hits = (idx == labels).astype("float32")  # [N, kmax], at most one 1 a row
        cum = paddle.cumsum(hits, axis=-1)
        return {f"top{k}": cum[:, min(k, kmax) - 1] for k in self.topk}


class MetricList:
    def __init__(self, metrics):
        self.metrics = metrics

    @property
    def names(self):
        return [n for m in self.metrics for n in m.names]

    def __call__(self, logits, labels):
        out = {}
        for metric in self.metrics:
            out.update(metric(logits, labels))
        return out


def check_topk(metric, class_num, where):
    """A top-k above the number of classes is a config mistake (every sample would count as
    a hit): refuse it with one line."""
    if not isinstance(class_num, int) or isinstance(class_num, bool) or class_num < 1:
        return  # (a bad class_num is reported by the model builder)
    too_big = [k for k in getattr(metric, "topk", None) or [] if k > class_num]
    if too_big:
        raise ConfigError(f"{where}: topk {too_big[0]} exceeds the {class_num} classes of the model "
                          f"(Arch.class_num); use values up to {class_num}, e.g. topk: [1, "
                          f"{min(5, class_num)}]")


def build_metrics(section, where="Metric", class_num=None):
    """``section``: a list of ``{MetricName: {...}}`` items (``Metric.Train`` / ``Metric.Eval``);
    ``None`` or an empty list means no metric. ``class_num``: the model's, bounds ``topk``."""
    if section is None:
        return MetricList([])
    if not isinstance(section, list):
        raise ConfigError(f"{where} must be a list such as [{{TopkAcc: {{topk: [1, 5]}}}}]")
    metrics = []
    for i, item in enumerate(section):
        if not isinstance(item, dict) or len(item) != 1:
            raise ConfigError(f"{where}.{i} must be one mapping {{MetricName: {{...}}}}, got {item!r}")
        metrics.append(build(item, METRICS, f"{where}.{i}"))
        check_topk(metrics[-1], class_num, f"{where}.{i}.{next(iter(item))}")
    return MetricList(metrics)


__all__ = ["METRICS", "TopkAcc", "MetricList", "build_metrics"]
