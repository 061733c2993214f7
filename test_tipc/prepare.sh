#!/usr/bin/env bash
# TIPC preparation, with no download:
#
#   bash test_tipc/prepare.sh CONFIG MODE
#
# lite_train_lite_infer, lite_train_whole_infer: build dataset/ILSVRC2012/ (train/, val/,
#     train_list.txt, val_list.txt) from scikit-learn's handwritten digits (real scans, 10
#     classes, labels 0-9), upscaled to ImageNet-like 256x256 RGB JPEGs; a small subset.
# whole_train_whole_infer: the same from all 1,797 digits, unless dataset/ILSVRC2012/ already
#     holds a data set that prepare.sh did not make (the real ImageNet): that one is used as is.
# whole_infer: the lite data set, plus the weights named by line 36 of CONFIG
#     (`pretrained_model_path`; for `pretrained_model_url` the URL's file name under
#     ./pretrained_model/, never downloaded; for `inference_dir`
#     ./pretrained_model/<model_name>_pretrained), made by a short local training run when that
#     file does not exist yet (an existing file, e.g. converted official weights, is kept).
# Whatever download lines a PaddleClas config implies, nothing is downloaded.
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=test_tipc/common_func.sh
source "${ROOT}/test_tipc/common_func.sh"

if [[ $# -ne 2 ]]; then
    tipc_die "usage: bash test_tipc/prepare.sh CONFIG MODE; MODE is one of: ${TIPC_MODES}"
fi
tipc_open "$1" "$2"
tipc_header 1 train_params
tipc_get model_name 2 model_name
tipc_get python 3 python
python="$(tipc_python "${python}")" || exit 2
tipc_get device_value 5 "*Global.device" device_key
tipc_get output_value 8 "*output_dir" output_key
tipc_get batch_value 9 "*batch_size" batch_key
tipc_get epoch_value 7 "*epochs" epoch_key
tipc_get train_param_value1 13 "*" train_param_key1
tipc_get norm_train 16 norm_train
tipc_get line36_value 36 "${TIPC_LINE36}" line36_key
pretrained_model_path="$(tipc_weights_path "${line36_key}" "${line36_value}" "${model_name}")"

DATA_DIR="dataset/ILSVRC2012"
MARKER=".tipc_digits"

# build_data SUBSET: (re)build dataset/ILSVRC2012 from the digits unless it already is that subset.
build_data() {
    local subset="$1"
    # generated folders (ours, or tools/prepare_quickstart_data.py's) may be replaced
    if [[ -e "${DATA_DIR}" && ! -f "${DATA_DIR}/${MARKER}" && ! -f "${DATA_DIR}/.quickstart_digits.json" ]]; then
        if [[ "${subset}" == "whole" ]]; then
            echo "${DATA_DIR} exists and was not made by prepare.sh: using it as the whole data set."
            return 0
        fi
        tipc_die "${DATA_DIR} exists and was not made by prepare.sh (real ImageNet?); move it away before preparing ${MODE}, it is never overwritten"
    fi
    if [[ -f "${DATA_DIR}/${MARKER}" && "$(cat "${DATA_DIR}/${MARKER}")" == "${subset}" ]]; then
        echo "${DATA_DIR}: the '${subset}' digits set is already there."
        return 0
    fi
    "${python}" test_tipc/make_digits_ilsvrc.py --out "${DATA_DIR}" --subset "${subset}" --marker "${MARKER}" \
        || tipc_die "could not build ${DATA_DIR} (see the message above)"
}

case "${MODE}" in
    lite_train_lite_infer) build_data lite ;;
    lite_train_whole_infer) build_data lite_whole_infer ;;
    whole_train_whole_infer) build_data whole ;;
    whole_infer)
        build_data lite
        weights="${pretrained_model_path%.pdparams}.pdparams"
        if [[ -f "${weights}" ]]; then
            echo "${weights} exists: kept (it is what whole_infer exports)."
            exit 0
        fi
        if [[ "${line36_key}" == "pretrained_model_url" && "${line36_value}" != "null" ]]; then
            echo "Note: nothing is downloaded; to use the published weights put ${line36_value} at ${weights}"
        fi
        # a short local training run on the lite set stands in for the published weights
        if tipc_has_gpu "${python}"; then device="${device_value}"; else device="$(tipc_device "${device_value}" 0)"; fi
        mkdir -p "${ROOT}/test_tipc/output"
        work_dir="$(mktemp -d "${ROOT}/test_tipc/output/weights_run.XXXXXX")"
        # the lite_train_lite_infer schedule
        batch="$(tipc_mode_value "${batch_value}" lite_train_lite_infer)"
        epochs="$(tipc_mode_value "${epoch_value}" lite_train_lite_infer)"
        param1="$(tipc_mode_value "${train_param_value1}" lite_train_lite_infer)"
        cmd="${python} ${norm_train} $(tipc_param "${device_key}" "${device}") $(tipc_param "${epoch_key}" "${epochs}") $(tipc_param "${batch_key}" "${batch}") $(tipc_param "${train_param_key1}" "${param1}") $(tipc_param "${output_key}" "${work_dir}")"
        echo "Making ${weights} by a short training run: ${cmd}"
        if ! eval "${cmd}" > "${work_dir}/train.log" 2>&1; then
            tail -n 5 "${work_dir}/train.log" >&2
            tipc_die "the training run for ${weights} failed; its log: ${work_dir}/train.log"
        fi
        trained="${work_dir}/${model_name}/latest.pdparams"
        [[ -f "${trained}" ]] || tipc_die "the training run did not write ${trained} (is model_name '${model_name}' the recipe's Arch.name?)"
        mkdir -p "$(dirname "${weights}")"
        cp "${trained}" "${weights}.tmp.$$" && mv -f "${weights}.tmp.$$" "${weights}" \
            || tipc_die "could not write ${weights}"
        rm -rf "${work_dir}"
        echo "Wrote ${weights}"
        ;;
esac
exit 0
