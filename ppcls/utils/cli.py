"""Shared command-line plumbing for ``tools/*.py``: ``-c``/``-o`` parsing and error reporting."""

import argparse
import sys

from ppcls.utils.errors import UserError


# The -o keys ``--help`` lists, by tool; meanings and defaults come from the Global table
# (ppcls.utils.global_config.GLOBAL) and, for Arch, from ARCH_KEYS below.
TRAIN_KEYS = ("Global.epochs", "Global.device", "Global.pretrained_model", "Global.checkpoints",
              "Global.output_dir", "Global.save_interval", "Global.eval_during_train",
              "Global.eval_interval", "Global.print_batch_step", "Global.seed",
              "Global.max_iters_per_epoch", "Global.save_inference_dir", "Global.image_shape",
              "Arch.name", "Arch.class_num", "Arch.pretrained")
DEPLOY_KEYS = ("Global.infer_imgs", "Global.inference_model_dir", "Global.batch_size",
               "Global.use_gpu", "Global.use_onnx", "Global.enable_mkldnn",
               "Global.cpu_num_threads", "Global.benchmark")
ARCH_KEYS = {
    "name": ("(required)", "the model: MobileNeXt_x0_35, _x0_5, _x0_75, _x1_0, _x1_4 "
                           "(python -m ppcls models)"),
    "class_num": (1000, "number of classes; another than the weights' gets a fresh classifier"),
    "pretrained": (False, "True: PaddleClas's published weights (downloaded once), or a weight file"),
}


def _yaml_value(value):
    if value is None:
        return "null"
    return str(value)


def key_help(keys):
    """``--help``'s list of ``-o`` keys: name, default, meaning (one line each)."""
    from ppcls.utils.global_config import GLOBAL

    rows = []
    for dotted in keys:
        section, _, key = dotted.partition(".")
        if section == "Global" and key in GLOBAL:
            _, default, meaning = GLOBAL[key]
        elif section == "Arch" and key in ARCH_KEYS:
            default, meaning = ARCH_KEYS[key]
        else:
            continue
        rows.append(f"  {dotted:<28} {_yaml_value(default):<12} {meaning}")
    return ("common -o keys (key, default, meaning; a config's own value wins over the default;\n"
            "every Global key: python -m ppcls config --keys):\n" + "\n".join(rows))


def config_arg_parser(description, keys=TRAIN_KEYS):
    """An ``argparse`` parser with PaddleClas's ``-c config.yaml`` and repeated ``-o Key.sub=value``;
    ``--help`` lists ``keys`` with their defaults and meanings (:func:`key_help`)."""
    parser = argparse.ArgumentParser(description=description, epilog=key_help(keys) if keys else None,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-c", "--config", required=True, help="YAML config file")
    parser.add_argument("-o", "--override", action="append", default=[],
                        help="override a config value, e.g. -o Global.epochs=10 (repeatable)")
    parser.add_argument("-p", "--profiler_options", type=str, default=None,
                        help="PaddleClas's profiler string, e.g. 'batch_range=[10,20];state=All;"
                             "profile_path=model.profile' (training iterations; see "
                             "ppcls/utils/profiler.py)")
    return parser


def run_tool(main, argv=None):
    """Run ``main(argv)``; a ``UserError`` becomes one ``Error: ...`` line on stderr and exit code 2."""
    try:
        code = main(argv)
    except UserError as err:
        print(f"Error: {err}", file=sys.stderr, flush=True)
        sys.exit(2)
    except SystemError as err:  # paddle's SIGCHLD handler, raised anywhere, when a worker dies
        line = loader_worker_error(err)
        if line is None:
            raise
        print(f"Error: {line}", file=sys.stderr, flush=True)
        sys.exit(2)
    except KeyboardInterrupt:
        print("Interrupted.", file=sys.stderr)
        sys.exit(130)
    sys.exit(code or 0)


class Terminated(SystemExit):
    """SIGTERM arrived: the run stops here (exit code 143 = 128 + SIGTERM)."""


class _SigtermHandler:
    """The SIGTERM handler of the process ``owner`` (a forked worker dies as by default)."""

    def __init__(self, owner):
        self.owner = owner

    def __call__(self, signum, frame):
        import os
        import signal

        if os.getpid() != self.owner:  # a forked worker: die as by default
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGTERM)
            return
        print("Terminated (SIGTERM): stopping now; no partial checkpoint is written and the last "
              "complete one is kept (resume with Global.checkpoints=<output>/latest)",
              file=sys.stderr, flush=True)
        raise Terminated(143)


def handle_sigterm():
    """Make SIGTERM one line and exit code 143 instead of Paddle's fatal-error dump (call after
    ``import paddle``, which installs its own handler). A save in progress is abandoned before
    its commit point, so the previous checkpoint stays whole (see ``ppcls.engine.checkpoint``)."""
    import os
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return
    signal.signal(signal.SIGTERM, _SigtermHandler(os.getpid()))


def loader_worker_error(err):
    """The one line for Paddle's ``SystemError`` about a DataLoader worker process that died
    (or that the loader's watchdog stopped); None for any other ``SystemError``."""
    import re

    text = " ".join(str(err).split())
    if "DataLoader process" not in text and "Blocking queue is killed" not in text:
        return None
    from ppcls.utils.errors import LOADER_STALLS

    if LOADER_STALLS:
        return LOADER_STALLS[-1]
    found = re.search(r"DataLoader process \(pid (\d+)\) exited (?:is )?(.*?)\.? \(at ", text)
    how = f" (pid {found.group(1)}: {found.group(2)})" if found else ""
    return (f"a DataLoader worker process died{how}; out of memory? lower "
            "DataLoader.*.loader.num_workers or the batch size")
