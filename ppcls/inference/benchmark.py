"""Per-batch stage timing for predictions: preprocess, inference, postprocess.

Use: ``start()`` before a batch is read, ``stamp()`` after preprocessing, ``stamp()`` after
inference, ``end(n_images)`` after postprocessing; ``report()`` at the end. The report gives
each stage's time per batch (mean, p50, p90, in ms) and the throughput in images per second,
plus the ``preprocess_time(ms): ..., inference_time(ms): ..., postprocess_time(ms): ...`` line
that PaddleClas's benchmark logs (and TIPC log parsers) use. When the ``auto_log`` package
(PaddlePaddle's AutoLog) is importable, its ``AutoLogger`` gets the same stamps and prints its
own report as well.
"""

import os
import time

import numpy as np

from ppcls.utils import logger

STAGES = ("preprocess", "inference", "postprocess")


def _auto_logger(info):
    try:
        import auto_log
    except ImportError:
        return None
    return auto_log.AutoLogger(
        model_name=info.get("model_name", "cls"), model_precision=info.get("precision", "fp32"),
        batch_size=info.get("batch_size", 1), data_shape=info.get("input_shape", "dynamic"),
        save_path=info.get("save_log_path"), inference_config=info.get("inference_config"),
        pids=os.getpid(), process_name=None, gpu_ids=None,
        time_keys=[f"{stage}_time" for stage in STAGES], warmup=0)


class StageTimer:
    """Collects stage times per batch; ``info`` describes the run for the report."""

    def __init__(self, info=None, use_auto_log=True):
        self.info = dict(info or {})
        self.times = {stage: [] for stage in STAGES}
        self.images = 0
        self._marks = []
        self.auto_log = _auto_logger(self.info) if use_auto_log else None

    def start(self):
        self._marks = [time.perf_counter()]
        if self.auto_log:
            self.auto_log.times.start()

    def stamp(self):
        self._marks.append(time.perf_counter())
        if self.auto_log:
            self.auto_log.times.stamp()

    def end(self, n_images):
        self._marks.append(time.perf_counter())
        if len(self._marks) != len(STAGES) + 1:
            raise RuntimeError("StageTimer: call start(), stamp(), stamp(), end() once per batch")
        for stage, begin, finish in zip(STAGES, self._marks, self._marks[1:]):
            self.times[stage].append(finish - begin)
        self.images += n_images
        if self.auto_log:
            self.auto_log.times.end(stamp=True)

    def summary(self):
        """``{stage: (mean_ms, p50_ms, p90_ms)}`` and images per second over all batches."""
        stats = {}
        for stage, values in self.times.items():
            ms = np.asarray(values, dtype=np.float64) * 1000.0
            stats[stage] = ((float(ms.mean()), float(np.percentile(ms, 50)), float(np.percentile(ms, 90)))
                            if ms.size else (0.0, 0.0, 0.0))
        total = sum(sum(values) for values in self.times.values())
        return stats, (self.images / total if total > 0 else 0.0)

    def report(self):
        stats, ips = self.summary()
        batches = len(self.times["inference"])
        logger.info("----------------------- Benchmark -----------------------")
        for key in ("model_dir", "backend", "device", "enable_mkldnn", "cpu_num_threads",
                    "ir_optim", "precision", "batch_size", "input_shape"):
            if key in self.info:
                logger.info(f"{key}: {self.info[key]}")
        logger.info(f"data_num: {self.images}, batches: {batches}")
        for stage in STAGES:
            mean, p50, p90 = stats[stage]
            logger.info(f"{stage} time per batch (ms): mean {mean:.3f}, p50 {p50:.3f}, p90 {p90:.3f}")
        logger.info(", ".join(f"{stage}_time(ms): {stats[stage][0]:.4f}" for stage in STAGES))
        logger.info(f"throughput: {ips:.2f} images/s")
        if self.auto_log:
            self.auto_log.report()
        return stats, ips
