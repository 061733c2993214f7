"""Training and evaluation: ``Engine`` plus the two entry points the tools call."""

from ppcls.engine.ema import ModelEMA
from ppcls.engine.engine import Engine, TrainingDiverged


def train(config):
    """Train as ``config`` says; returns the best eval metric (or None)."""
    engine = Engine(config, mode="train")
    try:
        return engine.train()
    finally:
        if engine._run_lock is not None:
            engine._run_lock.release()


def evaluate(config):
    """Evaluate ``Global.pretrained_model`` on ``DataLoader.Eval``; returns the results dict."""
    return Engine(config, mode="eval").evaluate(epoch=0)


__all__ = ["Engine", "ModelEMA", "TrainingDiverged", "train", "evaluate"]
