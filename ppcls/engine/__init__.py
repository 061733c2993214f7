"""Training and evaluation: ``Engine`` plus the two entry points the tools call."""

from ppcls.engine.engine import Engine, ModelEMA, TrainingDiverged


def train(config):
    """Train as ``config`` says; returns the best eval metric (or None)."""
    return Engine(config, mode="train").train()


def evaluate(config):
    """Evaluate ``Global.pretrained_model`` on ``DataLoader.Eval``; returns the results dict."""
    return Engine(config, mode="eval").evaluate(epoch=0)


__all__ = ["Engine", "ModelEMA", "TrainingDiverged", "train", "evaluate"]
