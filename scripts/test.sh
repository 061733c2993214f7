#!/usr/bin/env bash
# The test command: install what the tests need, then run the unit tests and the TIPC lite mode.
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install -q -r requirements.txt -r requirements-test.txt
python -m pip install -q --no-deps -e .
python -m pytest tests -q -p no:cacheprovider "$@"
