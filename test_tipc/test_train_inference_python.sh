#!/usr/bin/env bash
# TIPC: train -> eval -> export -> Paddle Inference (predict_cls.py) over the option combinations.
#
#   bash test_tipc/test_train_inference_python.sh CONFIG MODE [GPU_LIST]
#
# MODE: lite_train_lite_infer | lite_train_whole_infer | whole_train_whole_infer | whole_infer.
# GPU_LIST, when given, replaces the config's gpu_list (e.g. -1, 0, 0,1 or -1|0,1).
# Every step appends `Run successfully with command - MODEL - CMD!` or
# `Run failed with command - MODEL - CMD!` to test_tipc/output/MODEL/MODE/results_python.log
# ($TIPC_OUTPUT/MODEL/MODE/ when the environment variable TIPC_OUTPUT names another folder);
# each step's own output goes to a log beside it (named in CMD). Exit code: 0 when every step
# succeeded, 1 when any failed, 2 for a usage or config error. TIPC_DRY_RUN=1 checks the config
# and lists the steps (each recorded as successful) without running them.
# PaddleClas's own txt files run unchanged: trailing blanks are ignored, line 36 may be
# pretrained_model_path / pretrained_model_url / inference_dir, `python:python3.7` falls back to
# the current python and `Global.device:gpu` to the CPU when there is no such interpreter or GPU
# (each with a note), `gpu_list` entries run on the CPU without a GPU.
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=test_tipc/common_func.sh
source "${ROOT}/test_tipc/common_func.sh"

