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


def build_metrics(section, where="Metric"):
    """``section``: a list of ``{MetricName: {...}}`` items (``Metric.Train`` / ``Metric.Eval``);
    ``None`` or an empty list means no metric."""
    if section is None:
        return MetricList([])
    if not isinstance(section, list):
        raise ConfigError(f"{where} must be a list such as [{{TopkAcc: {{topk: [1, 5]}}}}]")
    metrics = []
    for i, item in enumerate(section):
        if not isinstance(item, dict) or len(item) != 1:
            raise ConfigError(f"{where}.{i} must be one mapping {{MetricName: {{...}}}}, got {item!r}")
        metrics.append(build(item, METRICS, f"{where}.{i}"))
    return MetricList(metrics)


__all__ = ["METRICS", "TopkAcc", "MetricList", "build_metrics"]
