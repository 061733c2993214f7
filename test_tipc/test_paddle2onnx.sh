#!/usr/bin/env bash
# TIPC paddle2onnx chain: export (Paddle files) -> paddle2onnx command line -> predict_cls.py on
# ONNX Runtime, as PaddleClas's test_tipc/test_paddle2onnx.sh with its *_paddle2onnx_*.txt.
#
#   bash test_tipc/test_paddle2onnx.sh CONFIG [MODE]
#
# The model comes from tools/export_model.py (no download): the weights at
# ./pretrained_model/<model_name>_pretrained.pdparams when present (prepare.sh's whole_infer makes
# them), random weights otherwise (a pipeline check). Each step appends `Run successfully ...` or
# `Run failed ...` to test_tipc/output/MODEL/paddle2onnx/results_paddle2onnx.log. Exit code 0 when
# every step succeeded, 1 when one failed, 2 for a usage or config error.
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=test_tipc/common_func.sh
source "${ROOT}/test_tipc/common_func.sh"

if [[ $# -lt 1 || $# -gt 2 ]]; then
    tipc_die "usage: bash test_tipc/test_paddle2onnx.sh CONFIG [MODE]"
fi
tipc_open "$1" "${2:-lite_train_lite_infer}"

tipc_header 1 paddle2onnx_params
tipc_get model_name 2 model_name
tipc_get python 3 python
tipc_get p2o 4 2onnx
tipc_get model_dir 5 "--model_dir" model_dir_key
tipc_get model_filename 6 "--model_filename" model_filename_key
tipc_get params_filename 7 "--params_filename" params_filename_key
tipc_get save_file 8 "--save_file" save_file_key
tipc_get opset 9 "--opset_version" opset_key
tipc_get checker 10 "--enable_onnx_checker" checker_key
tipc_get model_url 11 inference_model_url
tipc_get inference_py 12 inference
tipc_get use_onnx 13 "*use_onnx" use_onnx_key
tipc_get infer_model_dir 14 "*inference_model_dir" infer_model_dir_key
tipc_get use_gpu 15 "*use_gpu" use_gpu_key
tipc_get deploy_config 16 "-c" deploy_config_key
p2o="${p2o# }"
[[ "${model_url}" == "null" ]] || tipc_die "${TIPC_CONFIG}: inference_model_url must be null (nothing is downloaded here); the model is exported locally"

LOG_PATH="./test_tipc/output/${model_name}/paddle2onnx"
rm -rf "${LOG_PATH}"
mkdir -p "${LOG_PATH}" || exit 2
RESULTS="${ROOT}/${LOG_PATH#./}/results_paddle2onnx.log"
: > "${RESULTS}"
TIPC_FAILED=0

step() {  # step LOG CMD: run CMD (from the current folder) into LOG, record the result line
    local log="$1" cmd="$2" code
    eval "${cmd} > \"${log}\" 2>&1"
    code=$?
    tipc_status "${code}" "${cmd} > ${log} 2>&1" "${model_name}" "${RESULTS}"
    [[ "${code}" -eq 0 ]] || tail -n 5 "${log}" | sed 's/^/    /'
    return "${code}"
}

weights="./pretrained_model/${model_name}_pretrained"
weights_opt=""
[[ -f "${weights}.pdparams" ]] && weights_opt="-o Global.pretrained_model=${weights}"
recipe="ppcls/configs/ImageNet/MobileNeXt/${model_name}.yaml"
[[ -f "${recipe}" ]] || tipc_die "no recipe for ${model_name}: ${recipe}"
# 1. the Paddle export (no inference.onnx: the paddle2onnx command line makes it, as upstream)
step "${LOG_PATH}/export.log" "${python} tools/export_model.py -c ${recipe} ${weights_opt} -o Global.save_inference_dir=${model_dir%/} -o Global.export_onnx=False"
# 2. paddle2onnx, with the options of the config (optimize_tool None: no run-time installs)
step "${LOG_PATH}/paddle2onnx.log" "${p2o} ${model_dir_key}=${model_dir} ${model_filename_key}=${model_filename} ${params_filename_key}=${params_filename} ${save_file_key}=${save_file} ${opset_key}=${opset} ${checker_key}=${checker} --optimize_tool None"
# 3. predict_cls.py on ONNX Runtime, from deploy/ as upstream
images="../dataset/ILSVRC2012/val"
[[ -d "dataset/ILSVRC2012/val" ]] || images="./images/"
pushd deploy > /dev/null || exit 2
step "../${LOG_PATH#./}/python_infer_onnx.log" "${python} ${inference_py} ${deploy_config_key} ${deploy_config} -o ${use_onnx_key}=${use_onnx} -o ${infer_model_dir_key}=${infer_model_dir} -o ${use_gpu_key}=${use_gpu} -o Global.infer_imgs=${images} -o Global.cpu_num_threads=2"
popd > /dev/null || exit 2
if ! grep -q "predicting with onnxruntime on cpu" "${LOG_PATH}/python_infer_onnx.log"; then
    tipc_status 1 "check: the prediction ran on ONNX Runtime (${LOG_PATH}/python_infer_onnx.log)" "${model_name}" "${RESULTS}"
fi
echo "TIPC paddle2onnx ${model_name}: results in ${LOG_PATH}/results_paddle2onnx.log"
[[ "${TIPC_FAILED}" -eq 0 ]]