if [[ $# -lt 2 || $# -gt 3 ]]; then
    tipc_die "usage: bash test_tipc/test_train_inference_python.sh CONFIG MODE [GPU_LIST]; MODE is one of: ${TIPC_MODES}"
fi
tipc_open "$1" "$2"

# ---- train_params -------------------------------------------------------------------------
tipc_header 1 train_params
tipc_get model_name 2 model_name
tipc_get python 3 python
python="$(tipc_python "${python}")" || exit 2
tipc_get gpu_list 4 gpu_list
tipc_get device_value 5 "*Global.device" device_key
tipc_get autocast_list 6 "*auto_cast" autocast_key
tipc_get epoch_value 7 "*epochs" epoch_key
tipc_get output_value 8 "*output_dir" output_key
tipc_get batch_value 9 "*batch_size" batch_key
tipc_get train_pretrain_value 10 "*pretrained_model" train_pretrain_key
tipc_get train_model_name 11 train_model_name
tipc_get train_infer_img_dir 12 train_infer_img_dir
tipc_get train_param_value1 13 "*" train_param_key1
tipc_get trainer_list 15 trainer
tipc_get norm_train 16 norm_train
tipc_get pact_train 17 pact_train
tipc_get fpgm_train 18 fpgm_train
tipc_get distill_train 19 distill_train
tipc_get trainer_value1 20 "*" trainer_key1
tipc_get trainer_value2 21 "*" trainer_key2
# ---- eval_params --------------------------------------------------------------------------
tipc_header 23 eval_params
tipc_get eval_py 24 eval
tipc_get eval_value1 25 "*" eval_key1
# ---- infer_params -------------------------------------------------------------------------
tipc_header 27 infer_params
tipc_get save_infer_value 28 "*save_inference_dir" save_infer_key
tipc_get export_weight_value 29 "*pretrained_model" export_weight_key
tipc_get norm_export 30 norm_export
tipc_get line36_value 36 "${TIPC_LINE36}" line36_key
pretrained_model_path="$(tipc_weights_path "${line36_key}" "${line36_value}" "${model_name}")"
tipc_get infer_model 37 infer_model
tipc_get infer_export 38 infer_export
tipc_get infer_quant 39 infer_quant
tipc_get inference_py 40 inference
tipc_get use_gpu_list 41 "*use_gpu" use_gpu_key
tipc_get use_mkldnn_list 42 "*enable_mkldnn" use_mkldnn_key
tipc_get cpu_threads_list 43 "*cpu_num_threads" cpu_threads_key
tipc_get infer_batch_list 44 "*batch_size" infer_batch_key
tipc_get use_trt_list 45 "*use_tensorrt" use_trt_key
tipc_get use_fp16_list 46 "*use_fp16" use_fp16_key
tipc_get infer_model_dir_value 47 "*inference_model_dir" infer_model_dir_key
tipc_get infer_imgs_value 48 "*infer_imgs" infer_imgs_key
tipc_get save_log_value 49 "*save_log_path" save_log_key
tipc_get benchmark_value 50 "*benchmark" benchmark_key
tipc_get infer_value1 51 "*" infer_key1

for unsupported in pact_train fpgm_train distill_train; do
    if [[ "${!unsupported}" != "null" ]]; then
        tipc_die "${TIPC_CONFIG}: ${unsupported} is not supported by this repository; set it to null"
    fi
done
if [[ $# -eq 3 ]]; then
    gpu_list="$3"
fi

LOG_PATH="${TIPC_OUTPUT:-./test_tipc/output}/${model_name}/${MODE}"  # TIPC_OUTPUT: another root
rm -rf "${LOG_PATH}"  # each run starts afresh: its logs and outputs only
mkdir -p "${LOG_PATH}" || exit 2
RESULTS="$(cd "${LOG_PATH}" && pwd)/results_python.log"  # absolute: inference runs in deploy/
: > "${RESULTS}"
TIPC_FAILED=0

if tipc_has_gpu "${python}"; then
    HAS_GPU=1
else
    HAS_GPU=0
fi
# Global.device:gpu on a machine without a GPU: the CPU, with a note (once)
device_value="$(tipc_device "${device_value}" "${HAS_GPU}")"

# root-relative path -> the same path seen from deploy/ (predict_cls.py runs there, as upstream)
from_deploy() {
    case "$1" in
        /*) printf '%s' "$1" ;;
        ./*) printf '../%s' "${1#./}" ;;
        *) printf '../%s' "$1" ;;
    esac
}

join_params() {
    local out="" p
    for p in "$@"; do
        [[ -n "${p}" ]] && out="${out} ${p}"
    done
    printf '%s' "${out# }"
}

# run_step LOG COMMAND...: run COMMAND with its output in LOG and record the result line.
run_step() {
    local log="$1" cmd="$2" code=0
    if [[ "${TIPC_DRY_RUN:-0}" == "1" ]]; then
        : > "${log}"  # TIPC_DRY_RUN=1: parse the config and print the steps, run nothing
    else
        eval "${cmd} > \"${log}\" 2>&1"
        code=$?
    fi
    tipc_status "${code}" "${cmd} > ${log} 2>&1" "${model_name}" "${RESULTS}"
    if [[ "${code}" -ne 0 ]]; then
        echo "  last lines of ${log}:"
        tail -n 5 "${log}" | sed 's/^/    /'
    fi
    return "${code}"
}

# run_inference MODEL_DIR(root-relative) IMAGES(deploy-relative) TAG
run_inference() {
    local model_dir images tag="$3" use_gpu mkldnn threads bs trt fp16 log cmd
    model_dir="$(from_deploy "$1")"
    images="$2"
    local common_params
    common_params="$(join_params \
        "$(tipc_param "${infer_model_dir_key}" "${model_dir}")" \
        "$(tipc_param "${infer_imgs_key}" "${images}")" \
        "$(tipc_param "${benchmark_key}" "${benchmark_value}")" \
        "$(tipc_param "${infer_key1}" "${infer_value1}")")"
    pushd deploy > /dev/null || return 1
    local IFS='|'
    for use_gpu in ${use_gpu_list}; do
        if [[ "${use_gpu}" == "True" || "${use_gpu}" == "gpu" ]]; then
            if [[ "${HAS_GPU}" -eq 0 ]]; then
                echo "Skipped (no GPU on this machine): inference with ${use_gpu_key}=${use_gpu}"
                continue
            fi
            for trt in ${use_trt_list}; do
                for fp16 in ${use_fp16_list}; do
                    # fp16 needs TensorRT in Paddle Inference's GPU path, as upstream TIPC assumes
                    if [[ "${fp16}" == "True" && "${trt}" != "True" ]]; then
                        continue
                    fi
                    for bs in ${infer_batch_list}; do
                        log="$(from_deploy "${LOG_PATH}")/python_infer_gpu_${tag}_usetrt_${trt}_usefp16_${fp16}_batchsize_${bs}.log"
                        cmd="$(join_params "${python}" "${inference_py}" \
                            "$(tipc_param "${use_gpu_key}" "${use_gpu}")" \
                            "$(tipc_param "${use_trt_key}" "${trt}")" \
                            "$(tipc_param "${use_fp16_key}" "${fp16}")" \
                            "$(tipc_param "${infer_batch_key}" "${bs}")" \
                            "$(tipc_param "${save_log_key}" "${save_log_value}")" \
                            "${common_params}")"
                        run_step "${log}" "${cmd}"
                    done
                done
            done
        else
            for mkldnn in ${use_mkldnn_list}; do
                for threads in ${cpu_threads_list}; do
                    for bs in ${infer_batch_list}; do
                        log="$(from_deploy "${LOG_PATH}")/python_infer_cpu_${tag}_usemkldnn_${mkldnn}_threads_${threads}_batchsize_${bs}.log"
                        cmd="$(join_params "${python}" "${inference_py}" \
                            "$(tipc_param "${use_gpu_key}" "${use_gpu}")" \
                            "$(tipc_param "${use_mkldnn_key}" "${mkldnn}")" \
                            "$(tipc_param "${cpu_threads_key}" "${threads}")" \
                            "$(tipc_param "${infer_batch_key}" "${bs}")" \
                            "$(tipc_param "${use_trt_key}" "False")" \
                            "$(tipc_param "${use_fp16_key}" "False")" \
                            "$(tipc_param "${save_log_key}" "${save_log_value}")" \
                            "${common_params}")"
                        run_step "${log}" "${cmd}"
                    done
                done
            done
        fi
    done
    popd > /dev/null || return 1
}

# device for one gpu_list entry: -1 -> cpu; GPU ids -> the config's device, or cpu without a GPU
device_for() {
    local gpu="$1"
    if [[ "${gpu}" == "-1" || "${HAS_GPU}" -eq 0 ]]; then
        printf 'cpu'
    else
        printf '%s' "${device_value}"
    fi
}

echo "TIPC ${model_name} ${MODE}: results in ${LOG_PATH}/results_python.log (GPUs visible: $([[ ${HAS_GPU} -eq 1 ]] && echo yes || echo no))"

if [[ "${MODE}" == "whole_infer" ]]; then
    # no training: export the weights named by pretrained_model_path (prepare.sh made them), then infer
    device="$(device_for "${gpu_list%%|*}")"
    set_device="$(tipc_param "${device_key}" "${device}")"
    if [[ "${infer_export}" == "True" ]]; then
        infer_dir="${LOG_PATH}/inference"
        rm -rf "${infer_dir}"
        cmd="$(join_params "${python}" "${norm_export}" \
            "$(tipc_param "${export_weight_key}" "${pretrained_model_path}")" \
            "$(tipc_param "${save_infer_key}" "${infer_dir}")" "${set_device}")"
        run_step "${LOG_PATH}/export_whole_infer.log" "${cmd}"
    else
        [[ "${infer_model}" != "null" ]] || tipc_die "${TIPC_CONFIG}: infer_export is not True, so infer_model must name an inference model directory"
        infer_dir="${infer_model}"
    fi
    run_inference "${infer_dir}" "${infer_imgs_value}" "whole_infer"
else
    epoch="$(tipc_mode_value "${epoch_value}" "${MODE}")"
    batch_size="$(tipc_mode_value "${batch_value}" "${MODE}")"
    train_param1="$(tipc_mode_value "${train_param_value1}" "${MODE}")"
    IFS='|' read -r -a gpus <<< "${gpu_list}"
    IFS='|' read -r -a trainers <<< "${trainer_list}"
    IFS='|' read -r -a autocasts <<< "${autocast_list}"
    for gpu in "${gpus[@]}"; do
        device="$(device_for "${gpu}")"
        if [[ "${gpu}" != "-1" && "${HAS_GPU}" -eq 0 ]]; then
            echo "Note: no GPU visible: gpu_list entry '${gpu}' runs on the CPU"
        fi
        IFS=',' read -r -a gpu_ids <<< "${gpu}"
        nproc="${#gpu_ids[@]}"
        env_prefix=""
        if [[ "${device}" != "cpu" && "${nproc}" -eq 1 ]]; then
            env_prefix="CUDA_VISIBLE_DEVICES=${gpu}"
        fi
        for autocast in "${autocasts[@]}"; do
            if [[ "${autocast}" != "null" && "${device}" == "cpu" ]]; then
                echo "Skipped (mixed precision needs a GPU): training with ${autocast_key}=${autocast} on gpus ${gpu}"
                continue
            fi
            for trainer in "${trainers[@]}"; do
                case "${trainer}" in
                    norm_train) run_train="${norm_train}" ;;
                    *) tipc_die "${TIPC_CONFIG}: trainer '${trainer}' is not supported (only norm_train)" ;;
                esac
                tag="${trainer}_gpus_${gpu}_autocast_${autocast}"
                save_log="${LOG_PATH}/${tag}"
                rm -rf "${save_log}"
                mkdir -p "${save_log}"
                set_device="$(tipc_param "${device_key}" "${device}")"
                set_amp=""
                case "${autocast}" in
                    null) ;;
                    amp|O1) set_amp="-o AMP.use_amp=True -o AMP.level=O1" ;;
                    fp16|O2) set_amp="-o AMP.use_amp=True -o AMP.level=O2" ;;
                    *) tipc_die "${TIPC_CONFIG}: ${autocast_key} value '${autocast}' is not one of null, amp, O1, fp16, O2" ;;
                esac
                train_params="$(join_params "${set_device}" "${set_amp}" \
                    "$(tipc_param "${epoch_key}" "${epoch}")" \
                    "$(tipc_param "${output_key}" "${save_log}")" \
                    "$(tipc_param "${batch_key}" "${batch_size}")" \
                    "$(tipc_param "${train_pretrain_key}" "${train_pretrain_value}")" \
                    "$(tipc_param "${train_param_key1}" "${train_param1}")")"
                if [[ "${nproc}" -le 1 ]]; then
                    launcher="${python}"
                elif [[ "${device}" == "cpu" ]]; then
                    launcher="${python} -m paddle.distributed.launch --nproc_per_node ${nproc} --log_dir ${save_log}/launch_log"
                else
                    launcher="${python} -m paddle.distributed.launch --gpus ${gpu} --log_dir ${save_log}/launch_log"
                fi
                cmd="$(join_params "${env_prefix}" "${launcher}" "${run_train}" "${train_params}")"
                run_step "${LOG_PATH}/train_${tag}.log" "${cmd}"

                checkpoint="${save_log}/${model_name}/${train_model_name}"
                # eval (single process, the way users evaluate a checkpoint)
                cmd="$(join_params "${env_prefix}" "${python}" "${eval_py}" \
                    "$(tipc_param "${train_pretrain_key}" "${checkpoint}")" "${set_device}" \
                    "$(tipc_param "${eval_key1}" "${eval_value1}")")"
                run_step "${LOG_PATH}/eval_${tag}.log" "${cmd}"

                # export
                infer_dir="${save_log}/inference"
                cmd="$(join_params "${env_prefix}" "${python}" "${norm_export}" \
                    "$(tipc_param "${export_weight_key}" "${checkpoint}")" \
                    "$(tipc_param "${save_infer_key}" "${infer_dir}")" "${set_device}")"
                run_step "${LOG_PATH}/export_${tag}.log" "${cmd}"

                # inference over the option combinations
                run_inference "${infer_dir}" "$(from_deploy "${train_infer_img_dir}")" "gpus_${gpu}"
            done
        done
    done
fi

total="$(grep -c '' "${RESULTS}")"
if [[ "${total}" -eq 0 ]]; then
    echo "No step was run (every combination was skipped); see the messages above."
    exit 1
fi
if [[ "${TIPC_FAILED}" -gt 0 ]]; then
    echo "TIPC ${model_name} ${MODE}: ${TIPC_FAILED} of ${total} steps failed (${LOG_PATH}/results_python.log)"
    exit 1
fi
echo "TIPC ${model_name} ${MODE}: all ${total} steps succeeded (${LOG_PATH}/results_python.log)"
exit 0
