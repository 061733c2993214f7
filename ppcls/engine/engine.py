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
reductions: ``ppcls.engine.distributed``; the loop's hooks (LR stepping, EMA, log lines,
evaluation, checkpoints, ``Global.hooks``): ``ppcls.engine.hooks``; ``Global`` keys and their defaults: ``ppcls.utils.global_config``.
"""

import contextlib
import functools
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
from ppcls.engine.hooks import AverageMeter, build_hooks, call_hooks
from ppcls.engine.progressive import build_train_mode
from ppcls.ops import fast_cpu
from ppcls.loss import build_loss
from ppcls.metric import build_metrics
from ppcls.optimizer import build_optimizer
from ppcls.utils import logger
from ppcls.utils.cli import handle_sigterm
from ppcls.utils.config import print_config, save_config
from ppcls.utils.errors import ConfigError, UserError
from ppcls.utils.global_config import ENGINE_KEYS, select_device, with_defaults



class TrainingDiverged(UserError):
    """The loss became NaN or Inf."""


def _seed_all(seed):
    paddle.seed(seed)
    np.random.seed(seed)
    random.seed(seed)


def _bare(model):
    return model._layers if isinstance(model, paddle.DataParallel) else model


class Engine:
    """Built from the config by the builders below, in this order (each reads what the
    earlier ones set); ``train()`` is the loop of ``ppcls.engine.hooks``."""

    def __init__(self, config, mode="train"):
        if mode not in ("train", "eval"):
            raise ValueError(f"mode must be 'train' or 'eval', got {mode!r}")
        self.config, self.mode = config, mode
        handle_sigterm()  # one line and exit 143, not Paddle's fatal-error dump
        self._read_global()
        self._open_run()
        self._setup_device()
        self._init_state()
        self._build_losses_and_metrics()  # a typo there should not wait for the data
        self.hooks = build_hooks(self.config) if mode == "train" else []
        self._build_loaders()  # the data is checked (a bad list file fails fast) ...
        self._build_model()  # ... then the model is built
        if mode == "train":
            self._build_optimizer()
            self._build_ema()
        self._apply_amp()
        if mode == "train":
            self._seed_ranks()
        if mode == "train" and self.g["checkpoints"]:
            self._resume(self.g["checkpoints"])
        self._wrap_model()
        if mode == "train" and self.rank == 0:
            save_config(self.config, os.path.join(self.output_dir, "config.yaml"))
        self._vdl = self._visualdl() if mode == "train" else None

    # ------------------------------------------------------------------ builders

    def _read_global(self):
        # the resolved config is a new object (the caller's is left as given): Global with the
        # table's defaults of ENGINE_KEYS (and the device that runs); config.yaml records it
        g = dict(self.config.get("Global") or {})
        self.config = dict(self.config, Global=g)
        self._requested_device = g.get("device")
        self.g = with_defaults(g, ENGINE_KEYS)
        if "Arch" not in self.config or "name" not in (self.config["Arch"] or {}):
            raise ConfigError("the config has no Arch.name (e.g. Arch: {name: MobileNeXt_x1_0})")
        self.arch_name = self.config["Arch"]["name"]
        self.output_dir = os.path.join(g["output_dir"], self.arch_name)
        self.world_size, self.rank = distributed.world()

    def _open_run(self):
        """The run folder (training: one run per folder, an earlier one moved aside), the log."""
        self._run_lock, notes = None, []
        if self.mode == "train":
            self._run_lock, notes = run_dir.prepare(self.output_dir, bool(self.g["checkpoints"]),
                                                    self.rank)
        logger.init_logger(os.path.join(self.output_dir, f"{self.mode}.log"))
        for note in notes:
            logger.info(note)
        print_config(self.config)
        self._check_sections()

    def _setup_device(self):
        self.device = self.g["device"] = select_device(self._requested_device)
        if self.world_size > 1:
            paddle.distributed.init_parallel_env()
        self.seed = self.g["seed"]
        if self.seed is not None:
            _seed_all(self.seed)
        self.amp = self._amp_settings()

    def _init_state(self):
        self.scaler = self.ema = self.best_metric_ema = None
        self.start_epoch, self.best_metric, self.best_epoch = 0, None, None
        self.metric_history = []

    def _build_losses_and_metrics(self):
        loss_cfg = self.config.get("Loss") or {}
        metric_cfg = self.config.get("Metric") or {}
        class_num = (self.config.get("Arch") or {}).get("class_num", 1000)
        if self.mode == "train":
            self.train_loss = build_loss(loss_cfg["Train"], "Loss.Train")
            self.train_metrics = build_metrics(metric_cfg.get("Train"), "Metric.Train", class_num)
        self.eval_loss = build_loss(loss_cfg["Eval"], "Loss.Eval") if loss_cfg.get("Eval") else None
        self.eval_metrics = build_metrics(metric_cfg.get("Eval"), "Metric.Eval", class_num)

    def _build_loaders(self):
        from ppcls.data import build_dataloader

        config, g = self.config, self.g
        data_cfg = config.get("DataLoader") or {}
        self.eval_loader = None
        wanted = "Train" if self.mode == "train" else "Eval"
        if wanted not in data_cfg:
            raise ConfigError(f"DataLoader.{wanted} is missing")
        if self.mode == "train":
            build_train = functools.partial(build_dataloader, mode="Train", device=self.device,
                                            seed=self.seed)
            self.train_loader = build_train(config)
            # Global.train_mode: progressive (rebuilds the train loader per stage), or None
            self.train_mode = build_train_mode(config, build_train)
            if getattr(self.train_loader, "batch_ops", None):
                self._drop_train_topk((config.get("Metric") or {}).get("Train"))
            if g["eval_during_train"] and "Eval" not in data_cfg:
                logger.warning("Global.eval_during_train is on but DataLoader.Eval is missing: "
                               "no evaluation during training")
                g["eval_during_train"] = False
        if self.mode == "eval" or g["eval_during_train"]:
            self.eval_loader = build_dataloader(config, "Eval", device=self.device, seed=self.seed)

    def _build_model(self):
        """The model, its pretrained weights, and (CPU) the fast kernels."""
        g, train = self.g, self.mode == "train"
        self.model = build_model(self.config)
        if g["pretrained_model"] and not (train and g["checkpoints"]):
            from ppcls.utils.weights import load_pretrained

            # Fine-tuning (train): a classifier of another class_num keeps its initialisation.
            load_pretrained(self.model, g["pretrained_model"], skip_mismatched_head=train)
            logger.info(f"Loaded pretrained weights from {g['pretrained_model']}")
        elif g["pretrained_model"]:
            logger.warning(f"Global.pretrained_model ({g['pretrained_model']}) is ignored: "
                           f"Global.checkpoints ({g['checkpoints']}) resumes the whole state")
        elif not train:
            logger.warning("Global.pretrained_model is not set: evaluating randomly initialized "
                           "weights")
        # CPU: own kernels for the depthwise/1x1 convs and BN+ReLU6 (Global.fast_cpu, default on).
        fast_cpu.setup(self.model, g, device=self.device, amp=bool(self.amp),
                       world_size=self.world_size)

    def _build_ema(self):
        # (the EMA copy is taken before AMP O2 casts the model, so it averages in float32)
        if self.config.get("EMA"):
            self.ema = build_ema(self.model, self.config["EMA"])

    def _apply_amp(self):
        if self.amp and self.amp["level"] == "O2":
            if self.mode == "train":
                self.model, self.optimizer = paddle.amp.decorate(
                    models=self.model, optimizers=self.optimizer, level="O2",
                    save_dtype="float32")
            else:
                self.model = paddle.amp.decorate(models=self.model, level="O2",
                                                 save_dtype="float32")
        if self.mode == "train" and self.amp:
            self.scaler = build_scaler(self.amp)

    def _seed_ranks(self):
        if self.world_size > 1 and self.seed is not None:
            # As PaddleClas: after the model is built (the same weights on every rank), rank r
            # draws from seed + r, so the ranks' dropout and drop-path masks differ.
            logger.info(f"Set random seed to ({self.seed} + rank) for each of the "
                        f"{self.world_size} ranks")
            _seed_all(self.seed + self.rank)

    def _wrap_model(self):
        if self.g["to_static"]:
            # backend=None: Paddle's own kernels. 3.3.1's default, "CINN", compiles with CINN on
            # a CUDA build (untested here); see README "GPU paths".
            self.model = paddle.jit.to_static(self.model, backend=None)
        if self.world_size > 1:
            self.model = paddle.DataParallel(self.model)

    # ------------------------------------------------------------------ setup helpers

    def _check_sections(self):
        # Accepted so PaddleClas configs load, but only their defaults are implemented here
        # (Global.use_dali: ppcls.data.dali, chosen where the train loader is built).
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
        prefixes = [os.path.join(self.output_dir, n) for n in names]
        call_hooks(self.hooks, "before_save", self, prefixes)
        meta = {"epoch": epoch, "best_metric": self.best_metric, "best_epoch": self.best_epoch,
                "metric_history": self.metric_history, "arch": self.arch_name}
        for prefix in checkpoint.save_training(
                prefixes, meta, model=self.bare_model, optimizer=self.optimizer, lr=self.lr,
                device=self.device, ema=self.ema, scaler=self.scaler, rng_ranks=rng_ranks):
            logger.info(f"Already save model in {prefix}")

    def _resume(self, path):
        """``Global.checkpoints``: each component takes its state back; the run's counters come
        back as the record the checkpoint returns; then the ``after_load`` hooks."""
        meta = checkpoint.resume_training(
            path, model=self.bare_model, optimizer=self.optimizer, lr=self.lr, device=self.device,
            config=self.config, ema=self.ema, scaler=self.scaler, rank=self.rank,
            world_size=self.world_size)
        self.start_epoch, self.best_metric = meta["epoch"], meta["best_metric"]
        self.best_epoch, self.metric_history = meta["best_epoch"], meta["metric_history"]
        call_hooks(self.hooks, "after_load", self, path)

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
        if checkpoint.complete_checkpoint(latest):
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
        """One epoch: ``before_epoch`` hooks, then each step between ``before_step`` and
        ``after_step`` hooks, then the epoch's summary line; returns the epoch's means."""
        call_hooks(self.hooks, "before_epoch", self, epoch)  # may rebuild self.train_loader
        self.model.train()
        loader = self.train_loader
        sampler = getattr(loader, "batch_sampler", None)
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(epoch)
        total = self.iters_per_epoch
        running = distributed.RunningSums()
        checked = 0  # the first iteration not yet covered by a finite-loss check
        lr_now = self.lr.get_lr()
        for it, (images, labels, indices) in enumerate(loader):
            if it >= total:
                break
            step = {"epoch": epoch, "iter": it, "indices": indices, "labels": labels,
                    "batch_size": int(images.shape[0]), "lr": self.lr.get_lr(),
                    # gradient accumulation: each of N batches adds the gradient of loss / N
                    "update": (it + 1) % self.update_freq == 0, "means": None}
            call_hooks(self.hooks, "before_step", self, step)
            lr_now = step["lr"]  # the rate this step uses
            checked = self._run_step(images, labels, step, running, checked)
            call_hooks(self.hooks, "after_step", self, step)
        means = running.means(self.world_size)
        if means and checked < total:
            self._check_loss(means["loss"], epoch, total - 1, lr_now, checked)
        summary = ", ".join(f"{k}: {v:.5f}" for k, v in means.items())
        logger.info(f"[Train][Epoch {epoch}/{self.g['epochs']}][Avg]{summary}")
        return means

    def _run_step(self, images, labels, step, running, checked):
        """Forward, loss (checked on logged iterations), backward and (on ``step["update"]``)
        the optimizer step; returns the first iteration not yet covered by a loss check."""
        it, update = step["iter"], step["update"]
        with self._grad_sync(update):
            losses, logits = self.train_step(images, labels)
            loss = losses["loss"]
            if self.train_metrics.metrics:
                running.add(self.train_metrics(logits.detach(), labels), step["batch_size"],
                            count=False)
            running.add(losses, step["batch_size"])
            if it % self.g["print_batch_step"] == 0:
                step["means"] = running.means(self.world_size)
                self._check_loss(step["means"]["loss"], step["epoch"], it, step["lr"], checked)
                checked = it + 1
            self._backward_and_update(loss / self.update_freq if self.update_freq > 1 else loss,
                                      update)
        return checked

    def _should_eval(self, epoch):
        g = self.g
        if not g["eval_during_train"] or self.eval_loader is None:
            return False
        if epoch < g["start_eval_epoch"]:  # PaddleClas: evaluates from start_eval_epoch on
            return False
        return epoch % g["eval_interval"] == 0 or epoch == g["epochs"]

    def train(self):
        """The loop: ``before_run``; each epoch, :meth:`train_epoch` then ``after_epoch``
        (LR by epoch, evaluation, checkpoints); ``after_run``. Returns the best eval metric."""
        epochs = self.g["epochs"]
        if self.start_epoch >= epochs:
            logger.info(f"Nothing to train: the checkpoint is at epoch {self.start_epoch} and "
                        f"Global.epochs is {epochs}")
            return self.best_metric
        logger.info(f"Training {self.arch_name} for epochs {self.start_epoch + 1}..{epochs}, "
                    f"{self.iters_per_epoch} iterations an epoch, on {self.world_size} "
                    f"{self.device} process(es); output in {self.output_dir}")
        logger.info(distributed.LOSS_LOG_NOTE)
        call_hooks(self.hooks, "before_run", self)
        for epoch in range(self.start_epoch + 1, epochs + 1):
            outputs = {"train": self.train_epoch(epoch)}
            call_hooks(self.hooks, "after_epoch", self, epoch, outputs)
        call_hooks(self.hooks, "after_run", self)
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
        total = len(loader)
        tally = _EvalTally(self.eval_metrics.names, self.world_size > 1)
        batch_cost, reader_cost = AverageMeter(), AverageMeter()
        tic = time.time()
        for it, (images, labels, indices) in enumerate(loader):
            if it == 5:  # as PaddleClas: the timings leave out the first batches
                batch_cost, reader_cost = AverageMeter(), AverageMeter()
            reader_cost.update(time.time() - tic)
            n = int(images.shape[0])
            with self._autocast(training=False):
                logits = model(images)
            logits = logits.astype("float32")
            losses = self.eval_loss(logits, labels) if self.eval_loss is not None else {}
            tally.add(losses, self.eval_metrics(logits, labels), indices, n)
            batch_cost.update(time.time() - tic)
            if it % self.g["print_batch_step"] == 0:
                self._log_eval_iter(epoch, it, total, n, tally.current_loss, tally.running(),
                                    batch_cost, reader_cost)
            tic = time.time()
        results = tally.results()
        msg = ", ".join(f"{k}: {v:.5f}" for k, v in results.items() if k != "count")
        logger.info(f"[Eval][Epoch {epoch}][Avg]{msg}")
        if was_training:
            model.train()
        return results


class _EvalTally:
    """What an evaluation adds up: this batch's losses, the loss means, the hits of each metric
    (on more than one rank also each sample's index and hits, counted once over the padded
    shards by :func:`distributed.reduce_hits`)."""

    def __init__(self, names, multi):
        self.names, self.multi = names, multi
        self.current_loss, self.loss_meters = {}, {}
        self.hits, self.seen = dict.fromkeys(names, 0.0), 0
        self.all_idx, self.all_hits = [], []

    def add(self, losses, hits, indices, n):
        for name, value in losses.items():
            self.current_loss[name] = float(value)
            self.loss_meters.setdefault(name, AverageMeter()).update(float(value), n)
        for k in self.names:
            self.hits[k] += float(hits[k].sum())
        if self.multi:
            self.all_idx.append(np.asarray(indices, dtype="int64"))
            self.all_hits.append(np.stack([hits[k].numpy() for k in self.names], axis=1)
                                 if self.names else np.zeros((n, 0), "float32"))
        self.seen += n

    def running(self):
        """The metrics averaged over the images so far (this process's)."""
        return {k: self.hits[k] / self.seen for k in self.names}

    def results(self):
        if self.multi:
            return {**distributed.reduce_losses(self.loss_meters),
                    **distributed.reduce_hits(self.all_idx, self.all_hits, self.names)}
        results = {k: m.avg for k, m in self.loss_meters.items()}
        results.update({k: self.hits[k] / self.seen if self.seen else 0.0 for k in self.names})
        return results
