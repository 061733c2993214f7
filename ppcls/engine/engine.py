"""The training and evaluation engine: one config in, the PaddleClas loop out.

``Engine(config, mode)`` builds everything from the config's sections by name (model, data
loaders, loss, metrics, optimizer with its LR schedule, AMP, EMA), then ``train()`` or
``evaluate()`` runs the loop and prints PaddleClas log lines::

    [Train][Epoch 3/200][Iter: 50/2502]lr(LinearWarmup): 0.01234567, top1: 0.12500, ...
    [Train][Epoch 3/200][Avg]top1: ..., top5: ..., CELoss: ..., loss: ...
    [Eval][Epoch 3][Iter: 10/50]CELoss: ..., loss: ..., top1: ..., top5: ..., batch_cost: ...s, reader_cost: ..., ips: ... images/sec
    [Eval][Epoch 3][Avg]CELoss: ..., loss: ..., top1: 0.74020, top5: 0.91000
    [Eval][Epoch 3][best metric: 0.74020]

Resuming (``Global.checkpoints``) and checkpoints: ``ppcls.engine.checkpoint``; cross-card
reductions: ``ppcls.engine.distributed``; per-step hooks (the ``PPCLS_TRACE_DIR`` trace):
``ppcls.engine.hooks``; ``Global`` keys and their defaults: ``ppcls.utils.global_config``.
"""

import contextlib
import datetime
import math
import os
import random
import time

import numpy as np
import paddle

from ppcls.arch import build_model
from ppcls.engine import checkpoint, distributed, run_dir
from ppcls.engine.amp import amp_settings, build_scaler
from ppcls.engine.ema import build_ema
from ppcls.engine.hooks import default_hooks
from ppcls.engine.progressive import build_train_mode
from ppcls.ops import fast_cpu
from ppcls.loss import build_loss
from ppcls.metric import build_metrics
from ppcls.optimizer import build_optimizer
from ppcls.utils import logger, profiler
from ppcls.utils.cli import handle_sigterm
from ppcls.utils.config import print_config, save_config
from ppcls.utils.errors import ConfigError, UserError
from ppcls.utils.global_config import select_device, with_defaults

# The Global keys the engine reads; their defaults come from the one table.
ENGINE_KEYS = ("checkpoints", "pretrained_model", "output_dir", "device", "save_interval",
               "eval_during_train", "eval_interval", "start_eval_epoch", "epochs",
               "print_batch_step", "use_visualdl", "seed", "to_static", "max_iters_per_epoch",
               "save_best_model", "plot_curves", "use_dali", "eval_mode", "update_freq",
               "use_multilabel")


class TrainingDiverged(UserError):
    """The loss became NaN or Inf."""


class AverageMeter:
    def __init__(self):
        self.sum, self.count = 0.0, 0

    def update(self, value, n=1):
        self.sum += float(value) * n
        self.count += n

    @property
    def avg(self):
        return self.sum / self.count if self.count else 0.0


def _fmt_eta(seconds):
    return str(datetime.timedelta(seconds=int(max(0, seconds))))


def _bare(model):
    return model._layers if isinstance(model, paddle.DataParallel) else model


