"""``Global.train_mode: progressive``: EfficientNetV2's progressive training, as PaddleClas runs it.

Training is cut into four stages of equal length: with ``E = Global.epochs`` the stage ends are
``int(E * k / 4)`` for k = 1..4, and epoch ``e`` (counted from 1) is in stage ``s`` (0..3) = the
number of stage ends it is past. At the first epoch of a stage (and at the first epoch a run
trains, also after a resume) three things take the stage's value:

- the train image size: the ``size`` of the ``RandCropImage`` that has ``progress_size``
  (one size per stage);
- the RandAugment magnitude: the ``magnitude`` of the op that has ``progress_magnitude``
  (``RandAugmentV2``);
- the dropout: every layer of the model that declares ``dropout_rate`` as a list (one rate per
  stage) sets it on its ``nn.Dropout`` layers (EfficientNetV2-S's head in PaddleClas;
  ``Arch.dropout: [0.1, 0.2, 0.3, 0.3]`` for MobileNeXt).

The train loader is then rebuilt from a copy of ``DataLoader.Train`` with those values (the
config itself is not changed); batches, their number and each sample's seed (seed, epoch,
index) stay as they were. A log line per epoch names the stage, as PaddleClas's does:
``Training stage: [2/4](random_aug_magnitude=8.33, train_image_size=214, dropout_rate=0.2)``
(``dropout_rate=None`` when the model declares no list of rates).
Of the two op lists a recipe needs at least one; a list with fewer than four values is an
error (PaddleClas indexes it by stage).
"""

import copy

import paddle

from ppcls.utils import logger
from ppcls.utils.errors import ConfigError
from ppcls.utils.global_config import global_value

NUM_STAGES = 4
MODES = (None, "progressive")


def stage_of(epoch, epochs, num_stages=NUM_STAGES):
    """The stage (0-based) of ``epoch`` (1-based) in a run of ``epochs`` epochs."""
    ends = [int(epochs * (k + 1) / num_stages) for k in range(num_stages)]
    return min(sum(epoch > end for end in ends), num_stages - 1)


def _find(ops, key):
    """(position, name, params) of the first op of ``ops`` whose parameters have ``key``."""
    for i, item in enumerate(ops or []):
        if isinstance(item, dict) and len(item) == 1:
            (name, params), = item.items()
            if isinstance(params, dict) and params.get(key) is not None:
                return i, name, params
    return None


class ProgressiveTraining:
    """The per-epoch hook of ``Global.train_mode: progressive`` (see the module docstring).
    ``build_loader(config)`` builds the train loader from a config (the stage's copy); the
    engine passes ``build_dataloader`` with its device and seed."""

    def __init__(self, config, build_loader=None):
        self.config, self.build_loader = config, build_loader
        self.epochs = global_value(config, "epochs")
        where = "DataLoader.Train.dataset.transform_ops"
        train = (config.get("DataLoader") or {}).get("Train") or {}
        ops = (train.get("dataset") or {}).get("transform_ops")
        self.size_op = _find(ops, "progress_size")
        self.magnitude_op = _find(ops, "progress_magnitude")
        if self.size_op is None and self.magnitude_op is None:
            raise ConfigError(f"Global.train_mode: progressive needs 'progress_size' on RandCropImage "
                              f"or 'progress_magnitude' on RandAugmentV2 in {where} (one value per "
                              f"stage, {NUM_STAGES} stages)")
        for found, key in ((self.size_op, "progress_size"), (self.magnitude_op, "progress_magnitude")):
            if found is not None:
                i, name, params = found
                values = params[key]
                if not isinstance(values, (list, tuple)) or len(values) < NUM_STAGES:
                    raise ConfigError(f"{where}.{i}.{name}.{key} expects a list of {NUM_STAGES} values "
                                      f"(one per stage of progressive training), got {values!r}")
        self.stage = None

    def settings(self, stage):
        """``{"random_aug_magnitude": ..., "train_image_size": ...}`` of ``stage`` (present ops only)."""
        out = {}  # in the order of PaddleClas's log line
        if self.magnitude_op is not None:
            out["random_aug_magnitude"] = self.magnitude_op[2]["progress_magnitude"][stage]
        if self.size_op is not None:
            out["train_image_size"] = self.size_op[2]["progress_size"][stage]
        return out

    def stage_config(self, stage):
        """A copy of the whole config with ``DataLoader.Train`` set for ``stage``."""
        config = copy.deepcopy(self.config)
        ops = config["DataLoader"]["Train"]["dataset"]["transform_ops"]
        values = self.settings(stage)
        for found, key, value in ((self.size_op, "size", values.get("train_image_size")),
                                  (self.magnitude_op, "magnitude", values.get("random_aug_magnitude"))):
            if found is not None:
                i, name, _ = found
                ops[i][name][key] = value
        return config

    @staticmethod
    def set_dropout(model, stage):
        """Set the stage's rate on layers declaring ``dropout_rate`` as a list; returns the rate
        (None when no layer declares one)."""
        rate = None
        for layer in [model] + model.sublayers():
            rates = getattr(layer, "dropout_rate", None)
            if isinstance(rates, (list, tuple)) and rates:
                rate = rates[min(stage, len(rates) - 1)]
                for sub in layer.sublayers():
                    if isinstance(sub, paddle.nn.Dropout):
                        sub.p = rate
        return rate

    def before_epoch(self, engine, epoch):
        stage = stage_of(epoch, self.epochs)
        values = self.settings(stage)
        if self.stage != stage:
            values["dropout_rate"] = self.set_dropout(engine.bare_model, stage)
            if self.build_loader is None:
                raise RuntimeError("ProgressiveTraining needs build_loader to rebuild the train loader")
            engine.train_loader = self.build_loader(self.stage_config(stage))
            self.stage, self.dropout = stage, values["dropout_rate"]
        values["dropout_rate"] = self.dropout
        logger.info(f"Training stage: [{stage + 1}/{NUM_STAGES}]("
                    + ", ".join(f"{k}={v}" for k, v in values.items()) + ")")


def build_train_mode(config, build_loader):
    """The hook of ``Global.train_mode`` (None for ordinary training); ``build_loader`` as
    for ``ProgressiveTraining``."""
    mode = global_value(config, "train_mode")
    if mode not in MODES:
        raise ConfigError(f"Global.train_mode expects null or 'progressive', got {mode!r}")
    return ProgressiveTraining(config, build_loader) if mode == "progressive" else None
