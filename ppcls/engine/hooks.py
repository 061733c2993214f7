"""Hooks: what the training loop does around its steps, one class a job, called at named points.

The loop (``Engine.train``) calls every hook's method of a point, in ``priority`` order (lower
first; a hook without a method for a point is skipped there):

==============  =====================================  ====================================
point           arguments                              called
==============  =====================================  ====================================
before_run      ``(engine)``                           once, before the first epoch
before_epoch    ``(engine, epoch)``                    before the epoch's first batch
before_step     ``(engine, step)``                     after a batch is read
after_step      ``(engine, step)``                     after its backward (and update)
after_epoch     ``(engine, epoch, outputs)``           after the epoch's summary line
after_run       ``(engine)``                           after the last epoch
before_save     ``(engine, prefixes)``                 on rank 0, before a checkpoint is written
after_load      ``(engine, path)``                     after ``Global.checkpoints`` is resumed
==============  =====================================  ====================================

``step`` is a dict: ``epoch``, ``iter``, ``indices``, ``labels``, ``batch_size``, ``lr`` (the
rate this step used), ``update`` (an optimizer step happened) and ``means`` (the running means
of the losses and metrics on a logged iteration, else None). ``outputs`` is a dict:
``train`` (the epoch's means), then ``eval`` and ``improved`` when it was evaluated.

The default hooks (:data:`DEFAULT_HOOKS`) are the loop's own jobs: LR schedule stepping, EMA,
the profiler, progressive training (``Global.train_mode``), the log lines and VisualDL,
evaluation with the best model, checkpoints and the curves plot. More are listed under
``Global.hooks``: a name registered in :data:`HOOKS`, or ``{name: {key: value}}`` (the keys are
its constructor's). ``TraceHook`` is also on when ``PPCLS_TRACE_DIR`` names a folder (a test
and debug aid): each rank appends one JSON line a training step to ``trace.rank<R>.jsonl`` with
the sample indices and labels of its batch and a SHA-256 of the trainable parameters after the
update.
"""

import datetime
import hashlib
import json
import os
import time

import numpy as np

from ppcls.utils import logger, profiler
from ppcls.utils.errors import ConfigError
from ppcls.utils.global_config import global_value
from ppcls.utils.registry import Registry, build

TRACE_ENV = "PPCLS_TRACE_DIR"
POINTS = ("before_run", "before_epoch", "before_step", "after_step", "after_epoch", "after_run",
          "before_save", "after_load")
HOOKS = Registry("hook")


class Hook:
    """A hook's base: every point is a no-op; ``priority`` orders the hooks (lower first)."""

    priority = 50

    def before_run(self, engine):
        pass

    def before_epoch(self, engine, epoch):
        pass

    def before_step(self, engine, step):
        pass

    def after_step(self, engine, step):
        pass

    def after_epoch(self, engine, epoch, outputs):
        pass

    def after_run(self, engine):
        pass

    def before_save(self, engine, prefixes):
        pass

    def after_load(self, engine, path):
        pass


def call_hooks(hooks, point, engine, *args):
    """Call ``point`` of every hook that has it, lowest ``priority`` first."""
    for hook in sorted(hooks, key=lambda h: getattr(h, "priority", Hook.priority)):
        method = getattr(hook, point, None)
        if method is not None:
            method(engine, *args)


def params_digest(model):
    """SHA-256 of the trainable parameters (not the BN running statistics, which are per rank)."""
    h = hashlib.sha256()
    for name, p in model.named_parameters():
        if p.stop_gradient:
            continue
        h.update(name.encode())
        h.update(np.ascontiguousarray(p.numpy()).tobytes())
    return h.hexdigest()


# --------------------------------------------------------------------------- the default hooks


@HOOKS.register
class ProgressiveHook(Hook):
    """``Global.train_mode: progressive``: the stage's image size, magnitude and dropout before
    each epoch (``ppcls.engine.progressive``)."""

    priority = 5

    def before_epoch(self, engine, epoch):
        if getattr(engine, "train_mode", None) is not None:
            engine.train_mode.before_epoch(engine, epoch)  # may rebuild engine.train_loader


