#!/usr/bin/env bash
# The test command: install what the tests need, then run the unit tests and the TIPC lite mode.
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install -q -r requirements.txt -r requirements-test.txt
python -m pip install -q --no-deps -e .
python -m pytest tests -q -p no:cacheprovider "$@"
# TIPC lite_train_lite_infer on CPU (test_tipc/README.md) with the seed's own TIPC file,
# unchanged (../shared/fixtures; tests/tools/test_tipc.py runs upstream develop's); TIPC=0 skips it.
if [[ "${TIPC:-1}" != "0" ]]; then
    tipc_config=../shared/fixtures/paddleclas/seed/MobileNeXt_100_train_infer_python.txt
    bash test_tipc/prepare.sh "${tipc_config}" lite_train_lite_infer
    bash test_tipc/test_train_inference_python.sh "${tipc_config}" lite_train_lite_infer
fi
# the deployment chains, lite mode, on the same data (test_tipc/README.md); TIPC=0 skips them
if [[ "${TIPC:-1}" != "0" ]]; then bash test_tipc/test_ptq_inference_python.sh test_tipc/configs/MobileNeXt/MobileNeXt_100_train_ptq_infer_python.txt lite_train_lite_infer; fi
if [[ "${TIPC:-1}" != "0" ]]; then bash test_tipc/test_paddle2onnx.sh test_tipc/configs/MobileNeXt/MobileNeXt_100_linux_cpu_normal_normal_paddle2onnx_python_linux_cpu.txt lite_train_lite_infer; fi
