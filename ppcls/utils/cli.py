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
    except KeyboardInterrupt:
        print("Interrupted.", file=sys.stderr)
        sys.exit(130)
    sys.exit(code or 0)