@HOOKS.register
class LRSchedulerHook(Hook):
    """Steps the LR schedule: after each optimizer step, or after each epoch (``by_epoch``)."""

    priority = 10

    def after_step(self, engine, step):
        if step["update"] and not engine.lr.by_epoch:
            engine.lr.scheduler.step()

    def after_epoch(self, engine, epoch, outputs):
        if engine.lr.by_epoch:
            engine.lr.scheduler.step()


@HOOKS.register
class EMAHook(Hook):
    """Updates the ``EMA`` average after each optimizer step."""

    priority = 20

    def after_step(self, engine, step):
        if step["update"] and engine.ema is not None:
            engine.ema.update(engine.bare_model)


@HOOKS.register
class ProfilerHook(Hook):
    """``-p/--profiler_options``: one profiler step a training iteration (no-op without)."""

    priority = 30

    def after_step(self, engine, step):
        profiler.step()


@HOOKS.register
class TraceHook(Hook):
    """One JSON line a step per rank in ``<folder>/trace.rank<R>.jsonl`` (see the module
    docstring); ``folder`` defaults to ``PPCLS_TRACE_DIR``."""

    def __init__(self, folder=None):
        self.folder = folder or os.environ.get(TRACE_ENV)
        if not self.folder:
            raise ConfigError(f"TraceHook needs a folder (or {TRACE_ENV} set)")
        self.written = 0

    def after_step(self, engine, step):
        os.makedirs(self.folder, exist_ok=True)
        record = {"rank": engine.rank, "epoch": step["epoch"], "iter": step["iter"],
                  "indices": [int(i) for i in step["indices"]],
                  "labels": step["labels"].numpy().reshape(-1).tolist(),
                  "params": params_digest(engine.bare_model)}
        with open(os.path.join(self.folder, f"trace.rank{engine.rank}.jsonl"), "a") as f:
            f.write(json.dumps(record) + "\n")
        self.written += 1


class AverageMeter:
    def __init__(self):
        self.sum, self.count = 0.0, 0

    def update(self, value, n=1):
        self.sum += float(value) * n
        self.count += n

    @property
    def avg(self):
        return self.sum / self.count if self.count else 0.0


def fmt_eta(seconds):
    return str(datetime.timedelta(seconds=int(max(0, seconds))))


@HOOKS.register
class LoggerHook(Hook):
    """PaddleClas's ``[Train][Epoch e/E][Iter: i/N]`` line on logged iterations (timings
    averaged since the last one) and the VisualDL scalars of training."""

    priority = 90  # last in a step: the timings cover the other hooks, as before

    def before_epoch(self, engine, epoch):
        self.batch_cost, self.reader_cost = AverageMeter(), AverageMeter()
        self.tic = time.time()

    def before_step(self, engine, step):
        self.reader_cost.update(time.time() - self.tic)

    def after_step(self, engine, step):
        self.batch_cost.update(time.time() - self.tic)
        if step["means"] is not None:
            self._log(engine, step)
            self.batch_cost, self.reader_cost = AverageMeter(), AverageMeter()
        self.tic = time.time()

    def _log(self, engine, step):
        epoch, it, means, lr_now = step["epoch"], step["iter"], step["means"], step["lr"]
        epochs, total = engine.g["epochs"], engine.iters_per_epoch
        cost = self.batch_cost.avg
        metric_msg = ", ".join(f"{k}: {v:.5f}" for k, v in means.items())
        ips = step["batch_size"] / cost if cost > 0 else 0.0
        eta = ((epochs - epoch) * total + (total - it - 1)) * cost
        logger.info(f"[Train][Epoch {epoch}/{epochs}][Iter: {it}/{total}]"
                    f"lr({engine.lr.name}): {lr_now:.8f}, {metric_msg}, "
                    f"batch_cost: {cost:.5f}s, reader_cost: {self.reader_cost.avg:.5f}, "
                    f"ips: {ips:.5f} samples/s, eta: {fmt_eta(eta)}")
        if engine._vdl is not None:
            vdl_step = (epoch - 1) * total + it
            engine._vdl.add_scalar("train/lr", lr_now, vdl_step)
            for k, v in means.items():
                engine._vdl.add_scalar(f"train/{k}", v, vdl_step)


