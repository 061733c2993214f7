"""Shared command-line plumbing for ``tools/*.py``: ``-c``/``-o`` parsing and error reporting."""

import argparse
import sys

from ppcls.utils.errors import UserError


def config_arg_parser(description):
    """An ``argparse`` parser with PaddleClas's ``-c config.yaml`` and repeated ``-o Key.sub=value``."""
    parser = argparse.ArgumentParser(description=description)
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


def _on_sigterm(signum, frame, owner=[None]):  # noqa: B006 (the pid that installed it)
    import os
    import signal

    if owner[0] is not None and os.getpid() != owner[0]:  # a forked worker: die as by default
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
    _on_sigterm.__defaults__[0][0] = os.getpid()
    signal.signal(signal.SIGTERM, _on_sigterm)


def loader_worker_error(err):
    """The one line for Paddle's ``SystemError`` about a DataLoader worker process that died
    (or that the loader's watchdog stopped); None for any other ``SystemError``."""
    import re

    text = " ".join(str(err).split())
    if "DataLoader process" not in text and "Blocking queue is killed" not in text:
        return None
    loader = sys.modules.get("ppcls.data.loader")
    stalled = getattr(loader, "STALLED", None)
    if stalled:
        return stalled[-1]
    found = re.search(r"DataLoader process \(pid (\d+)\) exited (?:is )?(.*?)\.? \(at ", text)
    how = f" (pid {found.group(1)}: {found.group(2)})" if found else ""
    return (f"a DataLoader worker process died{how}; out of memory? lower "
            "DataLoader.*.loader.num_workers or the batch size")
