#!/usr/bin/env bash
# TIPC PTQ chain: export -> INT8 post-training quantization (deploy/slim/quant_post_static.py)
# -> predict_cls.py over the CPU option grid, as PaddleClas's test_tipc/test_ptq_inference_python.sh
# with its *_train_ptq_infer_python.txt.
#
#   bash test_tipc/test_ptq_inference_python.sh CONFIG MODE
#
# Nothing is downloaded: the fp32 model is exported from the weights the config names
# (prepare.sh's whole_infer makes ./pretrained_model/<model>_pretrained.pdparams; without them the
# export has random weights: a pipeline check) and calibrated on dataset/ILSVRC2012/train_list.txt
# (prepare.sh). The INT8 model lands in <infer_model>/quant_post_static_model/ (PaddleClas's
# layout). Results: test_tipc/output/MODEL/ptq/MODE/results_python.log. Exit code 0 when every
# step succeeded, 1 when one failed, 2 for a usage or config error.
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=test_tipc/common_func.sh
source "${ROOT}/test_tipc/common_func.sh"

if [[ $# -ne 2 ]]; then
    tipc_die "usage: bash test_tipc/test_ptq_inference_python.sh CONFIG MODE; MODE is one of: ${TIPC_MODES}"
fi
tipc_open "$1" "$2"

tipc_header 1 train_params
tipc_get model_name 2 model_name
tipc_get python 3 python
tipc_header 27 infer_params
tipc_get export_weight_value 29 "*pretrained_model" export_weight_key
tipc_get norm_export 30 norm_export
tipc_get kl_quant 34 kl_quant
tipc_get model_url 36 pretrained_model_url
tipc_get infer_model 37 infer_model
tipc_get inference_py 40 inference
tipc_get use_gpu_list 41 "*use_gpu" use_gpu_key
tipc_get use_mkldnn_list 42 "*enable_mkldnn" use_mkldnn_key
tipc_get cpu_threads_list 43 "*cpu_num_threads" cpu_threads_key
tipc_get infer_batch_list 44 "*batch_size" infer_batch_key
tipc_get infer_model_dir_value 47 "*inference_model_dir" infer_model_dir_key
tipc_get infer_imgs_value 48 "*infer_imgs" infer_imgs_key
tipc_get benchmark_value 50 "*benchmark" benchmark_key
tipc_get calib_value 51 "*calib_images" calib_key
[[ "${model_url}" == "null" ]] || tipc_die "${TIPC_CONFIG}: pretrained_model_url must be null (nothing is downloaded here)"
[[ "${kl_quant}" != "null" ]] || tipc_die "${TIPC_CONFIG}: kl_quant (line 34) names the quantization command"
calib_value="$(tipc_mode_value "${calib_value}" "${MODE}")"

LOG_PATH="./test_tipc/output/${model_name}/ptq/${MODE}"
rm -rf "${LOG_PATH}"
mkdir -p "${LOG_PATH}" || exit 2
RESULTS="${ROOT}/${LOG_PATH#./}/results_python.log"
: > "${RESULTS}"
TIPC_FAILED=0

step() {  # step LOG CMD: run CMD into LOG, record the result line
    local log="$1" cmd="$2" code
    eval "${cmd} > \"${log}\" 2>&1"
    code=$?
    tipc_status "${code}" "${cmd} > ${log} 2>&1" "${model_name}" "${RESULTS}"
    [[ "${code}" -eq 0 ]] || tail -n 5 "${log}" | sed 's/^/    /'
    return "${code}"
}

infer_dir="${LOG_PATH}/${infer_model#./}"
infer_dir="${infer_dir%/}"
weights_param=""
if [[ -f "${export_weight_value}.pdparams" ]]; then
    weights_param="$(tipc_param "${export_weight_key}" "${export_weight_value}")"
else
    echo "no ${export_weight_value}.pdparams (bash test_tipc/prepare.sh CONFIG whole_infer makes it): exporting random weights"
fi
# 1. the fp32 export, 2. its INT8 model (the export's quant_post_static_model/ folder)
step "${LOG_PATH}/export.log" "${python} ${norm_export} ${weights_param} -o Global.save_inference_dir=${infer_dir} -o Global.export_onnx=False" || exit 1
step "${LOG_PATH}/quant_post_static.log" "${python} ${kl_quant} -o Global.save_inference_dir=${infer_dir} $(tipc_param "${calib_key}" "${calib_value}")" || exit 1
quant_dir="${infer_dir}/quant_post_static_model"

# 3. predict_cls.py from deploy/ over the CPU grid; the log must say it ran INT8
pushd deploy > /dev/null || exit 2
IFS='|'
for threads in ${cpu_threads_list}; do
    for bs in ${infer_batch_list}; do
        log="../${LOG_PATH#./}/python_infer_cpu_int8_threads_${threads}_batchsize_${bs}.log"
        cmd="${python} ${inference_py} $(tipc_param "${use_gpu_key}" "${use_gpu_list%%|*}") $(tipc_param "${use_mkldnn_key}" "${use_mkldnn_list%%|*}") $(tipc_param "${cpu_threads_key}" "${threads}") $(tipc_param "${infer_batch_key}" "${bs}") $(tipc_param "${infer_model_dir_key}" "../${quant_dir#./}") $(tipc_param "${infer_imgs_key}" "${infer_imgs_value}") $(tipc_param "${benchmark_key}" "${benchmark_value}")"
        if step "${log}" "${cmd}" && ! grep -q "predicting with onnxruntime on cpu, int8" "${log}"; then
            tipc_status 1 "check: ${log} ran the INT8 model" "${model_name}" "${RESULTS}"
        fi
    done
done
unset IFS
popd > /dev/null || exit 2
echo "TIPC PTQ ${model_name} ${MODE}: results in ${LOG_PATH}/results_python.log"
[[ "${TIPC_FAILED}" -eq 0 ]]