class Engine:
    def __init__(self, config, mode="train"):
        if mode not in ("train", "eval"):
            raise ValueError(f"mode must be 'train' or 'eval', got {mode!r}")
        self.config = config
        self.mode = mode
        handle_sigterm()  # one line and exit 143, not Paddle's fatal-error dump
        g = config.setdefault("Global", {})
        requested_device = g.get("device")
        self.g = with_defaults(g, ENGINE_KEYS)
        if "Arch" not in config or "name" not in (config["Arch"] or {}):
            raise ConfigError("the config has no Arch.name (e.g. Arch: {name: MobileNeXt_x1_0})")
        self.arch_name = config["Arch"]["name"]
        self.output_dir = os.path.join(g["output_dir"], self.arch_name)
        self.world_size, self.rank = distributed.world()

        self._run_lock, notes = None, []
        if mode == "train":  # one training per folder; a fresh run moves an earlier one aside
            self._run_lock, notes = run_dir.prepare(self.output_dir, bool(g.get("checkpoints")),
                                                    self.rank)
        logger.init_logger(os.path.join(self.output_dir, f"{mode}.log"))
        for note in notes:
            logger.info(note)
        print_config(config)
        self._check_sections()
        self.device = g["device"] = select_device(requested_device)
        if self.world_size > 1:
            paddle.distributed.init_parallel_env()
        self.seed = g["seed"]
        if self.seed is not None:
            paddle.seed(self.seed)
            np.random.seed(self.seed)
            random.seed(self.seed)

        self.amp = self._amp_settings()
        self.scaler = None
        self.ema = None
        self.best_metric_ema = None
        self.start_epoch, self.best_metric, self.best_epoch = 0, None, None
        self.epoch = 0  # the last epoch trained
        self.hooks = default_hooks()
        self.metric_history = []

        # Losses and metrics first: a typo there should not wait for the data to be checked.
        loss_cfg = config.get("Loss") or {}
        metric_cfg = config.get("Metric") or {}
        class_num = (config.get("Arch") or {}).get("class_num", 1000)
        if mode == "train":
            self.train_loss = build_loss(loss_cfg["Train"], "Loss.Train")
            self.train_metrics = build_metrics(metric_cfg.get("Train"), "Metric.Train", class_num)
        self.eval_loss = build_loss(loss_cfg["Eval"], "Loss.Eval") if loss_cfg.get("Eval") else None
        self.eval_metrics = build_metrics(metric_cfg.get("Eval"), "Metric.Eval", class_num)

        from ppcls.data import build_dataloader

        self._build_dataloader = build_dataloader
        data_cfg = config.get("DataLoader") or {}
        self.eval_loader = None
        if mode == "train":
            if "Train" not in data_cfg:
                raise ConfigError("DataLoader.Train is missing")
            self.train_loader = build_dataloader(config, "Train", device=self.device, seed=self.seed)
            self.train_mode = build_train_mode(config)  # Global.train_mode: progressive, or None
            if getattr(self.train_loader, "batch_ops", None):
                self._drop_train_topk(metric_cfg.get("Train"))
            if g["eval_during_train"] and "Eval" not in data_cfg:
                logger.warning("Global.eval_during_train is on but DataLoader.Eval is missing: "
                               "no evaluation during training")
                g["eval_during_train"] = False
            if g["eval_during_train"]:
                self.eval_loader = build_dataloader(config, "Eval", device=self.device, seed=self.seed)
        else:
            if "Eval" not in data_cfg:
                raise ConfigError("DataLoader.Eval is missing")
            self.eval_loader = build_dataloader(config, "Eval", device=self.device, seed=self.seed)

        # The data is checked first (a bad list file fails fast), then the model is built.
        self.model = build_model(config)
        if g["pretrained_model"] and not (mode == "train" and g["checkpoints"]):
            from ppcls.utils.weights import load_pretrained

            # Fine-tuning (train): a classifier of another class_num keeps its initialisation.
            load_pretrained(self.model, g["pretrained_model"], skip_mismatched_head=mode == "train")
            logger.info(f"Loaded pretrained weights from {g['pretrained_model']}")
        elif g["pretrained_model"]:
            logger.warning(f"Global.pretrained_model ({g['pretrained_model']}) is ignored: "
                           f"Global.checkpoints ({g['checkpoints']}) resumes the whole state")
        elif mode == "eval" and not g["pretrained_model"]:
            logger.warning("Global.pretrained_model is not set: evaluating randomly initialized "
                           "weights")

        # CPU: own kernels for the depthwise/1x1 convs and BN+ReLU6 (Global.fast_cpu, default on).
        fast_cpu.setup(self.model, g, device=self.device, amp=bool(self.amp), world_size=self.world_size)
        if mode == "train":
            self._build_optimizer()

        if mode == "train" and config.get("EMA"):
            self.ema = build_ema(self.model, config["EMA"])
        # (the EMA copy is taken before AMP O2 casts the model, so it averages in float32)
        if self.amp and self.amp["level"] == "O2":
            if mode == "train":
                self.model, self.optimizer = paddle.amp.decorate(
                    models=self.model, optimizers=self.optimizer, level="O2",
                    save_dtype="float32")
            else:
                self.model = paddle.amp.decorate(models=self.model, level="O2",
                                                 save_dtype="float32")
        if mode == "train" and self.amp:
            self.scaler = build_scaler(self.amp)
        if mode == "train" and self.world_size > 1 and self.seed is not None:
            # As PaddleClas: after the model is built (the same weights on every rank), rank r
            # draws from seed + r, so the ranks' dropout and drop-path masks differ.
            logger.info(f"Set random seed to ({self.seed} + rank) for each of the "
                        f"{self.world_size} ranks")
            paddle.seed(self.seed + self.rank)
            np.random.seed(self.seed + self.rank)
            random.seed(self.seed + self.rank)
        if mode == "train" and g["checkpoints"]:
            checkpoint.resume_training(g["checkpoints"], self)
        if g["to_static"]:
            # backend=None: Paddle's own kernels. 3.3.1's default, "CINN", compiles with CINN on
            # a CUDA build (untested here); see README "GPU paths".
            self.model = paddle.jit.to_static(self.model, backend=None)
        if self.world_size > 1:
            self.model = paddle.DataParallel(self.model)
        if mode == "train" and self.rank == 0:
            save_config(config, os.path.join(self.output_dir, "config.yaml"))
        self._vdl = self._visualdl() if mode == "train" else None

    # ------------------------------------------------------------------ setup helpers

    def _check_sections(self):
        # Accepted so PaddleClas configs load, but only their defaults are implemented here.
        if self.g["use_dali"]:
            logger.warning("Global.use_dali: True, but DALI data loading is not available here "
                           "(it needs NVIDIA DALI and a GPU): using the built-in loader")
        if self.g["use_multilabel"]:
            raise ConfigError("Global.use_multilabel: True is not supported (single-label "
                              "classification only); set it to False")
        if self.g["eval_mode"] != "classification":
            raise ConfigError(f"Global.eval_mode expects 'classification', got {self.g['eval_mode']!r}")
        if self.mode == "train":
            for section in ("Loss", "Optimizer"):
                if not self.config.get(section):
                    raise ConfigError(f"the config has no {section} section, which training needs")
            if not (self.config["Loss"] or {}).get("Train"):
                raise ConfigError("Loss.Train is missing (e.g. [{CELoss: {weight: 1.0}}])")
        for key in ("epochs", "print_batch_step", "eval_interval", "update_freq"):
            if self.g[key] < 1:
                raise ConfigError(f"Global.{key} must be at least 1, got {self.g[key]}")
        if self.g["save_interval"] < 0:
            raise ConfigError(f"Global.save_interval must be >= 0, got {self.g['save_interval']}")
        if self.g["max_iters_per_epoch"] is not None and self.g["max_iters_per_epoch"] < 1:
            raise ConfigError("Global.max_iters_per_epoch must be at least 1 (or null), got "
                              f"{self.g['max_iters_per_epoch']}")
        if self.g["plot_curves"] and self.mode == "train":
            from ppcls.engine.curves import require_matplotlib

            require_matplotlib("Global.plot_curves")

    def _drop_train_topk(self, section):
        """Mixed labels have no top-k: as PaddleClas, drop TopkAcc from Metric.Train (warning)."""
        kept = []
        for item in section or []:
            if isinstance(item, dict) and "TopkAcc" in item:
                logger.warning(f"Metric.Train {item} is not computed: the training labels are mixed "
                               "by DataLoader.Train.dataset.batch_transform_ops (as PaddleClas)")
            else:
                kept.append(item)
        self.train_metrics = build_metrics(kept or None, "Metric.Train")

    def _amp_settings(self):
        return amp_settings(self.config, self.device)

    def _autocast(self, training=True):
        if not self.amp or (not training and not self.amp["use_fp16_test"]):
            return paddle.amp.auto_cast(enable=False)
        return paddle.amp.auto_cast(level=self.amp["level"],
                                    use_promote=self.amp.get("use_promote", True))

    def _build_optimizer(self):
        config, g = self.config, self.g
        iters = len(self.train_loader)
        if iters == 0:
            raise ConfigError("DataLoader.Train yields no batch: the training list is smaller than "
                              "one batch (lower DataLoader.Train.sampler.batch_size or turn "
                              "drop_last off)")
        if g["max_iters_per_epoch"]:
            iters = min(iters, g["max_iters_per_epoch"])
        self.iters_per_epoch = iters = self._accumulation(iters)
        self.optimizer, self.lr = build_optimizer(config["Optimizer"], g["epochs"],
                                                  iters // self.update_freq, self.model)

    def _accumulation(self, iters):
        """``Global.update_freq`` (gradient accumulation) as PaddleClas reads it: an epoch is
        cut to a multiple of it, the LR schedule counts optimizer steps (``iters // N``), and
        more than an epoch's batches falls back to 1 with a warning. Returns the batches an epoch."""
        self.update_freq = freq = self.g["update_freq"]
        if freq > iters:
            logger.warning(f"Global.update_freq ({freq}) is more than the {iters} batches of an "
                           "epoch: set to 1 (no gradient accumulation)")
            self.update_freq = freq = 1
        if freq > 1:
            logger.info(f"Global.update_freq: {freq} batches per optimizer step "
                        f"(effective batch {freq} x the loader's batch size)")
        return iters // freq * freq

    def _visualdl(self):
        if not self.g["use_visualdl"] or self.rank != 0:
            return None
        try:
            from visualdl import LogWriter
        except ImportError:
            logger.warning("Global.use_visualdl is on but the visualdl package is not installed; "
                           "no VisualDL logs (pip install visualdl)")
            return None
        return LogWriter(logdir=os.path.join(self.output_dir, "vdl"))

    @property
    def bare_model(self):
        """The model without its ``paddle.DataParallel`` wrapper."""
        return _bare(self.model)

    def _save(self, names, epoch):
        if not names:
            return
        self._check_params(epoch)
        # every rank's own generators (a collective, so before the rank-0 test); rank 0 writes
        rng_ranks = checkpoint.gather_rng_states(self.device, self.world_size)
        if self.rank != 0:
            return
        self.epoch = epoch
        for prefix in checkpoint.save_training([os.path.join(self.output_dir, n) for n in names],
                                               self, rng_ranks=rng_ranks):
            logger.info(f"Already save model in {prefix}")

    # ------------------------------------------------------------------ training

    def train_step(self, images, labels):
        """Forward and loss; returns ``(losses dict, logits)`` (backward is done by the caller)."""
        with self._autocast(training=True):
            logits = self.model(images)
            losses = self.train_loss(logits, labels)
        return losses, logits

    def _backward_and_update(self, loss, update=True):
        """Backward; with ``update`` (the last batch of an accumulation) also the optimizer
        step and clearing the gradients."""
        if self.scaler is not None:
            # step + update, not minimize: minimize fails on parameter groups (issue 14)
            self.scaler.scale(loss).backward()
            if update:
                self.scaler.step(self.optimizer)
                self.scaler.update()
        else:
            loss.backward()
            if update:
                self.optimizer.step()
        if update:
            self.optimizer.clear_grad()

    def _last_checkpoint_note(self):
        latest = os.path.join(self.output_dir, "latest")
        if os.path.exists(latest + ".pdstates"):
            return f"the last good checkpoint is {latest}"
        return "no checkpoint was written before it"

    def _grad_sync(self, update):
        """The context of one micro-batch's forward and backward: under ``paddle.DataParallel``
        with gradient accumulation, the first ``update_freq - 1`` micro-batches run in
        ``no_sync()`` (their gradients add up on each rank) and the last one all-reduces the
        sum, as PaddleClas develop does: one all-reduce an optimizer step, not one a batch."""
        if (update or self.update_freq == 1 or self.grad_sync_every_batch
                or not isinstance(self.model, paddle.DataParallel)):
            return contextlib.nullcontext()
        return self.model.no_sync()

    grad_sync_every_batch = False  # True: all-reduce every micro-batch (before issue 20; tests)

    def _check_params(self, epoch):
        """A step whose loss was finite can still leave NaN/Inf in the weights (an exploding
        gradient in its backward); such weights are never saved (one read of all flags; the
        weights are the same on every rank, so every rank stops)."""
        params = [(n, p) for n, p in self.bare_model.named_parameters()
                  if p.dtype in (paddle.float32, paddle.float16, paddle.bfloat16, paddle.float64)]
        if not params:
            return
        bad = paddle.stack([paddle.logical_not(paddle.isfinite(p).all()) for _, p in params]).numpy()
        if bad.any():
            names = [n for (n, _), b in zip(params, bad) if b]
            shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
            raise TrainingDiverged(
                f"the weights hold NaN/Inf after epoch {epoch} ({shown}) although the logged loss "
                f"was finite: training stopped before saving them; {self._last_checkpoint_note()} "
                "(lower Optimizer.lr.learning_rate, or set Optimizer.clip_norm?)")

    def _check_loss(self, loss_value, epoch, it, lr_now, since):
        if not math.isfinite(loss_value):
            where = (f"iteration {it}" if since >= it else
                     f"iteration {it} (non-finite first in iterations {since}..{it}: the loss is "
                     "read on the logged iterations, Global.print_batch_step)")
            raise TrainingDiverged(
                f"the loss is {loss_value} at epoch {epoch}, {where} "
                f"(lr {lr_now:.8g}): training stopped; "
                f"{self._last_checkpoint_note()} (lower Optimizer.lr.learning_rate?)")

    def train_epoch(self, epoch):
        g = self.g
        epochs = g["epochs"]
        if getattr(self, "train_mode", None) is not None:
            self.train_mode.before_epoch(self, epoch)  # may rebuild self.train_loader
        self.model.train()
        loader = self.train_loader
        sampler = getattr(loader, "batch_sampler", None)
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(epoch)
        total = self.iters_per_epoch
        running = distributed.RunningSums()
        checked = 0  # the first iteration not yet covered by a finite-loss check
        batch_cost, reader_cost = AverageMeter(), AverageMeter()
        tic = time.time()
        lr_now = self.lr.get_lr()
        for it, (images, labels, indices) in enumerate(loader):
            if it >= total:
                break
            reader_cost.update(time.time() - tic)
            n = int(images.shape[0])
            lr_now = self.lr.get_lr()  # the rate this step uses
            logged = it % g["print_batch_step"] == 0
            # Gradient accumulation: each of N batches adds the gradient of loss / N.
            update = (it + 1) % self.update_freq == 0
            with self._grad_sync(update):
                losses, logits = self.train_step(images, labels)
                loss = losses["loss"]
                if self.train_metrics.metrics:
                    running.add(self.train_metrics(logits.detach(), labels), n, count=False)
                running.add(losses, n)
                if logged:
                    means = running.means(self.world_size)
                    self._check_loss(means["loss"], epoch, it, lr_now, checked)
                    checked = it + 1
                self._backward_and_update(loss / self.update_freq if self.update_freq > 1 else loss,
                                          update)
            if update and not self.lr.by_epoch:
                self.lr.scheduler.step()
            if update and self.ema is not None:
                self.ema.update(_bare(self.model))
            profiler.step()  # -p/--profiler_options (no-op without)
            for hook in self.hooks:
                hook.after_step(self, {"epoch": epoch, "iter": it, "indices": indices,
                                       "labels": labels})

            batch_cost.update(time.time() - tic)

            if logged:
                metric_msg = ", ".join(f"{k}: {v:.5f}" for k, v in means.items())
                ips = n / batch_cost.avg if batch_cost.avg > 0 else 0.0
                eta = ((epochs - epoch) * total + (total - it - 1)) * batch_cost.avg
                logger.info(f"[Train][Epoch {epoch}/{epochs}][Iter: {it}/{total}]"
                            f"lr({self.lr.name}): {lr_now:.8f}, {metric_msg}, "
                            f"batch_cost: {batch_cost.avg:.5f}s, reader_cost: {reader_cost.avg:.5f}, "
                            f"ips: {ips:.5f} samples/s, eta: {_fmt_eta(eta)}")
                if self._vdl is not None:
                    step = (epoch - 1) * total + it
                    self._vdl.add_scalar("train/lr", lr_now, step)
                    for k, v in means.items():
                        self._vdl.add_scalar(f"train/{k}", v, step)
                batch_cost, reader_cost = AverageMeter(), AverageMeter()
            tic = time.time()
        means = running.means(self.world_size)
        if means and checked < total:
            self._check_loss(means["loss"], epoch, total - 1, lr_now, checked)
        summary = ", ".join(f"{k}: {v:.5f}" for k, v in means.items())
        logger.info(f"[Train][Epoch {epoch}/{epochs}][Avg]{summary}")
        return means

    def _should_eval(self, epoch):
        g = self.g
        if not g["eval_during_train"] or self.eval_loader is None:
            return False
        if epoch < g["start_eval_epoch"]:  # PaddleClas: evaluates from start_eval_epoch on
            return False
        return epoch % g["eval_interval"] == 0 or epoch == g["epochs"]

    def train(self):
        g = self.g
        epochs = g["epochs"]
        if self.start_epoch >= epochs:
            logger.info(f"Nothing to train: the checkpoint is at epoch {self.start_epoch} and "
                        f"Global.epochs is {epochs}")
            return self.best_metric
        logger.info(f"Training {self.arch_name} for epochs {self.start_epoch + 1}..{epochs}, "
                    f"{self.iters_per_epoch} iterations an epoch, on {self.world_size} "
                    f"{self.device} process(es); output in {self.output_dir}")
        logger.info(distributed.LOSS_LOG_NOTE)
        for epoch in range(self.start_epoch + 1, epochs + 1):
            self.train_epoch(epoch)
            if self.lr.by_epoch:
                self.lr.scheduler.step()
            names = []
            if self._should_eval(epoch):
                results = self.evaluate(epoch)
                metric = results.get(self.eval_metrics.names[0]) if self.eval_metrics.names else None
                if metric is not None and self.ema is not None:
                    # as PaddleClas: the EMA weights are evaluated too; the best of both counts
                    ema_metric = self.evaluate(epoch, model=self.ema.model)[self.eval_metrics.names[0]]
                    if self.best_metric_ema is None or ema_metric > self.best_metric_ema:
                        self.best_metric_ema = ema_metric
                    logger.info(f"[Eval][Epoch {epoch}][best metric ema: {self.best_metric_ema:.5f}]")
                    if self._vdl is not None:
                        self._vdl.add_scalar("eval/" + self.eval_metrics.names[0] + "_ema",
                                             ema_metric, epoch)
                    metric = max(metric, ema_metric)
                if metric is not None:
                    self.metric_history.append((epoch, metric))
                    if self.best_metric is None or metric > self.best_metric:
                        self.best_metric, self.best_epoch = metric, epoch
                        if g["save_best_model"]:
                            names.append("best_model")
                    logger.info(f"[Eval][Epoch {epoch}][best metric: {self.best_metric:.5f}]")
                    if self._vdl is not None:
                        self._vdl.add_scalar("eval/" + self.eval_metrics.names[0], metric, epoch)
            if g["save_interval"] and epoch % g["save_interval"] == 0:
                names.append(f"epoch_{epoch}")
            names.append("latest")
            self._save(names, epoch)
        if self.best_metric is not None:
            logger.info(f"Best {self.eval_metrics.names[0]}: {self.best_metric:.5f} "
                        f"(epoch {self.best_epoch})")
        if g["plot_curves"] and self.rank == 0:
            from ppcls.engine.curves import plot_log

            png = plot_log(os.path.join(self.output_dir, "train.log"),
                           os.path.join(self.output_dir, "curves.png"))
            logger.info(f"Training curves written to {png}")
        return self.best_metric

    # ------------------------------------------------------------------ evaluation

    @staticmethod
    def _log_eval_iter(epoch, it, total, n, current_loss, running_metrics, batch_cost, reader_cost):
        """PaddleClas's eval iteration line: this batch's losses, the metrics averaged over the
        images so far (this process's), timings averaged from the 6th batch on, images/sec."""
        msg = ", ".join([f"{k}: {v:.5f}" for k, v in current_loss.items()]
                        + [f"{k}: {v:.5f}" for k, v in running_metrics.items()])
        ips = n / batch_cost.avg if batch_cost.avg > 0 else 0.0
        logger.info(f"[Eval][Epoch {epoch}][Iter: {it}/{total}]{msg}{', ' if msg else ''}"
                    f"batch_cost: {batch_cost.avg:.5f}s, reader_cost: {reader_cost.avg:.5f}, "
                    f"ips: {ips:.5f} images/sec")

    @paddle.no_grad()
    def evaluate(self, epoch=0, model=None):
        """Evaluate ``model`` (default: the trained model) on ``DataLoader.Eval``; returns
        ``{"loss": ..., "CELoss": ..., "top1": ..., ...}`` over the whole set, all ranks."""
        model = _bare(self.model) if model is None else model
        if self.world_size > 1 and self.mode == "train":
            distributed.sync_statistics(model)
        was_training = model.training
        model.eval()
        loader = self.eval_loader
        multi = self.world_size > 1
        total = len(loader)
        loss_meters = {}
        hit_sums, seen = {}, 0
        all_idx, all_hits = [], []
        names = self.eval_metrics.names
        batch_cost, reader_cost = AverageMeter(), AverageMeter()
        current_loss, running_hits = {}, dict.fromkeys(names, 0.0)
        tic = time.time()
        for it, (images, labels, indices) in enumerate(loader):
            if it == 5:  # as PaddleClas: the timings leave out the first batches
                batch_cost, reader_cost = AverageMeter(), AverageMeter()
            reader_cost.update(time.time() - tic)
            n = int(images.shape[0])
            with self._autocast(training=False):
                logits = model(images)
            logits = logits.astype("float32")
            if self.eval_loss is not None:
                for name, value in self.eval_loss(logits, labels).items():
                    current_loss[name] = float(value)
                    loss_meters.setdefault(name, AverageMeter()).update(float(value), n)
            hits = self.eval_metrics(logits, labels)
            for k in names:
                running_hits[k] += float(hits[k].sum())
            if multi:  # each sample counted once over the padded shards, by its index
                all_idx.append(np.asarray(indices, dtype="int64"))
                all_hits.append(np.stack([hits[k].numpy() for k in names], axis=1)
                                if names else np.zeros((n, 0), "float32"))
            else:
                for k in names:
                    hit_sums[k] = hit_sums.get(k, 0.0) + float(hits[k].sum())
            seen += n
            batch_cost.update(time.time() - tic)
            if it % self.g["print_batch_step"] == 0:
                self._log_eval_iter(epoch, it, total, n, current_loss,
                                    {k: running_hits[k] / seen for k in names},
                                    batch_cost, reader_cost)
            tic = time.time()

        results = {}
        if multi:
            results.update(distributed.reduce_losses(loss_meters))
            results.update(distributed.reduce_hits(all_idx, all_hits, names))
        else:
            results.update({k: m.avg for k, m in loss_meters.items()})
            results.update({k: hit_sums.get(k, 0.0) / seen if seen else 0.0 for k in names})
        msg = ", ".join(f"{k}: {v:.5f}" for k, v in results.items() if k != "count")
        logger.info(f"[Eval][Epoch {epoch}][Avg]{msg}")
        if was_training:
            model.train()
        return results
