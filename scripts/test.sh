#!/usr/bin/env bash
# The test command: install what the tests need, then run the unit tests and the TIPC lite mode.
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install -q -r requirements.txt -r requirements-test.txt
python -m pip install -q --no-deps -e .
python -m pytest tests -q -p no:cacheprovider "$@"
# TIPC lite_train_lite_infer on CPU (test_tipc/README.md); TIPC=0 skips it.
if [[ "${TIPC:-1}" != "0" ]]; then
    tipc_config=test_tipc/configs/MobileNeXt/MobileNeXt_100_train_infer_python.txt
    bash test_tipc/prepare.sh "${tipc_config}" lite_train_lite_infer
    bash test_tipc/test_train_inference_python.sh "${tipc_config}" lite_train_lite_infer
fi
