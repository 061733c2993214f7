"""Training curves from a run's ``train.log``: loss, learning rate and top-1 against epochs.

The log is parsed, not the checkpoints, so any run (also a finished or a crashed one, also a
PaddleClas one) can be plotted. A log that holds several runs (a resumed run appends to it)
keeps, for each epoch, the last values written. matplotlib is an optional extra.
"""

import os
import re

from ppcls.utils.errors import ConfigError, DataError

_NUM = r"([-+0-9.eE]+|nan|inf|-inf)"
_ITER = re.compile(r"\[Train\]\[Epoch (\d+)/(\d+)\]\[Iter: (\d+)/(\d+)\]lr\([^)]*\): " + _NUM)
_TRAIN_AVG = re.compile(r"\[Train\]\[Epoch (\d+)/\d+\]\[Avg\](.*)$")
_EVAL_AVG = re.compile(r"\[Eval\]\[Epoch (\d+)\]\[Avg\](.*)$")
_PAIR = re.compile(r"(\w+): " + _NUM)


def require_matplotlib(what="plotting"):
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise ConfigError(f"{what} needs matplotlib, which is not installed "
                          "(pip install matplotlib)") from None


def _pairs(text):
    return {k: float(v) for k, v in _PAIR.findall(text)}


def parse_log(path):
    """``{"lr": [(x, lr)], "train": {epoch: {...}}, "eval": {epoch: {...}}}`` from a train.log;
    ``x`` is the training progress in epochs (epoch - 1 + iter / iters), so epoch N's summary
    values sit at x = N, where epoch N ends."""
    if not os.path.isfile(path):
        raise DataError(f"log file not found: {path}")
    lr, train, evals = {}, {}, {}
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            m = _ITER.search(line)
            if m:
                epoch, it, total = int(m.group(1)), int(m.group(3)), int(m.group(4))
                lr[(epoch, it)] = (epoch - 1 + it / max(total, 1), float(m.group(5)))
                continue
            m = _TRAIN_AVG.search(line)
            if m:
                train[int(m.group(1))] = _pairs(m.group(2))
                continue
            m = _EVAL_AVG.search(line)
            if m and int(m.group(1)) > 0:
                evals[int(m.group(1))] = _pairs(m.group(2))
    if not (lr or train or evals):
        raise DataError(f"{path} has no [Train]/[Eval] log lines to plot")
    return {"lr": sorted(lr.values()), "train": train, "eval": evals}


def plot_log(log_path, png_path, metric="top1"):
    """Write a PNG with three panels (loss, learning rate, ``metric``); returns ``png_path``."""
    require_matplotlib("plotting training curves")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = parse_log(log_path)
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    train, evals = data["train"], data["eval"]

    ax = axes[0]
    epochs = sorted(e for e in train if "loss" in train[e])
    ax.plot(epochs, [train[e]["loss"] for e in epochs], "o-", label="train loss")
    ev = sorted(e for e in evals if "loss" in evals[e])
    if ev:
        ax.plot(ev, [evals[e]["loss"] for e in ev], "s-", label="eval loss")
    ax.set_title("loss")

    ax = axes[1]
    if data["lr"]:
        xs, ys = zip(*data["lr"])
        ax.plot(xs, ys, ".-", label="lr")
    ax.set_title("learning rate")

    ax = axes[2]
    tr = sorted(e for e in train if metric in train[e])
    if tr:
        ax.plot(tr, [train[e][metric] for e in tr], "o-", label=f"train {metric}")
    ev = sorted(e for e in evals if metric in evals[e])
    if ev:
        ax.plot(ev, [evals[e][metric] for e in ev], "s-", label=f"eval {metric}")
    ax.set_title(metric)

    for ax in axes:
        ax.set_xlabel("epoch")
        ax.grid(True, alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
    fig.suptitle(os.path.basename(os.path.dirname(os.path.abspath(log_path))) or log_path)
    fig.tight_layout()
    folder = os.path.dirname(os.path.abspath(png_path))
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, f".{os.path.basename(png_path)}.tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, png_path)
    return png_path