@HOOKS.register
class EvalHook(Hook):
    """Evaluates on ``DataLoader.Eval`` as ``Global.eval_*`` say (and the EMA weights beside,
    as PaddleClas; the best of both counts), keeps the best metric, says whether it improved."""

    priority = 60

    def after_epoch(self, engine, epoch, outputs):
        if not engine._should_eval(epoch):
            return
        names = engine.eval_metrics.names
        results = outputs["eval"] = engine.evaluate(epoch)
        metric = results.get(names[0]) if names else None
        if metric is not None and engine.ema is not None:
            metric = max(metric, self._eval_ema(engine, epoch, names[0]))
        if metric is None:
            return
        engine.metric_history.append((epoch, metric))
        if engine.best_metric is None or metric > engine.best_metric:
            engine.best_metric, engine.best_epoch = metric, epoch
            outputs["improved"] = True
        logger.info(f"[Eval][Epoch {epoch}][best metric: {engine.best_metric:.5f}]")
        if engine._vdl is not None:
            engine._vdl.add_scalar("eval/" + names[0], metric, epoch)

    @staticmethod
    def _eval_ema(engine, epoch, name):
        ema_metric = engine.evaluate(epoch, model=engine.ema.model)[name]
        if engine.best_metric_ema is None or ema_metric > engine.best_metric_ema:
            engine.best_metric_ema = ema_metric
        logger.info(f"[Eval][Epoch {epoch}][best metric ema: {engine.best_metric_ema:.5f}]")
        if engine._vdl is not None:
            engine._vdl.add_scalar("eval/" + name + "_ema", ema_metric, epoch)
        return ema_metric

    def after_run(self, engine):
        if engine.best_metric is not None:
            logger.info(f"Best {engine.eval_metrics.names[0]}: {engine.best_metric:.5f} "
                        f"(epoch {engine.best_epoch})")


@HOOKS.register
class CheckpointHook(Hook):
    """Writes ``best_model`` (``Global.save_best_model``), ``epoch_<n>`` (every
    ``Global.save_interval``) and ``latest`` after each epoch (``ppcls.engine.checkpoint``)."""

    priority = 70

    def after_epoch(self, engine, epoch, outputs):
        g = engine.g
        names = ["best_model"] if outputs.get("improved") and g["save_best_model"] else []
        if g["save_interval"] and epoch % g["save_interval"] == 0:
            names.append(f"epoch_{epoch}")
        names.append("latest")
        engine._save(names, epoch)


@HOOKS.register
class CurvesHook(Hook):
    """``Global.plot_curves``: ``curves.png`` from ``train.log`` at the end of training."""

    priority = 80

    def after_run(self, engine):
        if engine.g["plot_curves"] and engine.rank == 0:
            from ppcls.engine.curves import plot_log

            png = plot_log(os.path.join(engine.output_dir, "train.log"),
                           os.path.join(engine.output_dir, "curves.png"))
            logger.info(f"Training curves written to {png}")


DEFAULT_HOOKS = ("ProgressiveHook", "LRSchedulerHook", "EMAHook", "ProfilerHook", "LoggerHook",
                 "EvalHook", "CheckpointHook", "CurvesHook")


def build_hooks(config):
    """The default hooks, ``TraceHook`` when ``PPCLS_TRACE_DIR`` is set, then ``Global.hooks``."""
    hooks = [build(name, HOOKS, "hooks") for name in DEFAULT_HOOKS]
    if os.environ.get(TRACE_ENV):
        hooks.append(TraceHook())
    listed = global_value(config, "hooks") or []
    if not isinstance(listed, list):
        raise ConfigError(f"Global.hooks expects a list of hook names (or {{name: {{keys}}}}), "
                          f"got {listed!r}")
    for i, spec in enumerate(listed):
        hook = build(spec, HOOKS, f"Global.hooks.{i}")
        if type(hook).__name__ in DEFAULT_HOOKS:
            raise ConfigError(f"Global.hooks.{i}: {type(hook).__name__} is a default hook "
                              "(always on); list only additional hooks")
        hooks.append(hook)
    return hooks


__all__ = ["HOOKS", "POINTS", "DEFAULT_HOOKS", "Hook", "call_hooks", "build_hooks",
           "params_digest", "TraceHook"]
